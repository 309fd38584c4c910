from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("pi")
class PositionInterpolation(Strategy):
    """Position Interpolation (Chen et al. 2023): inv_freq_j = b^(-2j/d) / t, i.e. positions p / t."""

    needs_factor = True

    def inv_freq(self, t: float):
        return self.base_inv_freq / t
