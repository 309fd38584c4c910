from clex.errors import ConfigError
from clex.rope.strategies.base import STRATEGIES, Strategy, default_inv_freq


@STRATEGIES.register("abf")
class AdjustedBaseFrequency(Strategy):
    """Adjusted base frequency (Code Llama, Llama 3's long-context stage): plain RoPE with a larger
    base b', inv_freq_j = b'^(-2j/d), whatever t; the model is fine-tuned to the new base."""

    def __init__(self, *args, new_base: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if new_base is None or not new_base > 0:
            raise ConfigError(f"strategy abf needs new_base > 0 (e.g. new_base=500000), got {new_base!r}")
        self.new_base = float(new_base)
        self.register_buffer("adjusted_inv_freq", default_inv_freq(self.rotary_dim, self.new_base), persistent=False)

    def inv_freq(self, t: float):
        return self.adjusted_inv_freq

    def start_from(self, inv_freq, attention_factor=1.0, short=None):
        raise ConfigError(
            "strategy abf replaces the base of plain RoPE; this checkpoint's rope is not plain "
            "(rope_type != 'default'): use pi, fbs, yarn, llama3, longrope or clex, which scale on from it"
        )
