"""Scale samplers (t per training step) and position samplers (the L positions for that t).

Every draw goes through the ``torch.Generator`` passed in, so a seeded run repeats exactly.
"""

import inspect

from clex.errors import ConfigError
from clex.registry import Registry

SCALE_SAMPLERS = Registry("scale sampler", "clex.rope.samplers")
POSITION_SAMPLERS = Registry("position sampler", "clex.rope.samplers")

__all__ = ["SCALE_SAMPLERS", "POSITION_SAMPLERS", "build_scale_sampler"]


def build_scale_sampler(name: str, max_scale: float, options: dict | None = None):
    """The scale sampler ``name`` over [low, max_scale]; an option it does not take is one ConfigError line."""
    cls = SCALE_SAMPLERS.get(name)
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "max_scale"}
    unknown = set(options or {}) - allowed
    if unknown:
        raise ConfigError(
            f"sampler.scale_options: unknown option(s) {', '.join(sorted(unknown))} for scale sampler {name!r}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    return cls(max_scale, **(options or {}))
