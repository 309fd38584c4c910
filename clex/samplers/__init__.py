"""Scale samplers (t per training step) and position samplers (the L positions for that t).

Every draw goes through the ``torch.Generator`` passed in, so a seeded run repeats exactly.
"""

from clex.registry import Registry

SCALE_SAMPLERS = Registry("scale sampler", "clex.samplers")
POSITION_SAMPLERS = Registry("position sampler", "clex.samplers")

__all__ = ["SCALE_SAMPLERS", "POSITION_SAMPLERS"]
