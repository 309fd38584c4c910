"""A checkpoint's own rope (linear, llama3, yarn, longrope) as the starting point: t = 1 keeps its logits,
every strategy scales on from its frequencies, CLEX's ODE starts from them, and a saved run reloads."""

import pytest
import torch
from conftest import tiny_llama, tiny_neox
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import clex
from clex.errors import ConfigError

L0 = 64  # max_position_embeddings: the context the checkpoint's scaled rope covers
ROPES = {
    "linear": {"factor": 4.0},
    "llama3": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 16},
    "longrope": {
        "short_factor": [1.0 + 0.1 * i for i in range(8)],
        "long_factor": [1.0 + 0.7 * i for i in range(8)],
        "original_max_position_embeddings": 16,
    },
}
IDS = torch.randint(0, 97, (2, L0), generator=torch.Generator().manual_seed(0))


def checkpoint(family, rope_type):
    params = {"rope_type": rope_type, "rope_theta": 10000.0, **ROPES[rope_type]}
    if family is tiny_neox and rope_type == "longrope":
        params["short_factor"], params["long_factor"] = params["short_factor"][:4], params["long_factor"][:4]
    return family(params, L0=L0)


def reference_rope(model, seq_len=None):
    """transformers' own frequencies and attention factor for the checkpoint (the independent reference)."""
    return ROPE_INIT_FUNCTIONS[model.config.rope_parameters["rope_type"]](model.config, seq_len=seq_len)


@torch.no_grad()
@pytest.mark.parametrize("family", [tiny_llama, tiny_neox], ids=["llama", "neox"])
@pytest.mark.parametrize("rope_type", list(ROPES))
@pytest.mark.parametrize("name", ["rope", "pi", "fbs", "yarn", "clex"])
def test_t_equal_one_keeps_the_checkpoint_logits(family, rope_type, name):
    original = checkpoint(family, rope_type)
    model = checkpoint(family, rope_type)
    settings = clex.rotary_settings(model)
    assert settings["original_length"] == L0
    options = {"eval_scale": "dynamic"} if name in ("pi", "fbs", "yarn") else {}
    clex.patch_model(model, clex.build_strategy(name, **settings, **options))
    for length in (12, L0):  # LongRoPE: its short factors up to 16 tokens, its long ones beyond
        torch.testing.assert_close(
            model(IDS[:, :length]).logits, original(IDS[:, :length]).logits, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("rope_type", list(ROPES))
def test_strategies_scale_on_from_the_checkpoint_frequencies(rope_type):
    model = checkpoint(tiny_llama, rope_type)
    settings = clex.rotary_settings(model)
    own, attention = reference_rope(model, seq_len=L0)
    d = settings["rotary_dim"]
    pi = clex.build_strategy("pi", **settings, factor=2.0)
    fbs = clex.build_strategy("fbs", **settings, factor=2.0)
    untrained = clex.build_strategy("clex", **settings, max_scale=4)
    for strategy in (pi, fbs, untrained):
        clex.patch_model(model, strategy)
    torch.testing.assert_close(pi.inv_freq(2.0), own / 2)
    j = torch.arange(0, d, 2, dtype=torch.float32) / d
    torch.testing.assert_close(fbs.inv_freq(2.0), own * (2.0 ** (d / (d - 2))) ** -j)
    # untrained CLEX is NTK from z(1) = log of the checkpoint's frequencies: z(t) = z(1) + slope log(2t - 1)
    torch.testing.assert_close(untrained.inv_freq(3.0), own * 5.0 ** (-j * d / (d - 2)), rtol=2e-5, atol=0)
    cos, _ = clex.rotary_module(model)(torch.zeros(1, 2 * L0, 4), torch.arange(2 * L0)[None])
    assert cos[0, 0, 0].item() == pytest.approx(attention)  # the checkpoint's attention factor stays


@torch.no_grad()
def test_a_saved_run_from_a_llama3_checkpoint_reloads_with_the_same_logits(tmp_path):
    model = checkpoint(tiny_llama, "llama3")
    strategy = clex.build_strategy("clex", **clex.rotary_settings(model), max_scale=4)
    torch.nn.init.normal_(strategy.down.weight, std=0.05)  # a trained-looking ODE
    clex.patch_model(model, strategy)
    clex.save_pretrained(model, tmp_path / "model")
    again = clex.load_pretrained(tmp_path / "model")
    ids = torch.randint(0, 97, (1, 3 * L0), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert again.config.rope_parameters["rope_type"] == "llama3"


def test_abf_refuses_a_scaled_checkpoint_and_l0_is_its_extended_context(tmp_path):
    model = checkpoint(tiny_llama, "yarn")
    with pytest.raises(ConfigError, match="strategy abf replaces the base of plain RoPE"):
        clex.patch_model(model, clex.build_strategy("abf", **clex.rotary_settings(model), new_base=5e5))
    from clex.checkpoints.config_json import checkpoint_original_length

    model.save_pretrained(tmp_path)
    assert checkpoint_original_length(tmp_path) == L0


@pytest.mark.parametrize(
    "rope, max_position, expected",
    [
        ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 32768, 131072),  # Qwen2.5
        ({"rope_type": "yarn", "factor": 4.0}, 4096, 16384),  # transformers: original = max_position_embeddings
        ({"rope_type": "linear", "factor": 4.0}, 16384, 16384),  # a linear config that raised max_position already
        (
            {"rope_type": "llama3", "factor": 32.0, "original_max_position_embeddings": 8192},
            131072,
            131072,
        ),  # Llama 3.2
        ({"rope_type": "longrope", "original_max_position_embeddings": 4096}, 131072, 131072),  # Phi-3
        ({"rope_type": "default", "original_max_position_embeddings": 2048}, 4096, 2048),
    ],
)
def test_l0_is_the_context_the_checkpoint_rope_covers(rope, max_position, expected):
    from clex.rope.starting import original_length

    assert original_length(rope, max_position) == expected


@torch.no_grad()
def test_a_yarn_checkpoint_that_kept_its_max_position_is_not_scaled_twice():
    original = tiny_llama({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, L0=16)  # covers 64 tokens
    model = tiny_llama({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}, L0=16)
    settings = clex.rotary_settings(model)
    assert settings["original_length"] == 64
    clex.patch_model(model, clex.build_strategy("clex", **settings, max_scale=4))
    torch.testing.assert_close(model(IDS[:, :48]).logits, original(IDS[:, :48]).logits, rtol=1e-5, atol=1e-5)


def test_a_longrope_checkpoint_trains_within_its_original_length_on_its_short_factors():
    model = checkpoint(tiny_llama, "longrope")
    clex.patch_model(model, clex.build_strategy("rope", **clex.rotary_settings(model)))
    rotary = clex.rotary_module(model)
    short, _ = reference_rope(model)  # seq_len None: the short factors
    x = torch.zeros(1, 12, 4)
    with rotary.training_scale(1.0, torch.arange(12, dtype=torch.float32)):
        cos, _ = rotary(x, torch.arange(12)[None])
    torch.testing.assert_close(cos[0, 5, :8], torch.cos(5 * short) * cos[0, 0, 0])
