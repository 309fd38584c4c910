import math

import torch

from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("yarn")
class Yarn(Strategy):
    """YaRN (Peng et al. 2023): per dimension, a ramp between PI and no scaling by wavelength.

    With r_j = L0 / (2 pi / inv_freq_j) rotations over the original context, dimensions with
    r_j > beta_fast keep inv_freq_j, those with r_j < beta_slow get inv_freq_j / t, and the ramp
    gamma_j = clamp((j - low) / (high - low), 0, 1) over the (floored/ceiled) correction range mixes
    them: inv_freq_j (1 - gamma_j) + (inv_freq_j / t) gamma_j. Attention factor 0.1 ln t + 1.
    """

    needs_factor = True

    def __init__(self, *args, beta_fast: float = 32.0, beta_slow: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta_fast = float(beta_fast)
        self.beta_slow = float(beta_slow)

    def _correction_dim(self, num_rotations: float) -> float:
        d, L0 = self.rotary_dim, self.original_length
        return d * math.log(L0 / (num_rotations * 2 * math.pi)) / (2 * math.log(self.base))

    def inv_freq(self, t: float):
        low = max(math.floor(self._correction_dim(self.beta_fast)), 0)
        high = min(math.ceil(self._correction_dim(self.beta_slow)), self.rotary_dim - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        j = torch.arange(self.rotary_dim // 2, dtype=torch.float32, device=self.base_inv_freq.device)
        to_interpolate = torch.clamp((j - low) / (high - low), 0, 1)
        return self.base_inv_freq * (1 - to_interpolate) + self.base_inv_freq / t * to_interpolate

    def attention_factor(self, t: float) -> float:
        return 0.1 * math.log(t) + 1.0 if t > 1 else 1.0
