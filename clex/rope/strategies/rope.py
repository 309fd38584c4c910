from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("rope")
class Rope(Strategy):
    """Plain RoPE, no scaling: inv_freq_j = b^(-2j/d) for every t."""

    def inv_freq(self, t: float):
        return self.base_inv_freq
