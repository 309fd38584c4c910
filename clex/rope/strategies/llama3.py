import math

import torch

from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("llama3")
class Llama3(Strategy):
    """Llama 3.1's frequency-dependent scaling: with wavelength w_j = 2 pi / inv_freq_j, low-frequency
    dimensions (w_j > L0 / low_freq_factor) get inv_freq_j / t, high-frequency ones (w_j < L0 /
    high_freq_factor) keep inv_freq_j, and between them the mix (1 - s_j) inv_freq_j / t + s_j inv_freq_j
    with s_j = (L0 / w_j - low_freq_factor) / (high_freq_factor - low_freq_factor)."""

    needs_factor = True

    def __init__(self, *args, low_freq_factor: float = 1.0, high_freq_factor: float = 4.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not high_freq_factor > low_freq_factor > 0:
            from clex.errors import ConfigError

            raise ConfigError(
                f"strategy.high_freq_factor must exceed strategy.low_freq_factor > 0, got "
                f"{high_freq_factor}, {low_freq_factor}"
            )
        self.low_freq_factor, self.high_freq_factor = float(low_freq_factor), float(high_freq_factor)

    def inv_freq(self, t: float):
        inv_freq, L0 = self.base_inv_freq, self.original_length
        wavelength = 2 * math.pi / inv_freq
        smooth = (L0 / wavelength - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
        mixed = (1 - smooth) * inv_freq / t + smooth * inv_freq
        scaled = torch.where(wavelength > L0 / self.low_freq_factor, inv_freq / t, inv_freq)
        medium = (wavelength >= L0 / self.high_freq_factor) & (wavelength <= L0 / self.low_freq_factor)
        return torch.where(medium, mixed, scaled)
