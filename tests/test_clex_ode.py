"""CLEX's neural ODE against the formulas of docs/design.md section 3 and a high-accuracy solve."""

import math

import pytest
import torch
from torchdiffeq import odeint

import clex

D, BASE, L0 = 64, 1e4, 128


def make(**options):
    torch.manual_seed(0)
    return clex.build_strategy("clex", rotary_dim=D, base=BASE, original_length=L0, **options)


def randomise(strategy, scale=0.3):
    torch.manual_seed(1)
    with torch.no_grad():
        strategy.down.weight.normal_(0, scale / math.sqrt(strategy.width))


def log_ntk(t, d=D, base=BASE):
    """log of the NTK-aware basis at alpha = 2t - 1, straight from the formula."""
    alpha = 2 * t - 1
    j = torch.arange(d // 2, dtype=torch.float64)
    return -(2 * j / d) * math.log(base * alpha ** (d / (d - 2)))


def reference_solve(strategy, ts):
    """dopri5 at rtol = atol = 1e-9 in float64, in the original t coordinate (docs/design.md, section 3)."""
    up = strategy.up.weight.detach().double()
    down = strategy.down.weight.detach().double()
    act = {"tanh": torch.tanh, "silu": torch.nn.functional.silu}[strategy.activation]
    j = torch.arange(D // 2, dtype=torch.float64)

    def g(t, z):
        xi = -(2 * j / (D - 2)) * 2 / (2 * t - 1)
        return down @ act(up @ (z + log_ntk(t))) + xi

    z0 = log_ntk(torch.tensor(1.0, dtype=torch.float64))
    return odeint(g, z0, torch.tensor(ts, dtype=torch.float64), method="dopri5", rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("t", [1.0, 1.5, 2.0, 3.7, 8.0, 16.0, 32.0])
def test_initialisation_is_ntk_with_alpha_2t_minus_1(t):
    strategy = make(max_scale=32, beyond_max="extrapolate")
    with torch.no_grad():
        got = torch.log(strategy.inv_freq(t)).double()
    torch.testing.assert_close(got, log_ntk(torch.tensor(t, dtype=torch.float64)), rtol=0, atol=1e-5)
    # and it equals the fbs strategy at alpha = 2t - 1
    fbs = clex.build_strategy("fbs", rotary_dim=D, base=BASE, original_length=L0, factor=2 * t - 1)
    torch.testing.assert_close(strategy.inv_freq(t).detach(), fbs.inv_freq(2 * t - 1), rtol=1e-5, atol=0)


# silu's pre-activations are unbounded (|W_up (z + log ntk)| ~ 10), so the same weight scale drives
# it ~10x faster than tanh: a smaller scale gives dynamics of the same size (z moves by ~1 by t = 64)
@pytest.mark.parametrize(
    "options,scale",
    [
        ({}, 0.3),
        ({"activation": "silu"}, 0.03),
        ({"method": "dopri5", "rtol": 1e-8}, 0.3),
        ({"step_size": 0.5, "max_step_t": 0.5}, 0.3),
    ],
)
def test_solver_agrees_with_high_accuracy_reference(options, scale):
    strategy = make(max_scale=64, **options)
    randomise(strategy, scale)
    ts = [1.0, 2.0, 3.0, 5.5, 8.0, 16.0, 64.0]
    expected = reference_solve(strategy, ts)
    for t, z_ref in zip(ts, expected, strict=False):
        with torch.enable_grad():  # the training path: one solve from 1 to t
            z_train = torch.log(strategy.inv_freq(t)).detach().double()
        with torch.no_grad():  # the evaluation path (cached grid for integer t)
            z_eval = torch.log(strategy.inv_freq(t)).double()
        torch.testing.assert_close(z_train, z_ref, rtol=0, atol=1e-4)
        torch.testing.assert_close(z_eval, z_ref, rtol=0, atol=1e-4)


def test_random_weights_move_the_solution_away_from_ntk():
    strategy = make()
    randomise(strategy)
    with torch.no_grad():
        z = torch.log(strategy.inv_freq(8.0)).double()
    assert (z - log_ntk(torch.tensor(8.0, dtype=torch.float64))).abs().max() > 1e-2
    silu = make(activation="silu")
    randomise(silu, 0.03)
    with torch.no_grad():
        z = torch.log(silu.inv_freq(8.0)).double()
    assert (z - log_ntk(torch.tensor(8.0, dtype=torch.float64))).abs().max() > 1e-2


def test_gradients_reach_both_projections():
    strategy = make()
    randomise(strategy)
    strategy.inv_freq(4.0).sum().backward()
    assert strategy.up.weight.grad.abs().sum() > 0
    assert strategy.down.weight.grad.abs().sum() > 0


def test_eval_cache_is_invalidated_by_an_optimiser_step_and_by_loading():
    strategy = make()
    with torch.no_grad():
        before = strategy.inv_freq(4.0).clone()
    optimiser = torch.optim.AdamW(strategy.parameters(), lr=1e-2)
    strategy.inv_freq(3.0).pow(2).sum().backward()
    optimiser.step()
    with torch.no_grad():
        after = strategy.inv_freq(4.0).clone()
    assert not torch.allclose(before, after)
    with torch.no_grad():
        torch.testing.assert_close(after, strategy.inv_freq(4.0))
    fresh = make()
    with torch.no_grad():
        fresh.inv_freq(4.0)  # fills fresh's cache before loading
        fresh.load_state_dict(strategy.state_dict())
        torch.testing.assert_close(fresh.inv_freq(4.0), after)


def test_clamp_and_extrapolate_beyond_max_scale():
    clamp, extrapolate = make(max_scale=4), make(max_scale=4, beyond_max="extrapolate")
    assert clamp.scale_for_length(16 * L0) == 4.0
    assert extrapolate.scale_for_length(16 * L0) == 16.0
    assert clamp.scale_for_length(L0 + 1) == 2.0  # ceil(len / L0)


@pytest.mark.parametrize("t_max", [16, 64])
def test_no_nan_or_inf_up_to_large_t(t_max):
    strategy = make(max_scale=t_max)
    randomise(strategy, scale=0.5)  # z drifts by tens by t = 64: exp(z) spans ~1e-20 .. 1
    with torch.no_grad():
        freqs = [strategy.inv_freq(t) for t in range(1, t_max + 1)]
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in freqs)
    loss = strategy.inv_freq(float(t_max)).sum()
    loss.backward()
    assert torch.isfinite(strategy.up.weight.grad).all()


def test_parameters_stay_float32_under_bf16():
    strategy = make().to(torch.bfloat16)
    assert strategy.up.weight.dtype == torch.float32 and strategy.down.weight.dtype == torch.float32


def test_discrete_dynamics_equal_ntk_at_integers_at_initialisation_and_learn():
    strategy = make(dynamics="discrete")
    for t in (1, 2, 5):
        with torch.no_grad():
            z = torch.log(strategy.inv_freq(float(t))).double()
        torch.testing.assert_close(z, log_ntk(torch.tensor(float(t), dtype=torch.float64)), rtol=0, atol=1e-5)
    randomise(strategy)
    strategy.inv_freq(3.0).sum().backward()
    assert strategy.down.weight.grad.abs().sum() > 0


def test_projection_width_overrides_amplification():
    assert make(amplification=2).width == 2 * D
    assert make(amplification=2, projection_width=48).width == 48


def test_at_t_one_training_builds_no_graph_into_the_frequencies():
    strategy = make()
    assert not strategy.inv_freq(1.0).requires_grad  # nothing to differentiate: cos/sin need no backward
    assert torch.equal(strategy.inv_freq(1.0), torch.exp(torch.log(strategy.base_inv_freq)))
    assert strategy.inv_freq(2.0).requires_grad
