"""Each sampler draws from the distribution it claims, reproducibly under a seed."""

import math

import pytest
import torch

from clex.errors import ConfigError
from clex.rope.samplers import POSITION_SAMPLERS, SCALE_SAMPLERS

N = 4000


def draws(name, n=N, seed=0, **options):
    sampler = SCALE_SAMPLERS.get(name)(max_scale=8, **options)
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor([sampler(generator) for _ in range(n)])


def test_uniform_int_counts():
    t = draws("uniform-int")
    assert set(t.tolist()) == set(range(1, 9))
    counts = torch.bincount(t.long())[1:].float()
    # each of 8 values has N/8 = 500 expected; 5 sigma ~ 5 * sqrt(500 * 7/8) = 105
    assert (counts - N / 8).abs().max() < 105


def test_uniform_continuous_and_log_uniform():
    t = draws("uniform-continuous")
    assert t.min() >= 1 and t.max() <= 8 and len(set(t.tolist())) > N * 0.99
    assert abs(t.mean() - 4.5) < 5 * (7 / math.sqrt(12)) / math.sqrt(N)
    log_t = torch.log(draws("log-uniform"))
    assert log_t.min() >= 0 and log_t.max() <= math.log(8)
    # log t uniform on [0, log 8]: as many draws in [1, 2) as in [4, 8)
    low, high = (log_t < math.log(2)).sum(), (log_t >= math.log(4)).sum()
    assert abs(int(low) - N / 3) < 5 * math.sqrt(N / 3) and abs(int(high) - N / 3) < 5 * math.sqrt(N / 3)


def test_fixed():
    assert set(draws("fixed", n=10).tolist()) == {8.0}
    assert set(draws("fixed", n=10, value=3).tolist()) == {3.0}


@pytest.mark.parametrize("name", ["uniform-int", "uniform-continuous", "log-uniform"])
def test_same_seed_same_draws(name):
    assert torch.equal(draws(name, n=50, seed=3), draws(name, n=50, seed=3))
    assert not torch.equal(draws(name, n=50, seed=3), draws(name, n=50, seed=4))


def positions(name, length, scale, original_length, seed=0):
    return POSITION_SAMPLERS.get(name)()(length, scale, original_length, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("length,original_length", [(64, 64), (128, 64)])
@pytest.mark.parametrize("scale", [1, 3, 8])
def test_extrapolated_random(length, original_length, scale):
    stride = max(length // original_length, 1)
    p = positions("extrapolated-random", length, scale, original_length)
    raw = p * stride
    assert p.shape == (length,)
    assert raw[0] == 0 and raw[-1] == scale * length - 1  # endpoints 0 and tL - 1
    assert (raw.diff() > 0).all() and torch.equal(raw, raw.round())  # sorted, unique integers
    assert p.max() < scale * original_length  # spread over [0, t L0)
    if scale == 1:
        assert torch.equal(raw, torch.arange(length, dtype=torch.float32))
    else:  # the middle is a random subset: two seeds differ, the same seed repeats
        assert not torch.equal(p, positions("extrapolated-random", length, scale, original_length, seed=1))
        assert torch.equal(p, positions("extrapolated-random", length, scale, original_length))


def test_extrapolated_random_middle_is_uniform():
    # every value of {1 .. tL-2} is equally likely to be picked: (L-2)/(tL-2) each
    hits = torch.zeros(4 * 32)
    for seed in range(400):
        hits[positions("extrapolated-random", 32, 4, 32, seed).long()] += 1
    middle = hits[1:-1] / 400
    assert (middle - 30 / 126).abs().max() < 0.12 and hits[0] == hits[-1] == 400


def test_contiguous_interpolated_window():
    assert torch.equal(positions("contiguous", 16, 4, 16), torch.arange(16.0))
    torch.testing.assert_close(positions("interpolated", 16, 4, 16), torch.arange(16.0) * 4)
    offsets = set()
    for seed in range(1000):
        w = positions("window", 16, 4, 16, seed)
        assert torch.equal(w.diff(), torch.ones(15)) and w[0] >= 0 and w[-1] <= 4 * 16 - 1
        offsets.add(int(w[0]))
    assert offsets == set(range(0, 4 * 16 - 16 + 1))  # every offset in [0, t L0 - L] reachable


def test_unknown_sampler():
    with pytest.raises(ConfigError, match="known: contiguous, extrapolated-random, interpolated, pose, window"):
        POSITION_SAMPLERS.get("random")


def test_pose_keeps_local_order_and_reaches_far_distances():
    spans = set()
    for seed in range(300):
        p = positions("pose", 32, 4, 32, seed)
        steps = p.diff()
        assert (steps == 1).sum() >= 30 and (steps >= 1).all()  # one jump at most, order kept
        assert p[0] == 0 and p[-1] <= 4 * 32 - 1
        spans.add(int(p[-1]))
    assert min(spans) == 31 and max(spans) > 4 * 32 - 8  # from no gap to nearly the full t L0
    assert torch.equal(positions("pose", 32, 1, 32), torch.arange(32.0))  # t = 1: nothing to skip
