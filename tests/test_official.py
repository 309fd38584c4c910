"""Released CLEX checkpoints (DAMO-NLP-SG/CLEX): tiny checkpoints in each official format, imported, against an
independent reference written from the official formulas (a float64 ODE solve in t, a plain transformers
forward with those frequencies and the query scaling done in the attention itself)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.integrate import solve_ivp
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

import clex
from clex.commands import run
from tests.conftest import save_tiny_tokenizer

L0, MAX_FACTOR = 16, 4
VOCAB = 300  # the tiny tokenizer's (tests.conftest.save_tiny_tokenizer)
FORMATS = {  # name: (family, release, config extras, log scale applied by that release's code)
    "llama-2023": ("llama", 2023, {"log_scale": True}, True),
    "llama-2024": ("llama", 2024, {"log_scale": True, "use_flashattn": False}, False),
    "llama-2024-gqa-theta1e6": (
        "llama",
        2024,
        {"log_scale": True, "use_flashattn": True, "num_key_value_heads": 2, "rope_theta": 1e6},
        True,
    ),
    "mixtral-2024": (
        "mixtral",
        2024,
        {
            "log_scale": True,
            "use_flashattn": True,
            "num_local_experts": 2,
            "num_experts_per_tok": 1,
            "num_key_value_heads": 2,
            "rope_theta": 1e6,
        },
        False,
    ),
    "phi2-2024": ("phi", 2024, {"log_scale": True, "partial_rotary_factor": 0.5}, False),
}


def official_checkpoint(path, name, act="silu", seed=0):
    """A tiny checkpoint laid out as the official code saves one; returns (plain model, ODE weights, settings)."""
    family, release, extras, _ = FORMATS[name]
    extras = dict(extras)
    log_scale, flash = extras.pop("log_scale"), extras.pop("use_flashattn", None)
    theta = extras.pop("rope_theta", 10000.0)
    torch.manual_seed(seed)
    config = CONFIG_MAPPING[family](
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=L0,
        rope_theta=theta,
        **extras,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(path)
    save_tiny_tokenizer(path)
    d = int(8 * extras.get("partial_rotary_factor", 1.0))  # head_dim 8
    generator = torch.Generator().manual_seed(seed + 1)
    up = (torch.rand(d // 2, d, generator=generator) * 2 - 1) / math.sqrt(d / 2)
    down = torch.randn(d, d // 2, generator=generator) * 0.4 / math.sqrt(d)
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    weights = load_file(str(path / "model.safetensors"))
    save_file(
        {
            **weights,
            "model.clex_layer.proj_func.ode_up_proj": up,
            "model.clex_layer.proj_func.ode_down_proj": down,
            "model.clex_layer.inv_freq": inv_freq,
        },
        str(path / "model.safetensors"),
        metadata={"format": "pt"},
    )
    raw = json.loads((path / "config.json").read_text())
    raw.pop("rope_parameters", None)
    raw["rope_theta"] = theta
    raw["rope_scaling"] = {"type": "clex", "max_factor": MAX_FACTOR, "param_factor": 1}
    if release == 2024:
        raw["rope_scaling"].update(act=act, time_dt=0.01)
    raw["log_scale"] = log_scale
    if flash is not None:
        raw["use_flashattn"] = flash
    (path / "config.json").write_text(json.dumps(raw))
    return model, {
        "up": up.double().numpy(),
        "down": down.double().numpy(),
        "inv_freq": inv_freq.double().numpy(),
        "act": act if release == 2024 else "silu",
        "d": d,
    }


def reference_inv_freq(ode, t: float) -> np.ndarray:
    """dz/dt = act((z + log ntk(t)) @ up) @ down + d/dt log ntk(t), ntk at base 10000, z(1) = log inv_freq."""
    d = ode["d"]
    index = np.arange(0, d, 2) / d

    def rhs(time, z):
        alpha = 2 * time - 1
        log_ntk = -index * (math.log(10000.0) + d / (d - 2) * math.log(alpha))
        x = (z + log_ntk) @ ode["up"]
        act = np.tanh(x) if ode["act"] == "tanh" else x / (1 + np.exp(-x))
        return act @ ode["down"] - index * d / (d - 2) * 2 / alpha

    z0 = np.log(ode["inv_freq"])
    if t == 1:
        return np.exp(z0)
    return np.exp(solve_ivp(rhs, (1.0, t), z0, method="DOP853", rtol=1e-11, atol=1e-12).y[:, -1])


@torch.no_grad()
def reference_logits(plain, ode, ids, log_scale: bool):
    """The plain model with the reference frequencies of t = min(ceil(n / L0), max_factor), and the official
    query scaling log(n) / log(L0) (unclamped) done by the attention's own scaling."""
    n = ids.shape[1]
    t = min(max(1, math.ceil(n / L0)), MAX_FACTOR)
    rotary = plain.model.rotary_emb
    rotary.inv_freq = torch.tensor(reference_inv_freq(ode, t), dtype=torch.float32)
    factor = math.log(n) / math.log(L0) if log_scale else 1.0
    layers = plain.model.layers
    saved = [layer.self_attn.scaling for layer in layers]
    for layer in layers:
        layer.self_attn.scaling = layer.self_attn.scaling * factor
    try:
        return plain(ids).logits
    finally:
        for layer, value in zip(layers, saved, strict=False):
            layer.self_attn.scaling = value


@pytest.mark.parametrize("name", list(FORMATS))
def test_an_official_checkpoint_matches_the_reference(tmp_path, name):
    plain, ode = official_checkpoint(tmp_path / "ckpt", name)
    model = clex.load_pretrained(tmp_path / "ckpt").eval()
    ids = torch.randint(0, VOCAB, (1, 100), generator=torch.Generator().manual_seed(3))
    for n in (10, L0, 40, MAX_FACTOR * L0):  # below L0, at L0, between multiples (t = 3), at max_factor x L0
        with torch.no_grad():
            ours = model(ids[:, :n]).logits
        expected = reference_logits(plain, ode, ids[:, :n], FORMATS[name][3])
        assert (ours - expected).abs().max() < 1e-3, (name, n)
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()  # past max_factor x L0, where the official table stops


def test_the_odes_activation_and_ntk_base_are_the_checkpoints(tmp_path):
    official_checkpoint(tmp_path / "ckpt", "llama-2024-gqa-theta1e6", act="tanh")
    strategy = clex.rotary_module(clex.load_pretrained(tmp_path / "ckpt")).strategy
    assert (strategy.activation, strategy.ntk_base, strategy.base, strategy.max_scale) == ("tanh", 1e4, 1e6, 4.0)


def test_round_trips_keep_the_logits(tmp_path):
    official_checkpoint(tmp_path / "ckpt", "llama-2023")
    ids = torch.randint(0, VOCAB, (1, 3 * L0 + 5), generator=torch.Generator().manual_seed(4))
    imported = clex.load_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        expected = imported(ids).logits
        clex.save_pretrained(imported, tmp_path / "ours")
        assert torch.equal(clex.load_pretrained(tmp_path / "ours").eval()(ids).logits, expected)
        clex.save_pretrained(imported, tmp_path / "official", format="official")
        assert torch.equal(clex.load_pretrained(tmp_path / "official").eval()(ids).logits, expected)
    exported = json.loads((tmp_path / "official" / "config.json").read_text())
    assert exported["rope_scaling"] == {
        "type": "clex",
        "max_factor": MAX_FACTOR,
        "param_factor": 1,
        "act": "silu",
        "time_dt": 0.01,
    }
    assert "model.clex_layer.proj_func.ode_up_proj" in load_file(str(tmp_path / "official" / "model.safetensors"))


def test_export_refuses_what_the_format_cannot_express(tmp_path):
    from tests.conftest import tiny_llama

    model = clex.patch_model(
        tiny_llama(L0=L0), clex.build_strategy("clex", rotary_dim=16, base=1e4, original_length=L0, dynamics="discrete")
    )
    with pytest.raises(clex.ConfigError, match="discrete dynamics"):
        clex.save_pretrained(model, tmp_path / "out", format="official")
    model = clex.patch_model(
        tiny_llama(L0=L0), clex.build_strategy("pi", rotary_dim=16, base=1e4, original_length=L0, factor=4)
    )
    with pytest.raises(clex.ConfigError, match="CLEX only"):
        clex.save_pretrained(model, tmp_path / "out", format="official")
    assert not (tmp_path / "out").exists()


def test_fine_tuning_an_import_starts_from_its_ode(tmp_path):
    from clex.commands import CONFIG_DIR
    from clex.config.compose import single_config
    from clex.models import build_model
    from clex.train.experiment import build_rotary_strategy, rotary_options

    official_checkpoint(tmp_path / "ckpt", "llama-2024-gqa-theta1e6")
    cfg = single_config(CONFIG_DIR, ["model=hf", f"model.path={tmp_path / 'ckpt'}", "strategy=clex"])
    assert cfg.strategy.ntk_base == 1e4 and cfg.attention.log_scale and not cfg.attention.log_scale_clamp
    assert cfg.train.length == L0 and cfg.strategy.max_scale == MAX_FACTOR
    model = build_model(cfg.model, None)  # what stage 2 starts from: the model and strategy the run builds
    clex.patch_model(model, build_rotary_strategy(cfg.strategy, cfg.model, model), **rotary_options(cfg.attention))
    ids = torch.randint(0, VOCAB, (1, 3 * L0), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, clex.load_pretrained(tmp_path / "ckpt").eval()(ids).logits)


@pytest.mark.slow
def test_a_run_fine_tunes_an_import(tmp_path):
    official_checkpoint(tmp_path / "ckpt", "llama-2023")
    args = [
        f"out_dir={tmp_path / 'runs'}",
        "model=hf",
        f"model.path={tmp_path / 'ckpt'}",
        "train.length=32",
        "train.steps=2",
        "train.batch_size=2",
        "train.val_every=2",
        "train.val_batches=1",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=128",
        "data.max_documents=60",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [result] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/results.json")]
    assert result["original_length"] == L0 and result["config"]["strategy"]["ntk_base"] == 1e4
    assert all(math.isfinite(row["ppl"]) for row in result["eval"])


def write_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: write_config(p, lambda c: c["rope_scaling"].update(type="wobbly")), "rope_scaling.type 'wobbly'"),
        (lambda p: write_config(p, lambda c: c["rope_scaling"].update(param_factor=2)), "has shape [4, 8]"),
        (
            lambda p: (p / "config.json").write_text((p / "config.json").read_text()[:-1] + ",}"),
            "not valid JSON (line 1",
        ),
        (
            lambda p: save_file(
                {k: v for k, v in load_file(str(p / "model.safetensors")).items() if "ode_down" not in k},
                str(p / "model.safetensors"),
            ),
            "no tensor model.clex_layer.proj_func.ode_down_proj",
        ),
    ],
)
def test_a_damaged_checkpoint_is_one_line(tmp_path, capsys, damage, message):
    official_checkpoint(tmp_path / "ckpt", "llama-2024")
    damage(tmp_path / "ckpt")
    capsys.readouterr()  # the checkpoint's own saving output
    assert run.main([f"out_dir={tmp_path / 'runs'}", "model=hf", f"model.path={tmp_path / 'ckpt'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and ("config.json" in err or "safetensors" in err), err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_train_steps_0_evaluates_an_import_as_released(tmp_path):
    official_checkpoint(tmp_path / "ckpt", "llama-2024")
    args = [
        f"out_dir={tmp_path / 'runs'}",
        "model=hf",
        f"model.path={tmp_path / 'ckpt'}",
        "train.steps=0",
        "eval.lengths=[16,48]",
        "eval.max_tokens=96",
        "data.max_documents=60",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [path] = (tmp_path / "runs").glob("*/results.json")
    result = json.loads(path.read_text())
    assert result["train"]["tokens"] == 0 and not (path.parent / "checkpoints" / "last.ckpt").exists()
    saved = clex.load_pretrained(path.parent / "model").eval()  # the model evaluated is the import, untouched
    ids = torch.randint(0, VOCAB, (1, 48), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(saved(ids).logits, clex.load_pretrained(tmp_path / "ckpt").eval()(ids).logits)


@pytest.mark.slow
def test_a_runs_saved_model_runs_again_with_its_strategy_and_ode(tmp_path):
    from tests.test_run import tiny_args

    assert run.main(tiny_args(tmp_path / "runs", "data.tokenizer=bpe", "data.vocab_size=300", "train.steps=6")) == 0
    [first] = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/results.json")]
    model_dir = tmp_path / "runs" / first["name"] / "model"
    again = [
        f"out_dir={tmp_path / 'again'}",
        "model=hf",
        f"model.path={model_dir}",
        "train.steps=0",
        "eval.multipliers=[1,2,4]",
        "eval.max_tokens=256",
        "data.max_documents=300",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(again) == 0
    [second] = [json.loads(p.read_text()) for p in (tmp_path / "again").glob("*/results.json")]
    assert second["config"]["strategy"]["max_scale"] == 4.0 and second["original_length"] == 32
    for a, b in zip(
        first["eval"], second["eval"], strict=False
    ):  # the same model, strategy and ODE: the same perplexities
        assert (a["length"], a["tokens"]) == (b["length"], b["tokens"]) and b["ppl"] == pytest.approx(
            a["ppl"], rel=1e-4
        )
    assert run.main(again + ["strategy=pi"]) == 2  # saved with clex: another strategy is refused


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_an_import_fine_tunes_under_two_processes_as_under_one(tmp_path, trainer):
    """Every rank starts from the checkpoint's ODE (FSDP rebuilds the model from it): one step of a global
    batch of 4 gives the validation loss of one process."""
    import subprocess
    import sys

    official_checkpoint(tmp_path / "ckpt", "llama-2023")
    common = [
        "model=hf",
        f"model.path={tmp_path / 'ckpt'}",
        "train.length=32",
        "train.steps=1",
        "train.val_every=1",
        "train.val_batches=2",
        "train.lr=3e-3",
        "eval.multipliers=[1]",
        "eval.max_tokens=64",
        "data.max_documents=60",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main([f"out_dir={tmp_path / 'one'}", *common, "train.batch_size=4"]) == 0
    script = str(Path(__file__).resolve().parents[1] / "experiments" / "run.py")
    done = subprocess.run(
        [
            sys.executable,
            script,
            f"out_dir={tmp_path / 'two'}",
            *common,
            "train.batch_size=2",
            f"trainer={trainer}",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [one], [two] = ([json.loads(p.read_text()) for p in (tmp_path / d).glob("*/results.json")] for d in ("one", "two"))
    assert two["train"]["world_size"] == 2
    assert two["train"]["final_val_loss"] == pytest.approx(one["train"]["final_val_loss"], rel=1e-5)
