"""Scale samplers: draw the length scale factor t in [low, t_max] for one training step.

``low`` is the smallest t drawn (default 1). The official CLEX release draws t from {2 .. t_max}
(``low: 2``); its later code from {1 .. t_max} (the default). A draw is made per ``training_step``, so under
``accumulate_grad_batches=N`` each of the N micro-batches of one optimiser step gets its own t, as the
official training (one draw per forward, gradient accumulation 4) does.
"""

import math

import torch

from clex.errors import ConfigError
from clex.rope.samplers import SCALE_SAMPLERS


class ScaleSampler:
    def __init__(self, max_scale: float, low: float = 1.0):
        if not 1 <= low <= max_scale:
            raise ConfigError(f"sampler.scale_options.low must be in [1, t_max = {max_scale:g}], got {low!r}")
        self.max_scale = float(max_scale)
        self.low = float(low)

    def _uniform(self, generator: torch.Generator) -> float:
        return float(torch.rand((), generator=generator))


@SCALE_SAMPLERS.register("uniform-int")
class UniformInt(ScaleSampler):
    """The official sampler: t uniform over the integers {low, ..., floor(t_max)} (low = 1 by default; the
    first official release used 2)."""

    def __init__(self, max_scale: float, low: int = 1):
        super().__init__(max_scale, low)
        if low != int(low):
            raise ConfigError(f"sampler.scale_options.low must be an integer for uniform-int, got {low!r}")

    def __call__(self, generator: torch.Generator) -> float:
        return float(torch.randint(int(self.low), int(self.max_scale) + 1, (), generator=generator))


@SCALE_SAMPLERS.register("uniform-continuous")
class UniformContinuous(ScaleSampler):
    """t uniform on [low, t_max]."""

    def __call__(self, generator: torch.Generator) -> float:
        return self.low + (self.max_scale - self.low) * self._uniform(generator)


@SCALE_SAMPLERS.register("log-uniform")
class LogUniform(ScaleSampler):
    """log t uniform on [log low, log t_max]: as many draws in [1, 2] as in [4, 8]."""

    def __call__(self, generator: torch.Generator) -> float:
        return math.exp(math.log(self.low) + math.log(self.max_scale / self.low) * self._uniform(generator))


@SCALE_SAMPLERS.register("fixed")
class Fixed(ScaleSampler):
    """Always t_max (or ``value``): CLEX trained at one scale, like a static strategy."""

    def __init__(self, max_scale: float, value: float | None = None):
        super().__init__(max_scale)
        self.value = float(value) if value is not None else self.max_scale

    def __call__(self, generator: torch.Generator) -> float:
        return self.value
