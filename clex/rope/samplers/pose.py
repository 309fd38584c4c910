import torch

from clex.rope.samplers import POSITION_SAMPLERS


@POSITION_SAMPLERS.register("pose")
class PoSE:
    """PoSE-style skipped positions (Zhu et al. 2023): the L tokens in two contiguous chunks split at a
    random point, the second shifted by a random gap so the largest distance spans up to t L0 - 1.
    Unlike ``window`` (a shift RoPE cannot see: only relative positions enter q.k), this shows the
    model relative distances up to t L0 while keeping local order inside each chunk."""

    def __call__(self, length: int, scale: float, original_length: int, generator: torch.Generator):
        positions = torch.arange(length, dtype=torch.float32)
        room = max(int(scale * original_length) - length, 0)
        if room == 0 or length < 2:
            return positions
        split = int(torch.randint(1, length, (), generator=generator))
        gap = int(torch.randint(0, room + 1, (), generator=generator))
        positions[split:] += gap
        return positions
