"""Model builders, one file each, registered in ``MODELS``: ``build(cfg, tokenizer) -> model``.

Builders return a transformers causal LM with its own rotary module; the rotary patch comes later.
"""
from clex.registry import Registry

MODELS = Registry("model", "clex.models")


def build_model(cfg, tokenizer):
    return MODELS.get(cfg.name)(cfg, tokenizer)


def build_tokenizer(cfg):
    """The model's own tokenizer when it has one (``model.path``), else bytes."""
    from clex.data import ByteTokenizer, PretrainedTokenizer

    return PretrainedTokenizer(cfg.path) if cfg.get("path") else ByteTokenizer()
