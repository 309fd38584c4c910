"""Model builders, one file each, registered in ``MODELS``: ``build(cfg, tokenizer) -> model``.

Builders return a transformers causal LM with its own rotary module; the rotary patch comes later.
"""

from clex.registry import Registry

MODELS = Registry("model", "clex.models")


def build_model(cfg, tokenizer):
    return MODELS.get(cfg.name)(cfg, tokenizer)


def checkpoint_dir(cfg) -> str:
    """``model.path`` when it is a local directory; we never reach for a hub."""
    from pathlib import Path

    from clex.errors import ConfigError

    if not cfg.get("path") or not Path(cfg.path).is_dir():
        raise ConfigError(f"model.path: {cfg.get('path')!r} is not a directory with a transformers checkpoint")
    return str(cfg.path)
