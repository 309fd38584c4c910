from clex.strategies.base import STRATEGIES, Strategy, default_inv_freq


@STRATEGIES.register("fbs")
class FrequencyBasisScaling(Strategy):
    """Frequency-basis scaling ("NTK-aware"): the base grows to b' = b * t^(d/(d-2)),
    inv_freq_j = b'^(-2j/d), so the lowest frequency is divided by t and the highest is kept."""

    needs_factor = True

    def inv_freq(self, t: float):
        d = self.rotary_dim
        return default_inv_freq(d, self.base * t ** (d / (d - 2))).to(self.base_inv_freq.device)
