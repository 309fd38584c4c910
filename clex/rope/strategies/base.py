"""The scaling-strategy interface: t (the length scale factor) -> (inv_freq, attention factor)."""

import math

import torch
from torch import nn

from clex.errors import ConfigError
from clex.registry import Registry

STRATEGIES = Registry("strategy", "clex.rope.strategies")
EVAL_SCALES = ("static", "dynamic", "ceil")


def default_inv_freq(rotary_dim: int, base: float) -> torch.Tensor:
    """Plain RoPE: inv_freq_j = base^(-2j/d), j = 0 .. d/2-1 (float32)."""
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))


class Strategy(nn.Module):
    """Maps the length scale factor t >= 1 to an inverse-frequency vector and an attention factor.

    ``factor`` is the static t used at train and test; ``eval_scale`` picks how t follows the input
    length at evaluation: ``static`` (always ``factor``), ``dynamic`` (max(1, len / L0), as
    transformers' ``dynamic``), ``ceil`` (ceil(len / L0), CLEX's rule).
    """

    samples_scale = False  # True for strategies trained on sampled t (CLEX)
    needs_factor = False  # True where factor = 1 would silently be plain RoPE (pi, fbs, yarn)

    def __init__(
        self,
        rotary_dim: int,
        base: float,
        original_length: int,
        factor: float | None = None,
        eval_scale: str = "static",
    ):
        super().__init__()
        if rotary_dim < 2 or rotary_dim % 2:
            raise ConfigError(f"rotary_dim must be an even integer >= 2, got {rotary_dim}")
        if factor is None:
            if self.needs_factor and eval_scale == "static":
                raise ConfigError(
                    f"strategy {self.name!r} needs factor= (the static scale t, e.g. factor=4 for 4 x L0) "
                    "or eval_scale='dynamic' / 'ceil' (t from the input length)"
                )
            factor = 1.0
        if not factor >= 1:
            raise ConfigError(f"strategy.factor must be >= 1, got {factor}")
        if eval_scale not in EVAL_SCALES:
            raise ConfigError(f"strategy.eval_scale must be one of {', '.join(EVAL_SCALES)}, got {eval_scale!r}")
        if original_length < 1:
            raise ConfigError(f"original_length must be a positive integer, got {original_length}")
        self.rotary_dim = int(rotary_dim)
        self.base = float(base)
        self.original_length = int(original_length)
        self.factor = float(factor)
        self.eval_scale = eval_scale
        self.register_buffer("base_inv_freq", default_inv_freq(rotary_dim, base), persistent=False)
        self.base_attention = 1.0  # the attention factor of the rope this strategy starts from
        self.checkpoint_short = (
            None  # LongRoPE checkpoints: (short-factor inv_freq, length up to which it applies at t = 1)
        )

    def start_from(self, inv_freq: torch.Tensor, attention_factor: float = 1.0, short=None):
        """Scale on from a checkpoint's own rope (linear, llama3, yarn, longrope) instead of plain RoPE: its
        frequencies become the base this strategy scales (t = 1 is the checkpoint as it is) and its
        attention factor multiplies the strategy's. ``short``: LongRoPE's (short-factor inv_freq, original
        length), the checkpoint's frequencies for inputs up to that length."""
        if inv_freq.shape != self.base_inv_freq.shape:
            raise ConfigError(
                f"the checkpoint's rope has {inv_freq.numel()} frequencies, the strategy {self.base_inv_freq.numel()}"
            )
        self.base_inv_freq = inv_freq.float().to(self.base_inv_freq.device)
        self.base_attention = float(attention_factor)
        self.checkpoint_short = (
            None if short is None else (short[0].float().to(self.base_inv_freq.device), int(short[1]))
        )

    def _apply(self, fn, recurse=True):
        # parameters and buffers keep their float32 values whatever the model's precision (a bf16
        # inv_freq puts a phase error on far positions that grows with the position): of a cast,
        # only the device move applies; casting to bf16 and back would round the values
        def keep_float32(x):
            y = fn(x)
            return y if not x.is_floating_point() or y.dtype == x.dtype else x.to(y.device)

        return super()._apply(keep_float32, recurse)

    def inv_freq(self, t: float) -> torch.Tensor:
        raise NotImplementedError

    def attention_factor(self, t: float) -> float:
        return 1.0

    def scale_for_length(self, seq_len: int) -> float:
        """The t used for an input whose largest position is seq_len - 1."""
        if self.eval_scale == "static":
            return self.factor
        ratio = seq_len / self.original_length
        return max(1.0, float(math.ceil(ratio)) if self.eval_scale == "ceil" else ratio)

    def extra_repr(self) -> str:
        return f"rotary_dim={self.rotary_dim}, base={self.base:g}, original_length={self.original_length}"
