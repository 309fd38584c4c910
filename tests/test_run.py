"""experiments/run.py end to end on tiny settings: every strategy, both tiny models, files and numbers."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from clex.commands import run
from clex.data.corpus import load_corpus
from clex.data.windows import encode_documents, evaluation_sequences
from clex.eval.perplexity import sequence_nll

STRATEGIES = ["rope", "pi", "fbs", "yarn", "clex"]
TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.original_length=32",
    "train.length=32",
    "train.steps=4",
    "train.batch_size=2",
    "train.val_every=2",
    "train.val_batches=1",
    "base.steps=4",
    "base.batch_size=2",
    "eval.multipliers=[1,2,4]",
    "eval.max_tokens=256",
    "data.max_documents=300",
    "trainer.enable_progress_bar=false",
    "strategy.max_scale=4",
]


def tiny_args(out_dir, *extra):
    # strategy.max_scale only exists for clex: drop it for the others
    args = [f"out_dir={out_dir}", *TINY, *extra]
    strategies = next((a.split("=", 1)[1] for a in extra if a.startswith("strategy=")), "clex")
    return args if strategies == "clex" else [a for a in args if not a.startswith("strategy.max_scale")]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-neox"])
def comparison(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    strategies = [s for s in STRATEGIES if s != "clex"]
    assert run.main(tiny_args(out, f"model={request.param}", "strategy=" + ",".join(strategies))) == 0
    assert run.main(tiny_args(out, f"model={request.param}", "strategy=clex")) == 0
    return out, request.param


def load_results(out):
    return {json.loads(p.read_text())["strategy"]: json.loads(p.read_text()) for p in out.glob("*/results.json")}


@pytest.mark.slow
def test_every_strategy_writes_its_files_and_numbers(comparison):
    out, model = comparison
    results = load_results(out)
    assert sorted(results) == sorted(STRATEGIES)
    for name, result in results.items():
        run_dir = out / result["name"]
        assert not (run_dir / "checkpoints" / "best.ckpt").exists()  # a second full copy only with train.save_best
        for path in (
            "config.yaml",
            "ppl_vs_length.png",
            "checkpoints/last.ckpt",
            "model/config.json",
            "model/model.safetensors",
        ):
            assert (run_dir / path).is_file(), path
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        assert result["schema_version"] == 1 and result["strategy"] == name
        assert result["choices"]["model"] == model
        assert result["train_length"] == 32 and result["original_length"] == 32
        assert [row["length"] for row in result["eval"]] == [32, 64, 128]
        for row in result["eval"]:
            assert row["tokens"] > 0 and row["documents"] > 0
            assert row["ppl"] == pytest.approx(math.exp(row["nll"]))
            assert 1 < row["ppl"] < 257  # better than nothing, worse than perfect, for byte tokens
        assert result["train"]["tokens"] == 4 * 2 * 32
        assert result["parameters"] > 0 and result["corpus"]["files"] == 300
        assert set(result["packages"]) >= {"torch", "transformers", "lightning"}
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved == result["config"] and saved["strategy"]["name"] == name
    # the same held-out tokens for every strategy
    tokens = {name: [row["tokens"] for row in r["eval"]] for name, r in results.items()}
    assert len({tuple(t) for t in tokens.values()}) == 1
    # one base model, pre-trained once and reused by every strategy
    bases = {r["base"]["path"] for r in results.values()}
    assert len(bases) == 1 and sum(not r["base"]["cached"] for r in results.values()) == 1


@pytest.mark.slow
def test_comparison_table_and_figure(comparison):
    out, _ = comparison
    [target] = out.glob("comparison-*")
    table = (target / "comparison.md").read_text()
    results = load_results(out)
    for name in ("rope", "pi", "fbs", "yarn"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert f"{results[name]['eval'][0]['ppl']:.2f}" in row
    assert (target / "ppl_vs_length.png").stat().st_size > 1000


@pytest.mark.slow
def test_reported_perplexity_matches_an_independent_evaluation_of_the_checkpoint(comparison):
    out, _ = comparison
    result = load_results(out)["clex"]
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(result["config"])
    import clex
    from clex.data.tokenizers import ByteTokenizer

    model = clex.load_pretrained(out / result["name"] / "model")  # the saved model, not the live one
    corpus = load_corpus(cfg.data)
    for row in result["eval"]:
        sequences, _, _ = evaluation_sequences(
            encode_documents(ByteTokenizer(), corpus.documents["test"]),
            row["length"],
            cfg.eval.max_tokens,
            cfg.eval.seed,
        )
        total, count = sequence_nll(model, sequences, 10_000, chunk_size=row["length"] // 3)
        assert count == row["tokens"]
        assert total / count == pytest.approx(row["nll"], rel=1e-5)


@pytest.mark.slow
def test_same_seed_same_results(tmp_path):
    args = ["strategy=clex", "base.steps=0", "eval.multipliers=[1,2]"]
    assert run.main(tiny_args(tmp_path / "a", *args)) == 0
    assert run.main(tiny_args(tmp_path / "b", *args)) == 0
    [a], [b] = [list(load_results(tmp_path / x).values()) for x in "ab"]
    assert a["train"]["final_loss"] == b["train"]["final_loss"]
    assert [r["nll"] for r in a["eval"]] == [r["nll"] for r in b["eval"]]
    assert run.main(tiny_args(tmp_path / "c", *args, "seed=1")) == 0
    [c] = load_results(tmp_path / "c").values()
    assert c["train"]["final_loss"] != a["train"]["final_loss"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["strategy=ntk"],
            "strategy='ntk' is not an option of group 'strategy'; "
            "choices: abf, clex, fbs, llama3, longrope, pi, rope, yarn",
        ),
        (["train.lenght=64"], "unknown config key 'train.lenght'; did you mean 'train.length'?"),
        (["train.length=abc"], "train.length must be an integer >= 2, got 'abc'"),
        (["train.length=1"], "train.length must be an integer >= 2, got 1"),
        (["strategy.max_scale=0.5"], "strategy.max_scale must be a number >= 1, got 0.5"),
        (["eval.lengths=[128,0]"], "eval.lengths must be positive integers, got [128, 0]"),
        (["eval.multipliers=[1,1.5]"], "eval.multipliers must be positive integers, got [1, 1.5]"),
        (["data=text", "data.paths=[/nonexistent/*.txt]"], "data.paths: no file matches '/nonexistent/*.txt'"),
        (["train.lr=nan"], "train.lr must be a finite number, got nan"),
        (["sampler.position=shuffled"], "unknown position sampler 'shuffled'; known: contiguous, extrapolated-random"),
        (["strategy=pi", "strategy.max_scale=4"], "unknown config key 'strategy.max_scale'"),
        (["model=hf", "model.path=/nonexistent"], "model.path: '/nonexistent' is not a directory"),
        (["train"], "argument 'train' is not key=value or group=option"),
        (
            ["trainer=fsdp", "+trainer.strategy.sharding=full"],
            "trainer.strategy.sharding is not an option of fsdp; "
            "allowed: reshard_after_forward, save_distributed_checkpoint",
        ),
        (
            ["model.attn_implementation=flash"],
            "model.attn_implementation must be one of sdpa, eager, flash_attention_2",
        ),
        pytest.param(
            ["model.attn_implementation=flash_attention_2"],
            "flash_attention_2 needs the flash-attn package",
            marks=pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="installed"),
        ),
        (["trainer=fsdp", "trainer.devices=0"], "trainer.devices must be a positive integer for fsdp, got 0"),
        pytest.param(
            ["trainer=deepspeed"],
            "trainer.strategy.name deepspeed needs the deepspeed package "
            "(pip install deepspeed), which is not installed, got 'deepspeed'",
            marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="installed"),
        ),
        (
            ["trainer=fsdp", "trainer.strategy.name=zero"],
            "trainer.strategy.name must be one of fsdp, deepspeed, got 'zero'",
        ),
    ],
)
def test_config_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert run.main([f"out_dir={out}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err
    assert not out.exists()


def test_command_line_error_has_no_traceback_and_cfg_prints_the_config(tmp_path):
    script = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
    bad = subprocess.run([sys.executable, script, "strategy.factor=x", "strategy=pi"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: strategy.factor must be a number >= 1, got 'x'"
    shown = subprocess.run(
        [sys.executable, script, "--cfg", "strategy=pi", "train.length=64"], capture_output=True, text=True
    )
    cfg = yaml.safe_load(shown.stdout)
    assert shown.returncode == 0 and cfg["strategy"]["name"] == "pi" and cfg["train"]["length"] == 64
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert "strategy  abf, clex, fbs, llama3, longrope, pi, rope, yarn" in helped.stdout


def save_tiny_hf_checkpoint(path, rope_parameters=None):
    """A tiny Llama saved by transformers itself, with a byte-level BPE tokenizer trained here."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import save_tiny_tokenizer

    fast = save_tiny_tokenizer(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=24,
        eos_token_id=fast.eos_token_id,
        **({"rope_parameters": rope_parameters} if rope_parameters else {}),
    )
    LlamaForCausalLM(config).save_pretrained(path)


@pytest.mark.slow
def test_a_transformers_checkpoint_runs_through_model_hf(tmp_path):
    save_tiny_hf_checkpoint(tmp_path / "ckpt")
    args = [
        f"out_dir={tmp_path / 'runs'}",
        "model=hf",
        f"model.path={tmp_path / 'ckpt'}",
        "strategy=clex",
        "strategy.max_scale=4",
        "train.length=24",
        "train.steps=2",
        "train.batch_size=2",
        "train.val_every=2",
        "train.val_batches=1",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=96",
        "data.max_documents=60",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [result] = load_results(tmp_path / "runs").values()
    assert result["original_length"] == 24  # L0 read from the checkpoint's config
    assert result["base"] is None  # a pretrained model skips stage 1
    assert [row["length"] for row in result["eval"]] == [24, 48] and all(r["tokens"] > 0 for r in result["eval"])
    assert run.main(args + ["model.original_length=12"]) == 0
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/results.json")]
    assert sorted(r["original_length"] for r in runs) == [12, 24]  # model.original_length overrides


@pytest.mark.slow
def test_a_llama3_checkpoint_is_extended_from_its_own_rope(tmp_path):
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 2.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 12,
    }
    save_tiny_hf_checkpoint(tmp_path / "ckpt", rope)
    args = [
        f"out_dir={tmp_path / 'runs'}",
        "model=hf",
        f"model.path={tmp_path / 'ckpt'}",
        "strategy=yarn",
        "strategy.factor=2",
        "train.steps=2",
        "train.batch_size=2",
        "train.val_every=2",
        "train.val_batches=1",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=96",
        "data.max_documents=60",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [result] = load_results(tmp_path / "runs").values()
    assert result["original_length"] == result["train_length"] == 24  # the context its llama3 rope covers
    saved = json.loads((tmp_path / "runs" / result["name"] / "model" / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "llama3"  # plain transformers still loads it as it was
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    import clex

    reloaded = clex.load_pretrained(tmp_path / "runs" / result["name"] / "model")  # scaled on from llama3 again
    llama3_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](reloaded.config)
    torch.testing.assert_close(clex.rotary_module(reloaded).strategy.base_inv_freq, llama3_inv_freq)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_results(tmp_path):
    import os
    import signal
    import time

    args = tiny_args(
        tmp_path / "x",
        "strategy=clex",
        "base.steps=0",
        "train.steps=300",
        "train.val_every=4",
        "eval.multipliers=[1,2]",
    )
    assert run.main(tiny_args(tmp_path / "uninterrupted", *args[1:])) == 0  # same config, another out_dir
    [expected] = load_results(tmp_path / "uninterrupted").values()
    script = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
    victim = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "x").glob("*/checkpoints/last.ckpt")):
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    [ckpt] = list((tmp_path / "x").glob("*/checkpoints/last.ckpt"))
    killed_at = torch.load(ckpt, weights_only=False)["global_step"]
    assert 4 <= killed_at < 300 and not list((tmp_path / "x").glob("*/results.json"))
    assert run.main(args) == 0  # the same command again
    [resumed] = load_results(tmp_path / "x").values()
    assert resumed["name"] == expected["name"]
    assert [r["nll"] for r in resumed["eval"]] == pytest.approx([r["nll"] for r in expected["eval"]], rel=1e-6)
    assert resumed["train"]["final_loss"] == pytest.approx(expected["train"]["final_loss"], rel=1e-6)


def run_two_cpu_processes(out, trainer, *args):
    args = tiny_args(
        out, *args, f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"
    )
    done = subprocess.run(
        [sys.executable, Path(__file__).resolve().parents[1] / "experiments" / "run.py", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = load_results(out).values()  # rank 0 alone writes results
    return result


# FSDP against one process: through DDP, which test_fsdp_matches_ddp_through_both_stages matches to 1e-5
@pytest.mark.parametrize("trainer,steps,tolerance", [("ddp", 1, 1e-6), ("ddp", 6, 1.5e-3)])
@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path, trainer, steps, tolerance):
    """After one step the two agree exactly: same global batch, averaged gradients, same t on both ranks
    (a rank seeing the wrong half of the data, or FSDP losing a shard, would break it). Later steps
    drift apart by float reduction order, which Adam's normalisation amplifies for near-zero
    gradients: 7e-4 after 6 steps."""
    common = [
        "strategy=clex",
        "base.steps=0",
        f"train.steps={steps}",
        f"train.val_every={steps}",
        "eval.multipliers=[1]",
        "train.lr=3e-3",
        "train.val_batches=2",
    ]
    assert run.main(tiny_args(tmp_path / "single", *common, "train.batch_size=4")) == 0
    two = run_two_cpu_processes(tmp_path / trainer, trainer, *common, "train.batch_size=2")
    [one] = load_results(tmp_path / "single").values()
    assert two["train"]["world_size"] == 2 and one["train"]["tokens"] == two["train"]["tokens"]
    assert two["train"]["final_val_loss"] == pytest.approx(one["train"]["final_val_loss"], rel=tolerance)
    assert two["eval"][0]["nll"] == pytest.approx(one["eval"][0]["nll"], rel=2 * tolerance)


@pytest.mark.slow
def test_fsdp_matches_ddp_through_both_stages_and_resumes_from_its_sharded_checkpoint(tmp_path):
    """FSDP shards weights, gradients and optimiser state where DDP replicates them: the same maths, so
    the same numbers through stage 1 (gathered onto every rank for stage 2), stage 2 with activation
    checkpointing, and the weights rank 0 gathers to evaluate. Run again, it resumes from the per-rank
    shards of the last step and, training nothing, must evaluate the very same weights."""
    common = [
        "strategy=clex",
        "model.num_layers=2",
        "base.steps=2",
        "train.steps=3",
        "train.val_every=3",
        "eval.multipliers=[1,2]",
        "train.lr=3e-3",
        "train.gradient_checkpointing=true",
    ]
    ddp = run_two_cpu_processes(tmp_path / "ddp", "ddp", *common)
    sharded = [*common, "trainer.strategy.save_distributed_checkpoint=true"]
    fsdp = run_two_cpu_processes(tmp_path / "fsdp", "fsdp", *sharded)
    assert fsdp["base"]["final_loss"] == pytest.approx(ddp["base"]["final_loss"], rel=1e-5)
    assert fsdp["train"]["final_val_loss"] == pytest.approx(ddp["train"]["final_val_loss"], rel=1e-5)
    assert [r["nll"] for r in fsdp["eval"]] == pytest.approx([r["nll"] for r in ddp["eval"]], rel=1e-5)
    run_dir = tmp_path / "fsdp" / fsdp["name"]
    assert sorted(p.name for p in (run_dir / "checkpoints" / "last.ckpt").iterdir() if p.suffix == ".distcp") == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    (run_dir / "results.json").unlink()
    again = run_two_cpu_processes(tmp_path / "fsdp", "fsdp", *sharded)
    assert [r["nll"] for r in again["eval"]] == pytest.approx([r["nll"] for r in fsdp["eval"]], rel=1e-6)


def run_variants(tmp_path, common, **variants) -> list[dict]:
    """One tiny run per variant (its extra overrides) in its own out_dir; their results, in order."""
    results = []
    for name, extra in variants.items():
        assert run.main(tiny_args(tmp_path / name, *common, *extra)) == 0
        [result] = load_results(tmp_path / name).values()
        results.append(result)
    return results


@pytest.mark.slow
def test_attention_implementation_switch_reaches_the_model_and_keeps_the_numbers(tmp_path):
    args = ["strategy=clex", "base.steps=0", "train.steps=2", "eval.multipliers=[1,4]"]
    sdpa, eager = run_variants(tmp_path, args, sdpa=[], eager=["model.attn_implementation=eager"])
    assert (sdpa["attn_implementation"], eager["attn_implementation"]) == ("sdpa", "eager")
    assert [r["nll"] for r in eager["eval"]] == pytest.approx([r["nll"] for r in sdpa["eval"]], rel=1e-5)


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_model(tmp_path):
    args = ["strategy=clex", "base.steps=0", "train.steps=3", "eval.multipliers=[1]"]
    plain, checkpointed = run_variants(tmp_path, args, plain=[], checkpointed=["train.gradient_checkpointing=true"])
    assert checkpointed["train"]["final_loss"] == pytest.approx(plain["train"]["final_loss"], rel=1e-5)
    assert checkpointed["eval"][0]["nll"] == pytest.approx(plain["eval"][0]["nll"], rel=1e-5)


@pytest.mark.slow
def test_a_run_that_only_scores_differently_reuses_the_fine_tuned_model(tmp_path, caplog):
    from safetensors.torch import load_file

    args = tiny_args(
        tmp_path, "strategy=clex", "base.steps=0", "train.steps=4", "train.val_every=2", "eval.multipliers=[1,2]"
    )
    assert run.main(args) == 0
    with caplog.at_level("INFO", logger="clex"):
        assert run.main(args + ["eval.stride=16"]) == 0  # another protocol: nothing to train
        assert run.main(args + ["train.lr=1e-3"]) == 0  # another training setting: trained
    runs = {
        (r["config"]["eval"].get("stride"), r["config"]["train"]["lr"]): r
        for r in (json.loads(p.read_text()) for p in tmp_path.glob("*/results.json"))
    }
    first, scored, retrained = runs[(None, 3.0e-4)], runs[(16, 3.0e-4)], runs[(None, 1e-3)]
    assert scored["train"]["reused_from"] == first["name"] and "reused_from" not in retrained["train"]
    assert caplog.text.count("its fine-tuned model is reused") == 1
    weights = [load_file(str(next((tmp_path / r["name"] / "model").glob("*.safetensors")))) for r in (first, scored)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert [row["tokens"] for row in scored["eval"]] != [] and scored["eval_protocol"]["stride"] == 16
