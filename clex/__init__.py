"""clex: RoPE context-window extension (CLEX, PI, FBS/NTK, YaRN) for transformers models.

The names below load on first use, so ``clex.stats`` and ``clex.analysis`` (used by analysis/) import
without torch or transformers."""

import importlib

_EXPORTS = {
    "ConfigError": "clex.registry",
    "ScaledRotaryEmbedding": "clex.rotary",
    "patch_model": "clex.rotary",
    "rotary_module": "clex.rotary",
    "rotary_settings": "clex.rotary",
    "is_patched": "clex.rotary",
    "load_pretrained": "clex.pretrained",
    "save_pretrained": "clex.pretrained",
    "Strategy": "clex.strategies",
    "STRATEGIES": "clex.strategies",
    "build_strategy": "clex.strategies",
    "strategy_names": "clex.strategies",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clex' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
