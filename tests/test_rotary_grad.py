"""The angle backward (clex/rope/angle_grad.py) against autograd through the family's own apply_rotary_pos_emb."""

import sys
import types

import pytest
import torch
from conftest import tiny_llama

import clex
from clex.rope import angle_grad as rotary_grad


def loss_and_grads(model, ids, scale, positions):
    model.zero_grad()
    with clex.rotary_module(model).training_scale(scale, positions):
        loss = model(ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def wrapped_and_original(model, ids, scale, positions, monkeypatch):
    """(loss, gradients) through the wrapped function, then through the family's original."""
    module = sys.modules[type(model).__module__]
    wrapped = module.apply_rotary_pos_emb
    assert wrapped.clex_original is not None
    fused = loss_and_grads(model, ids, scale, positions)
    monkeypatch.setattr(module, "apply_rotary_pos_emb", wrapped.clex_original)
    return fused, loss_and_grads(model, ids, scale, positions)


@pytest.mark.parametrize("name", ["clex", "rope"])
def test_the_angle_backward_matches_autograd_through_the_original_function(family, name, monkeypatch):
    """Llama with grouped-query heads, GPT-NeoX rotating half of each head; every weight's gradient,
    the ODE's included, and a loss that is bit for bit the original's."""
    model = family().train()
    strategy = clex.build_strategy(
        name, **clex.rotary_settings(model), **({"max_scale": 4.0} if name == "clex" else {})
    )
    if name == "clex":
        torch.nn.init.normal_(strategy.down.weight, std=0.1)  # a learned term, so the ODE weights get a gradient
    clex.patch_model(model, strategy)
    ids = torch.randint(0, 97, (3, 40), generator=torch.Generator().manual_seed(1))
    positions = torch.arange(40, dtype=torch.float32) * 1.5  # position extrapolation's gaps
    scale = 3.0 if name == "clex" else 1.0
    (fused_loss, fused), (loss, reference) = wrapped_and_original(model, ids, scale, positions, monkeypatch)
    assert torch.equal(fused_loss, loss)
    assert fused.keys() == reference.keys()
    if name == "clex":
        assert max(grad.abs().max() for key, grad in reference.items() if key.endswith("strategy.down.weight")) > 0
    for key in reference:
        if name == "rope":  # fixed frequencies: the same products and sums as autograd's, bit for bit
            assert torch.equal(fused[key], reference[key]), key
        else:
            torch.testing.assert_close(fused[key], reference[key], rtol=1e-4, atol=1e-7, msg=key)


def test_the_angle_gradient_is_the_analytic_one():
    """dL/df for y = x cos f + rotate_half(x) sin f against torch.autograd.gradcheck: float64 angles
    accumulate in float64."""
    function = sys.modules[type(tiny_llama()).__module__].apply_rotary_pos_emb
    apply = rotary_grad._wrap(getattr(function, "clex_original", function))
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 5, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    k = torch.randn(2, 2, 5, 8, dtype=torch.float64, generator=generator, requires_grad=True)  # fewer key heads
    angles = torch.randn(1, 5, 4, dtype=torch.float64, generator=generator, requires_grad=True)

    def rotate(q, k, angles):
        emb = torch.cat((angles, angles), -1)
        cos = emb.cos() * 0.7  # an attention factor: a constant multiplier
        rotary_grad.mark(cos, angles)
        return apply(q, k, cos, emb.sin() * 0.7)

    assert torch.autograd.gradcheck(rotate, (q, k, angles))


def test_a_family_whose_function_rotates_otherwise_keeps_it(capsys):
    """An interleaved rotation (pairs 2i, 2i+1) is not the layout the backward assumes: nothing is wrapped."""

    def interleaved(q, k, cos, sin, unsqueeze_dim=1):
        def rotate(x):
            return torch.stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)

        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        return q * cos + rotate(q) * sin, k * cos + rotate(k) * sin

    family = types.ModuleType("interleaved_family")
    family.apply_rotary_pos_emb = interleaved
    model_class = type("InterleavedModel", (), {"__module__": "interleaved_family"})
    sys.modules["interleaved_family"] = family
    try:
        assert not rotary_grad.install(model_class())
        assert "back-propagates through cos and sin" in capsys.readouterr().err
        assert family.apply_rotary_pos_emb is interleaved
    finally:
        del sys.modules["interleaved_family"]


def test_cos_is_marked_only_while_autograd_records():
    model = clex.patch_model(tiny_llama(), clex.build_strategy("clex", **clex.rotary_settings(tiny_llama())))
    rotary = clex.rotary_module(model)
    x, position_ids = torch.zeros(1, 8, 4), torch.arange(8)[None]
    with torch.no_grad():
        cos, _ = rotary(x, position_ids)
    assert not hasattr(cos, rotary_grad.ANGLES)
    with rotary.training_scale(2.0, torch.arange(8, dtype=torch.float32)):
        cos, _ = rotary(x, position_ids)
    assert getattr(cos, rotary_grad.ANGLES).requires_grad


def test_under_bf16_autocast_fixed_frequencies_train_bit_for_bit(monkeypatch):
    """bf16 q and k against a float32 cos: autograd rounds each product to bf16 before the sum; so do we."""
    model = clex.patch_model(tiny_llama().train(), clex.build_strategy("rope", **clex.rotary_settings(tiny_llama())))
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (fused_loss, fused), (loss, reference) = wrapped_and_original(
            model, ids, 1.0, torch.arange(24, dtype=torch.float32), monkeypatch
        )
    assert torch.equal(fused_loss, loss)
    assert all(torch.equal(fused[key], reference[key]) for key in reference)


def test_other_signatures_reach_the_original_function():
    """A family whose function also takes q alone (k=None, cos and sin by keyword) is called as it was."""

    def apply(q, k=None, cos=None, sin=None, unsqueeze_dim=1):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        rotate = torch.cat((-q[..., 2:], q[..., :2]), -1) * sin
        return (
            (q * cos + rotate, None)
            if k is None
            else (q * cos + rotate, k * cos + torch.cat((-k[..., 2:], k[..., :2]), -1) * sin)
        )

    wrapped = rotary_grad._wrap(apply)
    q, angles = torch.randn(1, 2, 3, 4, requires_grad=True), torch.randn(1, 3, 2)
    emb = torch.cat((angles, angles), -1)
    cos = emb.cos()
    rotary_grad.mark(cos, angles)
    got, _ = wrapped(q, cos=cos, sin=emb.sin())
    torch.testing.assert_close(got, apply(q, cos=cos, sin=emb.sin())[0], rtol=0, atol=0)
