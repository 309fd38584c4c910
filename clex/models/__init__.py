"""Model builders, one file each, registered in ``MODELS``: ``build(cfg, tokenizer) -> model``.

Builders return a transformers causal LM with its own rotary module; the rotary patch comes later.
"""

from clex.registry import Registry

MODELS = Registry("model", "clex.models")


def build_model(cfg, tokenizer):
    return MODELS.get(cfg.name)(cfg, tokenizer)


def build_tokenizer(cfg, corpus=None):
    """The model's own tokenizer when it has one (``model.path``); else ``data.tokenizer``: bytes, or a
    byte-level BPE trained on the corpus's train split (cached under out_dir/.tokenizers)."""
    from pathlib import Path

    from clex.data import ByteTokenizer, PretrainedTokenizer
    from clex.data.bpe import bpe_tokenizer

    if cfg.model.name == "hf":
        return PretrainedTokenizer(checkpoint_dir(cfg.model))
    if cfg.data.get("tokenizer", "byte") == "bpe":
        return bpe_tokenizer(corpus, int(cfg.data.vocab_size), Path(cfg.out_dir) / ".tokenizers")
    return ByteTokenizer()


def checkpoint_dir(cfg) -> str:
    """``model.path`` when it is a local directory; we never reach for a hub."""
    from pathlib import Path

    from clex.registry import ConfigError

    if not cfg.get("path") or not Path(cfg.path).is_dir():
        raise ConfigError(f"model.path: {cfg.get('path')!r} is not a directory with a transformers checkpoint")
    return str(cfg.path)
