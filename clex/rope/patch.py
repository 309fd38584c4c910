"""The rotary patch: a drop-in for transformers' rotary module that takes its frequencies from a strategy."""

import math
from contextlib import contextmanager

import torch
from torch import nn

from clex.errors import ConfigError
from clex.rope import angle_grad as rotary_grad
from clex.rope.starting import STARTING_ROPES, original_length

# attribute path of the rotary module inside each supported model family
ROTARY_PATHS = ("model.rotary_emb", "gpt_neox.rotary_emb")


class ScaledRotaryEmbedding(nn.Module):
    """``forward(x, position_ids) -> (cos, sin)`` of shape [B, T, rotary_dim], like transformers'.

    Evaluation and generation: t = strategy.scale_for_length(position_ids.max() + 1), so under a KV
    cache (one new position per call) t still follows the full length. Training: inside
    ``with rotary.training_scale(t, positions)`` the step's sampled t and positions replace the
    model's contiguous ones (the model itself keeps contiguous position_ids: transformers reads gaps
    in position_ids as packed sequences and would mask across them).

    ``log_scale``: the official ablation that multiplies queries by max(1, log(len) / log(L0)) (``log_scale_clamp``,
    the default) or by log(len) / log(L0) unclamped, below 1 under L0 (the official code); we scale cos and sin
    by its square root, which multiplies q.k by it on the rotary dimensions (every dimension of a fully rotary
    head, as the official code does). len counts the cached keys too. ``log_scale_train=False`` applies it at
    evaluation only (the official recipe: off in its training scripts, on in its evaluation); in training, len is
    the largest sampled position + 1.
    """

    def __init__(self, strategy, log_scale: bool = False, log_scale_clamp: bool = True, log_scale_train: bool = True):
        super().__init__()
        self.strategy = strategy
        self.log_scale = log_scale
        self.log_scale_clamp = log_scale_clamp
        self.log_scale_train = log_scale_train
        self._train = None  # (t, positions [T]) while inside training_scale
        self._length = None  # the full length while inside evaluation_length

    @contextmanager
    def training_scale(self, scale: float, positions: torch.Tensor):
        self._train = (float(scale), positions)
        try:
            yield
        finally:
            self._train = None

    @contextmanager
    def evaluation_length(self, length: int):
        """Fix t (and the log-scale length) to those of a ``length``-token input, e.g. while it is
        scored chunk by chunk through a KV cache, so every chunk uses the same frequencies."""
        self._length = int(length)
        try:
            yield
        finally:
            self._length = None

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        if self._train is not None:
            scale, positions = self._train
            # one row broadcast over the batch: the angles (and their gradient) are computed once, not B times
            positions = positions.to(x.device, torch.float32)[None]
            length = None  # only log_scale needs it: spare a device sync per step
        else:
            length = self._length or int(position_ids.max()) + 1
            scale = self.strategy.scale_for_length(length)
            positions = position_ids.float()
        inv_freq = self.strategy.inv_freq(scale)
        short = self.strategy.checkpoint_short  # a LongRoPE checkpoint: its short factors up to its original length
        if short is not None and scale == 1 and (length or float(positions.max()) + 1) <= short[1]:
            inv_freq = short[0]
        inv_freq = inv_freq.to(x.device)
        freqs = positions[..., None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        multiplier = self.strategy.attention_factor(scale) * self.strategy.base_attention
        if self.log_scale and (self._train is None or self.log_scale_train):
            length = length or float(positions.max()) + 1
            factor = math.log(length) / math.log(self.strategy.original_length)
            multiplier *= math.sqrt(max(1.0, factor) if self.log_scale_clamp else factor)
        cos, sin = (emb.cos() * multiplier).to(x.dtype), (emb.sin() * multiplier).to(x.dtype)
        if not torch.is_tensor(multiplier):  # the angle backward holds the attention factor constant
            rotary_grad.mark(cos, freqs)
        return cos, sin


def _locate(model):
    for path in ROTARY_PATHS:
        owner_path, attr = path.rsplit(".", 1)
        owner = model
        for part in owner_path.split("."):
            owner = getattr(owner, part, None)
            if owner is None:
                break
        if owner is not None and hasattr(owner, attr):
            return owner, attr
    raise ConfigError(
        f"cannot patch {type(model).__name__}: no rotary module at "
        f"{' or '.join(ROTARY_PATHS)} (supported: Llama-family and GPT-NeoX models)"
    )


def rotary_settings(model) -> dict:
    """rotary_dim, base and original_length (L0) read from a transformers model or its config. L0 is the
    context the checkpoint's rope covers (config.original_length): its pre-training length for plain RoPE,
    its extended length for a scaled rope it starts from (STARTING_ROPES)."""
    config = getattr(model, "config", model)
    rope = config.rope_parameters
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rotary_dim = int(head_dim * rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)))
    original = original_length(rope, config.max_position_embeddings)
    return {"rotary_dim": rotary_dim, "base": float(rope["rope_theta"]), "original_length": int(original)}


def checkpoint_rope(config) -> dict:
    """The frequencies and attention factor of a checkpoint's own rope, from transformers' functions
    (so t = 1 reproduces the checkpoint): ``Strategy.start_from``'s arguments."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = config.rope_parameters
    init = ROPE_INIT_FUNCTIONS[rope["rope_type"]]
    if rope["rope_type"] != "longrope":
        inv_freq, attention = init(config)
        return {"inv_freq": inv_freq, "attention_factor": attention}
    short_length = int(rope["original_max_position_embeddings"])
    long_freq, attention = init(config, seq_len=short_length + 1)
    return {"inv_freq": long_freq, "attention_factor": attention, "short": (init(config)[0], short_length)}


def patch_model(model, strategy, log_scale: bool = False, log_scale_clamp: bool = True, log_scale_train: bool = True):
    """Replace the rotary module of a transformers causal LM in place; returns the model."""
    owner, attr = _locate(model)
    current = getattr(owner, attr)
    rope_type = (getattr(model.config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type not in ("default", *STARTING_ROPES):
        raise ConfigError(
            f"the model's rope type is {rope_type!r}: clex scales on from plain RoPE ('default') or "
            f"from {', '.join(STARTING_ROPES)}; starting from {rope_type!r} would change this "
            "checkpoint's logits inside its own context"
        )
    expected = getattr(current, "inv_freq", None)
    if isinstance(current, ScaledRotaryEmbedding):
        expected = current.strategy.base_inv_freq
    if expected is not None and expected.numel() != strategy.rotary_dim // 2:
        raise ConfigError(
            f"strategy rotary_dim {strategy.rotary_dim} does not match the model's {2 * expected.numel()}"
        )
    if rope_type != "default":
        strategy.start_from(**checkpoint_rope(model.config))
    device = next(model.parameters()).device
    setattr(owner, attr, ScaledRotaryEmbedding(strategy, log_scale, log_scale_clamp, log_scale_train).to(device))
    rotary_grad.install(model)
    return model


def is_patched(model) -> bool:
    """Whether ``patch_model`` has replaced the model's rotary module."""
    try:
        owner, attr = _locate(model)
    except ConfigError:
        return False
    return isinstance(getattr(owner, attr), ScaledRotaryEmbedding)


def rotary_module(model) -> ScaledRotaryEmbedding:
    owner, attr = _locate(model)
    module = getattr(owner, attr)
    if not isinstance(module, ScaledRotaryEmbedding):
        raise ConfigError(f"{type(model).__name__} is not patched: call clex.patch_model first")
    return module
