from pathlib import Path

from clex.models import MODELS
from clex.registry import ConfigError


@MODELS.register("hf")
def pretrained(cfg, tokenizer):
    """A local transformers checkpoint directory (``model.path``); no hub access is attempted."""
    from transformers import AutoModelForCausalLM

    if not cfg.get("path") or not Path(cfg.path).is_dir():
        raise ConfigError(f"model.path: {cfg.get('path')!r} is not a directory with a transformers checkpoint")
    model = AutoModelForCausalLM.from_pretrained(cfg.path, local_files_only=True, attn_implementation="sdpa")
    if cfg.get("original_length"):
        model.config.max_position_embeddings = int(cfg.original_length)
    return model
