"""Inputs and faults from real data, real checkpoints and real clusters: each used to give a silent wrong
result or a traceback."""

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import said

import clex
from clex import io
from clex.commands import run
from clex.errors import ConfigError
from tests.conftest import FAST


def one_line_error(capsys, args, message, out):
    assert run.main([f"out_dir={out}", *args]) == 2
    _, errors = said(capsys.readouterr().err)  # a config that is also odd warns first, each warning one line
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors


def ntk_inv_freq(rotary_dim, base, t):
    alpha = 2 * t - 1
    return 1.0 / (base * alpha ** (rotary_dim / (rotary_dim - 2))) ** (torch.arange(0, rotary_dim, 2) / rotary_dim)


def test_a_bf16_cast_keeps_the_float32_values_of_a_strategy():
    strategy = clex.build_strategy("clex", rotary_dim=32, base=10000.0, original_length=128, max_scale=16)
    before = {k: v.clone() for k, v in strategy.state_dict().items()}
    strategy.to(torch.bfloat16)
    for key, value in strategy.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, before[key]), key
    # untrained CLEX is NTK at alpha = 2t - 1: 5e-6, not the 8e-3 a bf16 round trip gave
    assert torch.allclose(strategy.inv_freq(16.0), ntk_inv_freq(32, 10000.0, 16.0).float(), rtol=5e-6, atol=0)


def test_discrete_dynamics_stay_float32_under_autocast():
    strategy = clex.build_strategy("clex", rotary_dim=32, base=10000.0, original_length=128, dynamics="discrete")
    torch.nn.init.normal_(strategy.down.weight, std=0.05)
    reference = strategy.inv_freq(6.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = strategy.inv_freq(6.0)
    assert under.dtype == torch.float32 and torch.equal(under, reference)


@pytest.mark.parametrize("name", ["pi", "fbs", "yarn"])
def test_scaling_strategies_need_a_factor_in_the_library(name):
    with pytest.raises(ConfigError, match="needs factor="):
        clex.build_strategy(name, rotary_dim=32, base=10000.0, original_length=128)
    scaled = clex.build_strategy(name, rotary_dim=32, base=10000.0, original_length=128, factor=4)
    assert not torch.equal(
        scaled.inv_freq(4.0), clex.build_strategy("rope", rotary_dim=32, base=1e4, original_length=128).inv_freq(4.0)
    )


def test_extrapolated_random_positions_stay_below_t_l0_for_any_l():
    from clex.rope.samplers import POSITION_SAMPLERS

    sampler = POSITION_SAMPLERS.get("extrapolated-random")()
    generator = torch.Generator().manual_seed(0)
    for length in (64, 128, 192, 320):
        for t in (1, 3, 8):
            positions = sampler(length, t, 128, generator)
            assert len(positions) == length and positions.min() >= 0 and positions.max() < t * 128, (length, t)


def test_a_checkpoint_with_a_rope_type_we_cannot_start_from_is_not_changed_silently():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0},
    )
    model = LlamaForCausalLM(config)
    strategy = clex.build_strategy("rope", **clex.rotary_settings(model))
    with pytest.raises(ConfigError, match="rope type is 'dynamic'"):
        clex.patch_model(model, strategy)


def test_resuming_never_unpickles_code_and_a_truncated_checkpoint_is_one_line(tmp_path):
    from clex.train.resume import checkpoint_step

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    planted = tmp_path / "last.ckpt"
    planted.write_bytes(pickle.dumps({"global_step": 3, "x": Payload()}))
    with pytest.raises(ConfigError, match="cannot be read as a checkpoint"):
        checkpoint_step(planted)
    assert not marker.exists()
    good = tmp_path / "good.ckpt"
    torch.save({"global_step": 7, "state_dict": {"w": torch.zeros(3)}}, good)
    assert checkpoint_step(good) == 7
    good.write_bytes(good.read_bytes()[:40])  # truncated by a full disk or a kill mid-copy
    with pytest.raises(ConfigError, match="resume=false deletes it"):
        checkpoint_step(good)


def test_a_second_run_in_a_busy_folder_is_refused_with_the_holders_pid(tmp_path, capsys):
    with io.exclusive(tmp_path / "runs" / "busy" / ".lock", "run folder runs/busy"):
        one_line_error(capsys, ["name=busy", *FAST], f"in use by process {os.getpid()}", tmp_path / "runs")
    assert not (tmp_path / "runs" / "busy" / "results.json").exists()


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "args,message",
    [
        (["name=../../escape"], "name must be one folder name under out_dir"),
        (["name=/tmp/abs"], "name must be one folder name under out_dir"),
        (["eval.multipliers=[]"], "must not be empty"),
        (["+trainer.unknown_option=1"], "trainer.unknown_option is not a lightning.Trainer option"),
        pytest.param(
            ["trainer.accelerator=gpu"],
            "needs a CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here"),
        ),
        (["seed=!!python/name:os.system"], "YAML tags are not read"),
        (["seed=!!set {a}"], "YAML tags are not read"),
        (["name=mine", "seed=0,1"], "would give all 2 runs of the list one folder"),
        (["seed=0,1", "seed=5"], "seed is given twice, once as a comma list"),
        (["train.steps=null"], "train.steps must be an integer >= 0, got null"),
        (["eval.lengths=128"], "eval.lengths must be a list like [128,256]"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    one_line_error(capsys, [*FAST, *args], message, tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not Path("/tmp/abs").exists()


def test_eval_lengths_are_exactly_those_asked_for_and_the_reference_is_stated():
    from omegaconf import OmegaConf

    from clex.config.compose import eval_lengths, reference_length

    cfg = OmegaConf.create(
        {"train": {"length": 128, "steps": 10}, "eval": {"lengths": [512, 256], "multipliers": None}}
    )
    assert eval_lengths(cfg) == [256, 512] and reference_length(cfg, [256, 512], 64) == 256  # L not asked for
    assert reference_length(cfg, [128, 256], 64) == 128  # L evaluated: L
    cfg.train.steps = 0  # nothing trained: the checkpoint's own L0 where it is evaluated
    assert reference_length(cfg, [64, 256], 64) == 64 and reference_length(cfg, [256, 512], 64) == 256


def test_a_malformed_jsonl_line_names_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "a" * 500}) + "\n{not json\n")
    one_line_error(
        capsys, [*FAST, "data=text", f"data.paths=[{corpus}]"], f"{corpus}:2 is not a JSON record", tmp_path / "runs"
    )


def test_a_model_folder_without_a_model_or_tokenizer_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one_line_error(capsys, ["model=hf", f"model.path={tmp_path / 'empty'}"], "has no tokenizer", tmp_path / "runs")


def test_infinite_ppl_does_not_poison_a_mean():
    from clex.analysis.stats import ppl_by_seed

    runs = [{"seed": s, "eval": [{"length": 8, "ppl": p}]} for s, p in enumerate([4.0, math.inf, None, 5.0])]
    assert ppl_by_seed(runs, 8) == {0: 4.0, 3: 5.0}


def test_a_folder_holding_another_configs_run_is_not_resumed_into(tmp_path, capsys):
    assert run.main([f"out_dir={tmp_path}", "name=mine", *FAST, "eval.multipliers=[1]", "eval.max_tokens=64"]) == 0
    capsys.readouterr()
    (tmp_path / "mine" / "results.json").unlink()  # unfinished, so it would resume from last.ckpt
    one_line_error(
        capsys,
        ["name=mine", *FAST, "eval.multipliers=[1]", "eval.max_tokens=64", "seed=3"],
        "holds a run of another config",
        tmp_path,
    )


def test_compare_refuses_what_is_not_a_results_file(tmp_path, capsys):
    from clex.commands import compare

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text(json.dumps({"schema_version": 1}))
    assert compare.main([str(tmp_path / "x"), "--out", str(tmp_path / "out")]) == 2
    assert "not a clex results.json" in capsys.readouterr().err


def test_a_bootstrap_needs_a_resample():
    from clex.analysis.tables import fit_power_law

    with pytest.raises(ConfigError, match="--bootstrap must be from 1 to 100,000"):
        fit_power_law([1e5, 1e6, 1e5, 1e6], [64, 64, 128, 128], [100, 200, 300, 400], bootstrap=0)


def test_a_pretrained_model_trains_and_evaluates_from_its_own_l0(tmp_path):
    from clex.commands import CONFIG_DIR
    from clex.config.compose import compose, parse_overrides

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(
        json.dumps({"max_position_embeddings": 8192, "rope_parameters": {"rope_theta": 1e5}})
    )
    axes, overrides = parse_overrides(CONFIG_DIR, ["model=hf", f"model.path={tmp_path / 'ckpt'}"])
    cfg = compose(CONFIG_DIR, {k: v[0] for k, v in axes.items()}, overrides)
    assert cfg.train.length == 8192 and list(cfg.eval.multipliers) == [1, 2, 4, 8, 16]  # evaluated at 1-16 x L0
    axes, overrides = parse_overrides(CONFIG_DIR, ["model=hf", f"model.path={tmp_path / 'ckpt'}", "train.length=512"])
    assert compose(CONFIG_DIR, {k: v[0] for k, v in axes.items()}, overrides).train.length == 512  # given wins


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=-1", "seed must be an integer >= 0, got -1"),
        ("model.num_heads=3", "model.num_heads must divide model.hidden_size (128)"),
        ("model.hidden_size=0", "model.hidden_size must be an integer >= 1, got 0"),
        ("train.betas=[0.9]", "train.betas must be two numbers in [0, 1)"),
        ("eval.multipliers=[1,1]", "eval.multipliers must not repeat a value"),
        ("eval.multipliers=[-2]", "eval.multipliers must be positive integers, got [-2]"),
        ("out_dir=/proc/clex", "out_dir must be a folder this process can write in"),
        ("out_dir=/etc/hostname/runs", "out_dir must be a folder this process can write in"),
        ("name=" + "a" * 300, "name must be at most 200 characters"),
    ],
)
def test_bad_values_are_one_line_and_write_nothing(tmp_path, capsys, override, message):
    args = [f"out_dir={tmp_path / 'runs'}", override] if not override.startswith("out_dir") else [override]
    assert run.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_finished_run_drops_its_optimiser_state_and_is_still_reused(tmp_path):
    from tests.test_run import tiny_args

    assert run.main(tiny_args(tmp_path, "strategy=pi")) == 0
    [run_dir] = [p.parent for p in tmp_path.glob("*/results.json")]
    state = io.load_tensors(run_dir / "checkpoints" / "last.ckpt", "a checkpoint", "")
    assert "optimizer_states" not in state and "state_dict" in state
    assert run.main(tiny_args(tmp_path, "strategy=pi", "eval.multipliers=[1,2]")) == 0  # eval only: reuses it
    reused = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json")]
    assert sorted(bool(r["train"].get("reused_from")) for r in reused) == [False, True]
    kept = tmp_path / "kept"
    assert run.main(tiny_args(kept, "strategy=pi", "train.keep_optimizer_state=true")) == 0
    [kept_dir] = [p.parent for p in kept.glob("*/results.json")]
    assert "optimizer_states" in io.load_tensors(kept_dir / "checkpoints" / "last.ckpt", "a checkpoint", "")


def test_a_link_planted_at_a_lock_never_touches_its_target(tmp_path):
    from clex import io
    from clex.errors import ConfigError

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(target)
    with pytest.raises(ConfigError, match=r"\.lock: the lock file of run .* is not a regular file"):
        with io.exclusive(tmp_path / "run" / ".lock", "run x"):
            pass
    assert target.read_text() == "keep me"
    (tmp_path / "fifo").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        with io.exclusive(tmp_path / "fifo", "a directory"):
            pass
    with io.exclusive(tmp_path / "run" / "real.lock", "run y"):  # a plain lock still works
        assert (tmp_path / "run" / "real.lock").read_text().strip().isdigit()


@pytest.mark.parametrize("args", [["name=.base"], ["name=a/b"], ["name=${oc.create:{a: 1}}"], ["name=.."]])
def test_a_name_that_would_write_outside_its_run_folder_is_refused(tmp_path, args):
    from clex.commands import run

    assert run.main([f"out_dir={tmp_path}", *args]) == 2
    assert list(tmp_path.iterdir()) == []


def test_a_config_dir_default_that_walks_out_of_its_group_is_refused(tmp_path, capsys):
    from clex.commands import run

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.yaml").write_text("defaults:\n  - strategy: ../../../../tmp/x/evil\n")
    assert run.main(["--config-dir", str(tmp_path / "mine"), f"out_dir={tmp_path / 'out'}"]) == 2
    assert "strategy=../../../../tmp/x/evil must be an option name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "key", ["+trainer.limit_train_batches=3", "+trainer.fast_dev_run=true", "+trainer.max_epochs=2"]
)
def test_a_trainer_keyword_that_changes_what_is_trained_is_refused(tmp_path, capsys, key):
    from clex.commands import run

    assert run.main([f"out_dir={tmp_path}", key]) == 2
    err = capsys.readouterr().err
    assert "changes what a run trains" in err and err.count("\n") == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer, got 0"),
        ({"rope_theta": float("nan")}, "rope_theta must be a finite number > 1, got nan"),
        ({"vocab_size": "many"}, "vocab_size must be a positive integer, got 'many'"),
    ],
)
def test_a_checkpoint_config_with_impossible_numbers_is_one_line_naming_it(tmp_path, change, message):
    from clex.errors import ConfigError
    from clex.models.hf import check_checkpoint

    config = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError, match=f"config.json: {message}"):
        check_checkpoint(tmp_path)


def test_a_malformed_neighbour_run_is_skipped_and_deep_nesting_is_one_line(tmp_path, capsys):
    from clex.analysis.collection import read_results
    from clex.config.identity import training_identity
    from clex.errors import ConfigError
    from clex.train.resume import trained_twin

    for name, text in (("list", "[]"), ("deep", "[" * 100_000 + "]" * 100_000), ("noconfig", '{"config": 3}')):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"")
        (tmp_path / name / "results.json").write_text(text)
    assert trained_twin(tmp_path, training_identity({"seed": 0}), 10, tmp_path / "mine") is None
    warnings, _ = said(capsys.readouterr().err)
    assert len(warnings) == 3 and all("is not a clex results.json" in w for w in warnings), warnings
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_results(tmp_path / "deep" / "results.json")


def test_a_jsonl_record_whose_text_is_not_text_names_file_and_line(tmp_path):
    from clex.data.sources.text import jsonl_texts
    from clex.errors import ConfigError

    with pytest.raises(ConfigError, match=r"c.jsonl:2: 'text' is a NoneType, not text"):
        list(jsonl_texts(tmp_path / "c.jsonl", '{"text": "a"}\n{"text": null}\n', "text"))
