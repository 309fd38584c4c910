"""What a run writes: its evaluation (train/evaluation.py) and tasks (clex/eval/tasks) in results.json, with the
provenance and numerics that let a table be traced, the run's figure and its printed table."""

import math
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import OmegaConf

from clex import io
from clex.analysis.stats import mean_ci
from clex.checkpoints.pretrained import save_pretrained, save_reference
from clex.eval.perplexity import (
    extrapolation_length,
    key_token_options,
)
from clex.eval.protocol import describe_protocol, protocol
from clex.eval.tasks import run_tasks
from clex.models import checkpoint_dir
from clex.train.evaluation import evaluate_lengths


def provenance() -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for package in ("torch", "transformers", "lightning", "torchdiffeq", "omegaconf", "numpy", "tokenizers", "optuna"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"git_commit": commit, "python": platform.python_version(), "packages": versions, "numerics": numerics()}


def numerics() -> dict:
    """What moves float results between runs of one seed: threads, hardware, determinism."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return {
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def format_table(results: dict) -> str:
    lines = [
        f"strategy {results['strategy']}  L={results['train_length']}  L0={results['original_length']}",
        f"perplexity: {describe_protocol(results.get('eval_protocol'))}",
        f"{'length':>8} {'ppl':>9} {'nll':>8} {'tokens':>8} {'docs':>5}",
    ]
    keys = any("key_tokens" in row for row in results["eval"])
    if keys:
        lines[-1] += f" {'key ppl':>9} {'key tok':>8}"
    for row in results["eval"]:
        ppl = f"{row['ppl']:.3f}" if row["ppl"] is not None else "-"
        nll = f"{row['nll']:.4f}" if row["nll"] is not None else "-"
        line = f"{row['length']:>8} {ppl:>9} {nll:>8} {row['tokens']:>8} {row['documents']:>5}"
        if keys:
            key_ppl = f"{row['key_ppl']:.3f}" if row.get("key_ppl") is not None else "-"
            line += f" {key_ppl:>9} {row.get('key_tokens', 0):>8}"
        lines.append(line)
    batches = [
        f"{row['length']}: {row['tokens_per_batch'] // row['length']} x {row['length']}"
        + (f" in KV chunks of {row['chunk_size']}" if row.get("chunk_size") else "")
        for row in results["eval"]
        if row.get("tokens_per_batch")
    ]
    if batches:
        lines.append(f"sequences per forward (eval.tokens_per_batch, eval.chunk_size): {', '.join(batches)}")
    if results.get("position_nll"):
        lines.append(
            f"NLL by position at {results['eval'][-1]['length']}: "
            + ", ".join(f"{b['start']}-{b['end']}: {b['nll']:.4f}" for b in results["position_nll"])
        )
    ext = results["extrapolation_length"]
    if ext["value"] is not None:
        bound = " (lower bound: every length stayed within)" if ext["censored"] else ""
        at = ext.get("reference", results["train_length"])
        lines.append(f"extrapolation length (PPL within {1 + ext['eps']:g} x PPL at {at}): {ext['value']:.0f}{bound}")
    lines += task_table(results.get("tasks", {}), results.get("task_metrics", {}))
    return "\n".join(lines)


def task_table(scores: dict, metrics: dict) -> list[str]:
    """The evaluation tasks' scores as a table like perplexity's: a row per task, a column per length."""
    if not scores:
        return []
    lengths = sorted(
        {n for cells in scores.values() for n in cells}, key=lambda n: (n == "all", int(n) if n != "all" else 0)
    )
    width = max(len(task) for task in scores)
    lines = [f"{'task':<{width}} " + " ".join(f"{n:>7}" for n in lengths) + "  metric"]
    for task, cells in scores.items():
        values = " ".join(f"{cells[n]:>7.3f}" if n in cells else f"{'-':>7}" for n in lengths)
        lines.append(f"{task:<{width}} {values}  {metrics.get(task, '')}")
    return lines


def training_summary(cfg, trained) -> dict:
    """Stage 2 as results.json reports it; a run that reused another's fine-tuned model reports that run's."""
    if trained.reused is not None:
        return trained.reused
    metrics = trained.trainer.callback_metrics
    return {
        "steps": cfg.train.steps,
        "tokens": trained.tokens,
        "wall_seconds": trained.seconds,
        "world_size": trained.trainer.world_size,
        "final_loss": float(metrics.get("train/loss", math.nan)),
        "final_val_loss": float(metrics.get("val/loss", math.nan)),
    }


def write_results(cfg, prepared, run_dir: Path, trained, base: dict | None, started: float) -> dict:
    """Evaluate on the training device in its precision (Lightning moves the model to the CPU after
    fit), save the model, write results.json and the run's figure."""
    trainer, t = trained.trainer, cfg.train
    prepared.model.to(trainer.strategy.root_device)
    with trainer.precision_plugin.forward_context():
        rows, bins = evaluate_lengths(cfg, prepared)
        task_scores, task_metrics = run_tasks(cfg, prepared, run_dir)
    tokenizer = getattr(prepared.tokenizer, "tokenizer", None)  # a pretrained model's own tokenizer
    if cfg.model.name == "hf" and not cfg.train.steps:  # trained nothing: point at the checkpoint, never copy it
        save_reference(prepared.model, run_dir / "model", checkpoint_dir(cfg.model), tokenizer=tokenizer)
    else:
        save_pretrained(prepared.model, run_dir / "model", tokenizer=tokenizer)
    results = {
        "schema_version": io.SCHEMA_VERSION,
        "name": run_dir.name,
        "run_dir": str(run_dir.resolve()),
        "strategy": cfg.strategy.name,
        "choices": OmegaConf.to_container(cfg.choices),
        "original_length": prepared.original_length,
        "train_length": t.length,
        "max_scale": getattr(prepared.rope_strategy, "max_scale", None),
        "eval": rows,
        "eval_protocol": protocol(cfg.eval),
        "key_tokens": key_token_options(cfg.eval),
        "extrapolation_length": extrapolation_length(rows, prepared.reference_length, cfg.eval.eps),
        "position_nll": bins,
        "train": training_summary(cfg, trained),
        "base": base,
        "tasks": task_scores,
        "task_metrics": task_metrics,
        "parameters": sum(p.numel() for p in prepared.model.parameters()),
        "attn_implementation": prepared.model.config._attn_implementation,
        "precision": str(cfg.trainer.get("precision")),
        "corpus": prepared.corpus.fingerprint,
        "tokenizer": prepared.tokenizer.describe(),
        "wall_seconds": time.time() - started + trained.seconds_before,  # a resumed run: with its training before
        "seed": cfg.seed,
        "config": OmegaConf.to_container(cfg, resolve=True),
        **provenance(),
    }
    io.write_json(run_dir / "results.json", results)
    plot_run(results, run_dir / "ppl_vs_length.png")
    return results


def plot_run(results: dict, path, formats=("png",)):
    """One run: PPL against evaluation length, the training length dotted."""
    from clex.plots import plot_ppl_intervals

    curve = {
        row["length"]: mean_ci([row["ppl"]])
        for row in results["eval"]
        if row["ppl"] is not None and row["ppl"] < float("inf")
    }
    plot_ppl_intervals({results["strategy"]: curve}, [results["train_length"]], path, formats)
