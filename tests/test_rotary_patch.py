"""The rotary patch against transformers' own rotary modules, on tiny Llama and GPT-NeoX models."""
import pytest
import torch
from conftest import tiny_llama

import clex
from clex.registry import ConfigError

L0 = 64
IDS = torch.randint(0, 97, (2, 3 * L0), generator=torch.Generator().manual_seed(0))
BUILTIN = {"pi": ("linear", {"factor": 4.0}), "yarn": ("yarn", {"factor": 4.0, "original_max_position_embeddings": L0}),
           "rope": ("default", {}), "fbs": ("dynamic", {"factor": 1.0})}


def patched(family, name, **options):
    model = family()
    strategy = clex.build_strategy(name, **clex.rotary_settings(model), **options)
    return clex.patch_model(model, strategy)


@torch.no_grad()
@pytest.mark.parametrize("name", ["rope", "pi", "yarn", "fbs"])
def test_same_logits_as_builtin_rope_type(family, name):
    rope_type, params = BUILTIN[name]
    builtin = family({"rope_type": rope_type, "rope_theta": 10000.0, **params})
    options = {"eval_scale": "dynamic"} if name == "fbs" else ({"factor": 4.0} if params else {})
    ours = patched(family, name, **options)
    torch.testing.assert_close(ours(IDS).logits, builtin(IDS).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("name", ["rope", "pi", "fbs", "yarn", "clex"])
def test_t_equal_one_is_the_original_model(family, name):
    original = family()
    ours = patched(family, name)
    ids = IDS[:, :L0]  # within L0, every strategy's t is 1
    torch.testing.assert_close(ours(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_cached_generation_takes_t_from_the_position_not_the_input_length():
    model = patched(tiny_llama, "clex", max_scale=8)
    full = model(IDS[:, : 2 * L0 + 5]).logits[:, -1]
    cache = model(IDS[:, : 2 * L0 + 4], use_cache=True).past_key_values
    step = model(IDS[:, 2 * L0 + 4: 2 * L0 + 5], past_key_values=cache, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_training_scale_overrides_positions_and_t():
    model = patched(tiny_llama, "clex", max_scale=8)
    rotary = clex.rotary_module(model)
    positions = torch.arange(L0, dtype=torch.float32) * 4
    x = torch.zeros(1, L0, 8)
    with rotary.training_scale(4.0, positions):
        cos, _ = rotary(x, torch.arange(L0)[None])
    expected = torch.cos(positions[:, None] * rotary.strategy.inv_freq(4.0).detach())
    torch.testing.assert_close(cos[0, :, : expected.shape[1]], expected)
    cos_eval, _ = rotary(x, torch.arange(L0)[None])
    assert not torch.allclose(cos_eval, cos)  # the override ends with the block


def test_unpatchable_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot patch Linear"):
        clex.patch_model(torch.nn.Linear(2, 2), clex.build_strategy("rope", rotary_dim=8, base=1e4, original_length=8))


def test_rotary_dim_mismatch_is_a_clear_error():
    with pytest.raises(ConfigError, match="rotary_dim 32 does not match the model's 16"):
        clex.patch_model(tiny_llama(), clex.build_strategy("rope", rotary_dim=32, base=1e4, original_length=L0))
