import math

import torch

from clex.errors import ConfigError
from clex.rope.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("longrope")
class LongRope(Strategy):
    """LongRoPE (Phi-3): per-dimension rescale factors, inv_freq_j = b^(-2j/d) / f_j, with f =
    short_factor for inputs within L0 (t <= 1) and long_factor beyond. Attention factor: given, or
    sqrt(1 + ln(factor) / ln L0) for factor = (longest context) / L0 > 1, else 1. The factors come from
    the config or a checkpoint's ``rope_parameters``."""

    def __init__(
        self,
        *args,
        short_factor: list | None = None,
        long_factor: list | None = None,
        attention_factor: float | None = None,
        eval_scale: str = "dynamic",
        **kwargs,
    ):
        super().__init__(*args, eval_scale=eval_scale, **kwargs)
        half = self.rotary_dim // 2
        for name, values in (("short_factor", short_factor), ("long_factor", long_factor)):
            if values is None or len(values) != half or not all(v > 0 for v in values):
                raise ConfigError(f"strategy.{name} must be {half} positive numbers (rotary_dim / 2), got {values!r}")
        self.register_buffer("short", torch.tensor(short_factor, dtype=torch.float32), persistent=False)
        self.register_buffer("long", torch.tensor(long_factor, dtype=torch.float32), persistent=False)
        self.fixed_attention = None if attention_factor is None else float(attention_factor)

    def inv_freq(self, t: float):
        return self.base_inv_freq / (self.long if t > 1 else self.short)

    def attention_factor(self, t: float) -> float:
        if self.fixed_attention is not None:
            return self.fixed_attention
        return math.sqrt(1 + math.log(self.factor) / math.log(self.original_length)) if self.factor > 1 else 1.0
