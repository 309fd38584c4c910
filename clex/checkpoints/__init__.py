"""Checkpoints on disk: a config.json's rope and CLEX settings (config_json), our save/load format (pretrained)
and the released CLEX format (official)."""
