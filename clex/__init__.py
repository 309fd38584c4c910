"""clex: RoPE context-window extension (CLEX, PI, FBS/NTK, YaRN) for transformers models.

The names below load on first use, so ``clex.analysis.stats`` and ``clex.analysis.tables`` (used by analysis/) import
without torch or transformers."""

import importlib

_EXPORTS = {
    "ConfigError": "clex.registry",
    "ScaledRotaryEmbedding": "clex.rope.patch",
    "patch_model": "clex.rope.patch",
    "rotary_module": "clex.rope.patch",
    "rotary_settings": "clex.rope.patch",
    "is_patched": "clex.rope.patch",
    "load_pretrained": "clex.checkpoints.pretrained",
    "save_pretrained": "clex.checkpoints.pretrained",
    "Strategy": "clex.rope.strategies",
    "STRATEGIES": "clex.rope.strategies",
    "build_strategy": "clex.rope.strategies",
    "strategy_names": "clex.rope.strategies",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clex' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
