"""Position samplers: the L (float) positions a training sequence of L tokens is given at scale t.

``original_length`` is L0, the model's pre-training length.
"""

import torch

from clex.rope.samplers import POSITION_SAMPLERS


@POSITION_SAMPLERS.register("extrapolated-random")
class ExtrapolatedRandom:
    """The official "position extrapolation": positions 0, a sorted random subset of L-2 values of
    {1 .. t L - 2}, and t L - 1, all divided by s = max(L / L0, 1), so the L tokens spread over
    [0, t L0). At t = 1 these are simply 0 .. L-1 (divided by s). The official code divides by
    max(L // L0, 1), the same when L is a multiple of L0 and past t L0 otherwise."""

    def __call__(self, length: int, scale: float, original_length: int, generator: torch.Generator):
        stride = max(length / original_length, 1.0)
        span = int(round(scale * length))
        middle = torch.randperm(span - 2, generator=generator)[: length - 2] + 1
        positions = torch.cat([torch.zeros(1), middle.sort().values.float(), torch.tensor([span - 1.0])])
        return positions / stride


@POSITION_SAMPLERS.register("contiguous")
class Contiguous:
    """0 .. L-1 whatever t: the model only sees t through the frequencies."""

    def __call__(self, length: int, scale: float, original_length: int, generator: torch.Generator):
        return torch.arange(length, dtype=torch.float32)


@POSITION_SAMPLERS.register("interpolated")
class Interpolated:
    """p * t * L0 / L for p = 0 .. L-1: evenly spread over [0, t L0)."""

    def __call__(self, length: int, scale: float, original_length: int, generator: torch.Generator):
        return torch.arange(length, dtype=torch.float32) * (scale * original_length / length)


@POSITION_SAMPLERS.register("window")
class Window:
    """L contiguous positions at a random integer offset in [0, t L0 - L]. RoPE's q.k depends on
    relative positions only, so for RoPE models this equals ``contiguous`` up to float rounding; ``pose``
    is the sampler that shows far distances while keeping local order."""

    def __call__(self, length: int, scale: float, original_length: int, generator: torch.Generator):
        room = max(int(scale * original_length) - length, 0)
        offset = int(torch.randint(0, room + 1, (), generator=generator))
        return torch.arange(length, dtype=torch.float32) + offset
