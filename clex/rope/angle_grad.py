"""One backward into the rotation angles, instead of autograd's into cos and sin, in every attention layer.

Training CLEX (or any strategy with trained frequencies) back-propagates through cos and sin in every
layer: autograd multiplies the incoming gradient by q, rotate_half(q), k and rotate_half(k) and reduces
each product over batch and heads. For y = x cos(f) + rotate_half(x) sin(f), with x = [x1, x2] and
cos = m cos([f, f]), sin = m sin([f, f]) for a constant m (the attention factor),

    dy1/df = -y2,   dy2/df = y1,   so   dL/df = sum over batch and heads of (g2 * y1 - g1 * y2)

for q and k together: half the products, one reduction, and only the outputs saved (which attention
saves anyway) instead of q, k and their rotations; the gradient into q and k is autograd's, product
for product and rounding for rounding. ``ScaledRotaryEmbedding`` marks the cos it returns with its
angles f while autograd records; the model family's ``apply_rotary_pos_emb`` is wrapped to take this
path for a marked cos and to call the original otherwise. Under ``trainer=fsdp`` every layer receives
fresh copies of its inputs, without the mark: there autograd's path runs. transformers has no per-model hook
for that function (only the optional ``kernels`` package swaps it), so the wrapper replaces the module
global, once per model family, after checking on a random input that the family's function computes
the rotation above (the first ``rotary_dim`` channels, rotate_half layout); where it does not, nothing
is wrapped and autograd's path, exact but slower, stays.
"""

import functools
import sys

import torch

from clex.errors import warn

ANGLES = "rotary_angles"  # the attribute of a cos tensor that holds its angles f [.., T, rotary_dim / 2]
Q, K, ANGLE = 1, 2, 5  # positions of q, k and the angles among _AngleRotary.forward's inputs


def mark(cos: torch.Tensor, angles: torch.Tensor):
    """Attach the angles to cos while autograd records (training), whether or not they carry a gradient:
    the path's backward into q and k is also cheaper than autograd's, and every strategy should pay
    the same for it, so that step-time ratios measure the frequencies alone."""
    if torch.is_grad_enabled():
        setattr(cos, ANGLES, angles)


class _AngleRotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, apply, q, k, cos, sin, angles, unsqueeze_dim):
        q_embed, k_embed = apply(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)
        ctx.unsqueeze_dim = unsqueeze_dim
        ctx.angles_shape, ctx.angles_dtype = angles.shape, angles.dtype
        ctx.input_dtypes = q.dtype, k.dtype
        ctx.save_for_backward(q_embed, k_embed, cos, sin)
        return q_embed, k_embed

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        q_embed, k_embed, cos, sin = ctx.saved_tensors
        dim, half = ctx.unsqueeze_dim, cos.shape[-1] // 2
        cos, sin = cos.unsqueeze(dim), sin.unsqueeze(dim)
        needs = ctx.needs_input_grad
        grads = [None] * len(needs)
        if needs[Q]:
            grads[Q] = _rotate_back(grad_q, cos, sin, ctx.input_dtypes[0])
        if needs[K]:
            grads[K] = _rotate_back(grad_k, cos, sin, ctx.input_dtypes[1])
        if needs[ANGLE]:
            # in place on fresh tensors, q and k into one product where they have the same heads (no
            # GQA): each pass over these tensors costs about as much as the arithmetic
            terms = []
            for grad, out in ((grad_q, q_embed), (grad_k, k_embed)):
                g1, g2, y1, y2 = (
                    grad[..., :half],
                    grad[..., half : 2 * half],
                    out[..., :half],
                    out[..., half : 2 * half],
                )
                if terms and terms[-1].shape == y1.shape:
                    terms[-1].addcmul_(g2, y1)
                else:
                    terms.append(g2 * y1)
                terms[-1].addcmul_(g1, y2, value=-1)
            accumulate = torch.promote_types(ctx.angles_dtype, torch.float32)
            grads[ANGLE] = sum(term.sum(dim, dtype=accumulate) for term in terms).sum_to_size(ctx.angles_shape)
        return tuple(grads)


def _rotate_back(grad, cos, sin, dtype):
    """The gradient of x cos + rotate_half(x) sin with respect to x: rotate_half's transpose takes
    [a, b] to [b, -a]; channels past the rotated ones pass through. Autograd's products, each rounded
    to x's dtype before the sum as autograd rounds them (bf16 q under a float32 cos), so with fixed
    frequencies training is bit for bit what it was through autograd."""
    half = cos.shape[-1] // 2
    by_cos, by_sin = grad[..., : 2 * half] * cos, grad[..., : 2 * half] * sin
    rotated = by_cos.to(dtype) + torch.cat((by_sin[..., half:], -by_sin[..., :half]), -1).to(dtype)
    return torch.cat((rotated, grad[..., 2 * half :].to(dtype)), -1) if grad.shape[-1] > 2 * half else rotated


def _wrap(apply):
    @functools.wraps(apply)
    def apply_rotary_pos_emb(*args, **kwargs):
        angles = getattr(args[2], ANGLES, None) if len(args) == 4 else None
        if angles is None or set(kwargs) - {"unsqueeze_dim"} or not torch.is_grad_enabled():
            return apply(*args, **kwargs)  # any other call (another signature, evaluation) as it was
        q, k, cos, sin = args
        return _AngleRotary.apply(apply, q, k, cos.detach(), sin.detach(), angles, kwargs.get("unsqueeze_dim", 1))

    apply_rotary_pos_emb.clex_original = apply
    return apply_rotary_pos_emb


def _computes_the_rotation(apply) -> bool:
    """Whether ``apply`` rotates the first 2 * half channels in rotate_half layout and passes the rest,
    on a random float64 input: all channels rotated, then all but two (a family that rotates whole
    heads only may refuse the second, as it would in its own model)."""
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 5, 8, generator=generator, dtype=torch.float64) for _ in range(2))
    for half, partial in ((4, False), (3, True)):
        angles = torch.randn(2, 5, half, generator=generator, dtype=torch.float64)
        emb = torch.cat((angles, angles), -1)
        try:
            q_embed, k_embed = apply(q, k, emb.cos(), emb.sin(), unsqueeze_dim=1)
        except Exception:
            return partial

        def expected(x, half=half, angles=angles):
            x1, x2 = x[..., :half], x[..., half : 2 * half]
            cos, sin = angles.cos()[:, None], angles.sin()[:, None]
            return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., 2 * half :]), -1)

        if not (torch.allclose(q_embed, expected(q)) and torch.allclose(k_embed, expected(k))):
            return False
    return True


def install(model) -> bool:
    """Wrap ``apply_rotary_pos_emb`` of the model's family (its modeling module); True when wrapped."""
    module = sys.modules.get(type(model).__module__)
    apply = getattr(module, "apply_rotary_pos_emb", None)
    if apply is not None and hasattr(apply, "clex_original"):
        return True
    if apply is None or not _computes_the_rotation(apply):
        warn(
            f"{type(model).__name__}: its apply_rotary_pos_emb is not the rotation clex/rope/angle_grad.py "
            "speeds up; training back-propagates through cos and sin (exact, slower)",
            once=True,
        )
        return False
    module.apply_rotary_pos_emb = _wrap(apply)
    return True
