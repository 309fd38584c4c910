"""Evaluation and what a run writes: perplexity against length (and the tasks of clex/eval/tasks), the provenance and
numerics that let a table be traced, results.json, the run's figure and its printed table."""

import math
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import OmegaConf

from clex import io
from clex.analysis.stats import mean_ci
from clex.checkpoints.pretrained import save_pretrained, save_reference
from clex.data.windows import evaluation_sequences
from clex.eval.perplexity import (
    binned_nll,
    extrapolation_length,
    key_token_options,
    long_enough,
    sequence_nll,
    shared_sequences,
    sliding_windows,
)
from clex.eval.protocol import describe_protocol, protocol
from clex.eval.tasks import run_tasks
from clex.models import checkpoint_dir


def evaluate_lengths(cfg, prepared) -> tuple[list[dict], list[dict] | None]:
    """Perplexity at each evaluation length under the configured protocol (evaluate.protocol), and with
    ``eval.position_bins`` the mean NLL per position bin at the longest length (else None)."""
    rows, documents, bins = [], prepared.data.encoded("test"), None  # tokenised once, for every length
    lengths = prepared.eval_lengths
    if cfg.eval.get("documents") == "longest":
        documents = long_enough(documents, max(lengths))
    too_short = len(prepared.corpus.documents["test"]) - len(documents)  # counted as skipped at every length
    if cfg.eval.get("same_tokens"):  # the longest length's windows, cut into pieces for every other length
        longest, used, skipped = evaluation_sequences(documents, max(lengths), cfg.eval.max_tokens, cfg.eval.seed)
    keys = key_tokens(cfg, prepared)
    for length in lengths:
        scored = None
        if cfg.eval.get("stride"):
            sequences, scored, used, skipped = sliding_windows(
                documents, length, cfg.eval.stride, cfg.eval.max_tokens, cfg.eval.seed
            )
        elif cfg.eval.get("same_tokens"):
            sequences = shared_sequences(longest, length)
        else:
            sequences, used, skipped = evaluation_sequences(documents, length, cfg.eval.max_tokens, cfg.eval.seed)
        row = {
            "length": length,
            "ppl": None,
            "nll": None,
            "tokens": 0,
            "documents": used,
            "skipped_documents": skipped + too_short,
        }
        if len(sequences):
            by_position = bool(cfg.eval.get("position_bins")) and length == max(lengths)
            key_mask = keys.mask(sequences) if keys is not None else None
            out = score(cfg, prepared, row, sequences, scored, by_position, key_mask)
            if by_position:
                bins = binned_nll(out[2], len(sequences), prepared.original_length)
        rows.append(row)
    return rows, bins


def score(cfg, prepared, row: dict, sequences, scored, by_position: bool, key_mask) -> tuple:
    """Scores one length's sequences into ``row`` (PPL, NLL, tokens, tokens/s, the batch and chunk chosen, key-token
    PPL); returns sequence_nll's output (with the per-position NLL where ``by_position``)."""
    length = row["length"]
    cuda = torch.cuda.is_available() and next(prepared.model.parameters()).is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    tokens_per_batch, chunk_size = evaluation_batch(cfg.eval, prepared.model, length)
    row.update(tokens_per_batch=tokens_per_batch, chunk_size=chunk_size)
    out = sequence_nll(
        prepared.model,
        sequences,
        tokens_per_batch,
        chunk_size,
        scored,
        by_position=by_position,
        key_mask=key_mask,
        progress=Progress(length),
    )
    total, count = out[:2]
    if key_mask is not None:
        key_total, key_count = out[-2:]
        key_nll = key_total / key_count if key_count else None
        row.update(key_tokens=key_count, key_nll=key_nll, key_ppl=None if key_nll is None else exp_or_inf(key_nll))
    nll = total / count
    row.update(
        nll=nll,
        ppl=exp_or_inf(nll),
        tokens=count,
        tokens_per_second=count / max(time.time() - start, 1e-9),
        peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    )
    return out


def exp_or_inf(nll: float) -> float:
    return math.exp(nll) if nll < 700 else math.inf


class Progress:
    """Evaluation progress on stderr at one length, at most every ``every`` seconds: sequences done, tokens/s,
    time left (a 16k-token evaluation of a real model takes minutes)."""

    def __init__(self, length: int, every: float = 10.0):
        self.length, self.every = length, every
        self.start = self.last = time.time()

    def __call__(self, done: int, total: int, tokens: int):
        now = time.time()
        if now - self.last < self.every or done == total:
            return
        self.last, elapsed = now, now - self.start
        print(
            f"evaluation at {self.length}: {done}/{total} sequences, {tokens / elapsed:,.0f} tokens/s, "
            f"about {elapsed * (total - done) / done:.0f} s left",
            file=sys.stderr,
            flush=True,
        )


def activation_budget(model) -> float:
    """Bytes an evaluation forward's activations may take: half the GPU memory free now, or on a CPU
    memory.CPU_BUDGET (or a quarter of the memory available, if less)."""
    from clex.eval.memory import CPU_BUDGET, GPU_FRACTION

    device = next(model.parameters()).device
    if device.type == "cuda":
        return GPU_FRACTION * torch.cuda.mem_get_info(device)[0]
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return CPU_BUDGET
    return min(CPU_BUDGET, available / 4)


def evaluation_batch(eval_cfg, model, length: int) -> tuple[int, int | None]:
    """(tokens per forward, KV chunk or None) at ``length``: ``eval.tokens_per_batch`` / ``eval.chunk_size`` where
    given, else chosen by memory.plan from the model's shape and activation_budget."""
    from clex.eval.memory import plan

    given_tokens, given_chunk = eval_cfg.get("tokens_per_batch"), eval_cfg.get("chunk_size")
    if given_tokens is not None:
        return int(given_tokens), given_chunk
    c = model.config
    shape = {
        "hidden": c.hidden_size,
        "intermediate": getattr(c, "intermediate_size", None) or 4 * c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        "layers": c.num_hidden_layers,
    }
    act_bytes = 2 if next(model.parameters()).dtype in (torch.bfloat16, torch.float16) else 4
    eager = getattr(c, "_attn_implementation", "sdpa") == "eager"
    sequences, chunk = plan(shape, length, activation_budget(model), eager, act_bytes)
    return sequences * length, given_chunk or chunk


def key_tokens(cfg, prepared):
    """``eval.key_tokens``: the evaluator whose key tokens are scored beside every token (clex/eval/key_tokens.py)."""
    options = key_token_options(cfg.eval)
    if options is None:
        return None
    from clex.eval.key_tokens import KeyTokens

    return KeyTokens(
        options["evaluator"],
        prepared.original_length,
        options["threshold"],
        cfg.eval.tokens_per_batch or 16384,
        Path(cfg.out_dir) / ".key_tokens",
    )


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
