"""Each static strategy against transformers' own rope functions (docs/design.md, section 2)."""

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

import clex
from clex.errors import ConfigError

L0 = 256


def hf_config(rotary_dim, base, rope_type, factor):
    params = {"rope_type": rope_type, "rope_theta": base}
    if rope_type != "default":
        params["factor"] = factor
    if rope_type == "yarn":
        params["original_max_position_embeddings"] = L0
    if rope_type == "dynamic":
        params["factor"] = 1.0  # dynamic at seq_len = t L0 with factor 1 is base * t^(d/(d-2))
    return LlamaConfig(
        hidden_size=rotary_dim * 2,
        num_attention_heads=2,
        head_dim=rotary_dim,
        max_position_embeddings=L0,
        rope_parameters=params,
    )


def hf_reference(rotary_dim, base, rope_type, t):
    config = hf_config(rotary_dim, base, rope_type, t)
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    seq_len = int(round(t * L0)) if rope_type == "dynamic" else None
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)


@pytest.mark.parametrize(
    "name,rope_type", [("rope", "default"), ("pi", "linear"), ("fbs", "dynamic"), ("yarn", "yarn")]
)
@pytest.mark.parametrize("t", [1.0, 1.5, 4.0, 16.0])
@pytest.mark.parametrize("rotary_dim", [32, 64, 128])
@pytest.mark.parametrize("base", [1e4, 5e5])
def test_matches_transformers(name, rope_type, t, rotary_dim, base):
    strategy = clex.build_strategy(name, rotary_dim=rotary_dim, base=base, original_length=L0, factor=t)
    expected, expected_factor = hf_reference(rotary_dim, base, rope_type, t)
    got = strategy.inv_freq(strategy.scale_for_length(L0))
    assert got.dtype == torch.float32 and got.shape == (rotary_dim // 2,)
    torch.testing.assert_close(got, expected.float(), rtol=1e-6, atol=0)
    assert strategy.attention_factor(t) == pytest.approx(expected_factor, rel=1e-6)


def test_pi_and_fbs_differ_from_rope_where_expected():
    # PI divides every frequency by t; FBS keeps the highest and divides the lowest by t
    rope = clex.build_strategy("rope", rotary_dim=64, base=1e4, original_length=L0).inv_freq(1)
    pi = clex.build_strategy("pi", rotary_dim=64, base=1e4, original_length=L0, factor=4).inv_freq(4)
    fbs = clex.build_strategy("fbs", rotary_dim=64, base=1e4, original_length=L0, factor=4).inv_freq(4)
    torch.testing.assert_close(pi, rope / 4)
    assert fbs[0] == rope[0]
    assert fbs[-1] == pytest.approx(float(rope[-1]) / 4, rel=1e-5)


def test_eval_scale_modes():
    static = clex.build_strategy("pi", rotary_dim=32, base=1e4, original_length=100, factor=4)
    dynamic = clex.build_strategy("pi", rotary_dim=32, base=1e4, original_length=100, eval_scale="dynamic")
    ceil = clex.build_strategy("pi", rotary_dim=32, base=1e4, original_length=100, eval_scale="ceil")
    assert [static.scale_for_length(n) for n in (50, 250)] == [4.0, 4.0]
    assert [dynamic.scale_for_length(n) for n in (50, 250)] == [1.0, 2.5]
    assert [ceil.scale_for_length(n) for n in (50, 250)] == [1.0, 3.0]


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(ConfigError, match="known: abf, clex, fbs, llama3, longrope, pi, rope, yarn"):
        clex.build_strategy("ntk", rotary_dim=32, base=1e4, original_length=64)
    with pytest.raises(ConfigError, match="unknown option.*max_scale.*allowed"):
        clex.build_strategy("pi", rotary_dim=32, base=1e4, original_length=64, max_scale=4)
    with pytest.raises(ConfigError, match="factor must be >= 1"):
        clex.build_strategy("pi", rotary_dim=32, base=1e4, original_length=64, factor=0.5)


@pytest.mark.parametrize("t", [2.0, 8.0, 32.0])
@pytest.mark.parametrize("rotary_dim", [32, 64, 128])
@pytest.mark.parametrize("base", [1e4, 5e5])
@pytest.mark.parametrize("low,high", [(1.0, 4.0), (2.0, 8.0)])
def test_llama3_matches_transformers(t, rotary_dim, base, low, high):
    config = LlamaConfig(
        hidden_size=rotary_dim * 2,
        num_attention_heads=2,
        head_dim=rotary_dim,
        max_position_embeddings=L0,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": base,
            "factor": t,
            "low_freq_factor": low,
            "high_freq_factor": high,
            "original_max_position_embeddings": L0,
        },
    )
    expected, expected_factor = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    strategy = clex.build_strategy(
        "llama3",
        rotary_dim=rotary_dim,
        base=base,
        original_length=L0,
        factor=t,
        low_freq_factor=low,
        high_freq_factor=high,
    )
    torch.testing.assert_close(strategy.inv_freq(strategy.scale_for_length(L0)), expected.float(), rtol=1e-6, atol=0)
    assert strategy.attention_factor(t) == pytest.approx(expected_factor)


@pytest.mark.parametrize("rotary_dim", [32, 128])
def test_abf_is_plain_rope_with_the_new_base(rotary_dim):
    config = LlamaConfig(
        hidden_size=rotary_dim * 2,
        num_attention_heads=2,
        head_dim=rotary_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 5e5},
    )
    expected, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    strategy = clex.build_strategy("abf", rotary_dim=rotary_dim, base=1e4, original_length=L0, new_base=5e5)
    for t in (1.0, 4.0):
        torch.testing.assert_close(strategy.inv_freq(t), expected.float(), rtol=1e-6, atol=0)
    with pytest.raises(ConfigError, match="needs new_base"):
        clex.build_strategy("abf", rotary_dim=32, base=1e4, original_length=L0)


@pytest.mark.parametrize("factor", [1.0, 4.0, 16.0])
def test_longrope_matches_transformers_within_and_beyond_l0(factor):
    rotary_dim, base = 64, 1e4
    rng = torch.Generator().manual_seed(0)
    short = (1 + torch.rand(rotary_dim // 2, generator=rng)).tolist()
    long = (1 + 4 * torch.rand(rotary_dim // 2, generator=rng)).tolist()
    config = LlamaConfig(
        hidden_size=rotary_dim * 2,
        num_attention_heads=2,
        head_dim=rotary_dim,
        max_position_embeddings=int(factor * L0),
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": base,
            "short_factor": short,
            "long_factor": long,
            "original_max_position_embeddings": L0,
        },
    )
    strategy = clex.build_strategy(
        "longrope",
        rotary_dim=rotary_dim,
        base=base,
        original_length=L0,
        factor=factor,
        short_factor=short,
        long_factor=long,
    )
    for seq_len in (L0 // 2, 2 * L0):
        expected, expected_factor = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=seq_len)
        t = strategy.scale_for_length(seq_len)
        torch.testing.assert_close(strategy.inv_freq(t), expected.float(), rtol=1e-6, atol=0)
        assert strategy.attention_factor(t) == pytest.approx(expected_factor, rel=1e-6)
