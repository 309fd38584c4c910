"""Scale samplers: draw the length scale factor t in [1, t_max] for one training step."""

import math

import torch

from clex.samplers import SCALE_SAMPLERS


class ScaleSampler:
    def __init__(self, max_scale: float):
        self.max_scale = float(max_scale)

    def _uniform(self, generator: torch.Generator) -> float:
        return float(torch.rand((), generator=generator))


@SCALE_SAMPLERS.register("uniform-int")
class UniformInt(ScaleSampler):
    """The official sampler: t uniform over the integers {1, ..., floor(t_max)}."""

    def __call__(self, generator: torch.Generator) -> float:
        return float(torch.randint(1, int(self.max_scale) + 1, (), generator=generator))


@SCALE_SAMPLERS.register("uniform-continuous")
class UniformContinuous(ScaleSampler):
    """t uniform on [1, t_max]."""

    def __call__(self, generator: torch.Generator) -> float:
        return 1 + (self.max_scale - 1) * self._uniform(generator)


@SCALE_SAMPLERS.register("log-uniform")
class LogUniform(ScaleSampler):
    """log t uniform on [0, log t_max]: as many draws in [1, 2] as in [4, 8]."""

    def __call__(self, generator: torch.Generator) -> float:
        return math.exp(math.log(self.max_scale) * self._uniform(generator))


@SCALE_SAMPLERS.register("fixed")
class Fixed(ScaleSampler):
    """Always t_max (or ``value``): CLEX trained at one scale, like a static strategy."""

    def __init__(self, max_scale: float, value: float | None = None):
        super().__init__(max_scale)
        self.value = float(value) if value is not None else self.max_scale

    def __call__(self, generator: torch.Generator) -> float:
        return self.value
