"""Scaling strategies, one file each; ``STRATEGIES`` finds them by name, ``build_strategy`` makes one."""

import inspect

from clex.errors import ConfigError
from clex.rope.strategies.base import STRATEGIES, Strategy, default_inv_freq

__all__ = ["STRATEGIES", "Strategy", "build_strategy", "default_inv_freq", "strategy_names"]


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def _allowed_options(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if klass.__init__ is object.__init__ or "__init__" not in vars(klass):
            continue
        names |= {
            p.name
            for p in inspect.signature(klass.__init__).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }
    return names - {"self", "rotary_dim", "base", "original_length"}


def build_strategy(name: str, *, rotary_dim: int, base: float, original_length: int, **options) -> Strategy:
    """The strategy ``name`` (see ``strategy_names()``) for a rotary dimension, base and L0."""
    cls = STRATEGIES.get(name)
    unknown = set(options) - _allowed_options(cls)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for strategy {name!r}; "
            f"allowed: {', '.join(sorted(_allowed_options(cls)))}"
        )
    strategy = cls(rotary_dim=rotary_dim, base=base, original_length=original_length, **options)
    strategy.options = dict(options)  # what save_pretrained writes, to rebuild it
    return strategy
