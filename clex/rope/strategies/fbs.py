import torch

from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("fbs")
class FrequencyBasisScaling(Strategy):
    """Frequency-basis scaling ("NTK-aware"): the base grows to b' = b * t^(d/(d-2)),
    inv_freq_j = b'^(-2j/d) = base_inv_freq_j * (t^(d/(d-2)))^(-2j/d), so the lowest frequency is divided
    by t and the highest is kept (written on base_inv_freq, so it scales a checkpoint's own rope too)."""

    needs_factor = True

    def inv_freq(self, t: float):
        d = self.rotary_dim
        exponent = torch.arange(0, d, 2, dtype=torch.float32, device=self.base_inv_freq.device) / d
        return self.base_inv_freq * (t ** (d / (d - 2))) ** -exponent
