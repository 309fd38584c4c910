"""The rotary patch against transformers' own rotary modules, on tiny Llama and GPT-NeoX models."""

import pytest
import torch
from conftest import tiny_llama

import clex
from clex.errors import ConfigError
from clex.eval.decoding import forward_cached

L0 = 64
IDS = torch.randint(0, 97, (2, 3 * L0), generator=torch.Generator().manual_seed(0))
BUILTIN = {
    "pi": ("linear", {"factor": 4.0}),
    "yarn": ("yarn", {"factor": 4.0, "original_max_position_embeddings": L0}),
    "rope": ("default", {}),
    "fbs": ("dynamic", {"factor": 1.0}),
}


def patched(family, name, **options):
    if name in ("pi", "fbs", "yarn"):  # a static factor >= 1; within L0 every t is 1 anyway for dynamic use
        options = {"factor": 4.0, **options} if options.get("eval_scale", "static") == "static" else options
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
    ours = patched(family, name, **({"eval_scale": "dynamic"} if name in ("pi", "fbs", "yarn") else {}))
    ids = IDS[:, :L0]  # within L0, every strategy's dynamic t is 1
    torch.testing.assert_close(ours(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_cached_generation_takes_t_from_the_position_not_the_input_length():
    model = patched(tiny_llama, "clex", max_scale=8)
    full = model(IDS[:, : 2 * L0 + 5]).logits[:, -1]
    _, cache = forward_cached(model, IDS[:, : 2 * L0 + 4])
    step = forward_cached(model, IDS[:, 2 * L0 + 4 : 2 * L0 + 5], cache)[0][:, -1]
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


@torch.no_grad()
@pytest.mark.parametrize("name", ["clex", "yarn"])
def test_chunked_kv_cache_perplexity_equals_full_sequence(family, name):
    from clex.eval.perplexity import sequence_nll

    options = {"max_scale": 8, "log_scale": False} if name == "clex" else {"eval_scale": "dynamic"}
    model = patched(family, name, **{k: v for k, v in options.items() if k != "log_scale"})
    sequences = IDS[:, : 3 * L0 - 10 + 1]
    full, count = sequence_nll(model, sequences, tokens_per_batch=10_000)
    chunked, chunked_count = sequence_nll(model, sequences, tokens_per_batch=10_000, chunk_size=L0 // 2)
    assert count == chunked_count == sequences[:, 1:].numel()
    assert chunked / count == pytest.approx(full / count, abs=1e-4)


@pytest.mark.slow
def test_saved_model_reloads_in_a_fresh_process_with_identical_logits(tmp_path):
    import subprocess
    import sys

    model = patched(tiny_llama, "clex", max_scale=8)
    with torch.no_grad():
        clex.rotary_module(model).strategy.down.weight.normal_(0, 0.05)  # a trained-looking ODE
        expected = model(IDS).logits
        within_original = model(IDS[:, :L0]).logits  # t = 1: the unscaled model
    clex.save_pretrained(model, tmp_path / "ckpt")
    torch.save(IDS, tmp_path / "ids.pt")
    code = (
        "import clex, torch, sys; m = clex.load_pretrained(sys.argv[1]).eval(); "
        "torch.save(m(torch.load(sys.argv[2])).logits.detach(), sys.argv[3])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, tmp_path / "ckpt", tmp_path / "ids.pt", tmp_path / "out.pt"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # processes may pick different CPU kernels (seen: 1.8e-7); in one process the reload is exact
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(clex.load_pretrained(tmp_path / "ckpt").eval()(IDS).logits, expected)
    # plain transformers, which has never heard of clex, still loads it (as the unscaled model)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS[:, :L0]).logits, within_original, rtol=1e-5, atol=1e-5)
