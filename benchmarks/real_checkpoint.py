"""A real checkpoint past its own L0, training-free: plain RoPE, PI, NTK-aware (static and dynamic), YaRN and
untrained CLEX on the same tokens at every length, passkey retrieval at the longest length for rope and YaRN,
and the memory estimate of `clex/config/cost.py` against the measured peak RSS of each process. Writes a
Markdown page (the literature's expectation beside each row) and the measurements as JSON.

    python benchmarks/real_checkpoint.py MODEL_DIR_OR_GGUF --out-dir RUNS --page docs/real_checkpoint.md
    python benchmarks/real_checkpoint.py --smoke     # a random tiny checkpoint: checks that it runs

Resumable: each configuration is one run folder under --out-dir, and a finished one (its results.json and its
measured peak in measurements.json) is not run again, so a killed invocation restarts where it stopped. The
corpus defaults to this interpreter's longest standard-library files (test split: pydoc_data/topics.py, the
English text of Python's documentation, and _pydecimal.py); --test-files takes others. The factor of every
static method is the longest length over L0 (x2 for 16k on an 8k model).
"""

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import tiny_checkpoint  # noqa: E402
from niah_agreement import from_gguf  # noqa: E402

from clex.commands import CONFIG_DIR  # noqa: E402
from clex.config.compose import single_config  # noqa: E402
from clex.config.cost import peak_memory  # noqa: E402
from clex.io import write_json, write_text  # noqa: E402

RUN = Path(__file__).resolve().parents[1] / "experiments" / "run.py"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEST_FILES = [STDLIB / "pydoc_data" / "topics.py", STDLIB / "_pydecimal.py"]
OTHER_FILES = {"paths": STDLIB / "typing.py", "validation_paths": STDLIB / "inspect.py"}
# Peng et al. (YaRN, 2023) and Chen et al. (PI, 2023), without fine-tuning
EXPECT = {
    "rope": "explodes past L0",
    "pi": "worse than rope at every length (positions compressed)",
    "ntk": "stays near its L0 value",
    "ntk-dynamic": "stays near its L0 value (rope itself up to L0)",
    "yarn": "stays near its L0 value",
    "clex": "as NTK-aware at alpha = 2t - 1 (no ODE training)",
}


def methods(factor: float) -> dict[str, list[str]]:
    f = f"{factor:g}"
    return {
        "rope": ["strategy=rope"],
        "pi": ["strategy=pi", f"strategy.factor={f}"],
        "ntk": ["strategy=fbs", f"strategy.factor={f}"],
        "ntk-dynamic": ["strategy=fbs", f"strategy.factor={f}", "strategy.eval_scale=dynamic"],
        "yarn": ["strategy=yarn", f"strategy.factor={f}"],
        "clex": ["strategy=clex", f"strategy.max_scale={max(factor, 1):g}"],
    }


def run(args, name: str, overrides: list[str], measured: dict) -> dict:
    """One experiments/run.py process (skipped when finished before): its results and its measured peak RSS."""
    folder = args.out_dir / name
    if (folder / "results.json").is_file() and name in measured:
        return measured[name]
    command = [sys.executable, str(RUN), *args.common, f"out_dir={args.out_dir}", f"name={name}", *overrides]
    cfg = single_config(CONFIG_DIR, [*args.common, f"out_dir={args.out_dir}", *overrides])
    lengths = list(cfg.eval.lengths or [])
    estimate, _ = peak_memory(cfg, max(lengths + [cfg.train.length if cfg.train.steps else 0]))
    print(f"{name}: {' '.join(overrides)}", file=sys.stderr, flush=True)
    start = time.time()
    with open(args.out_dir / f"{name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{name} failed: see {args.out_dir / name}.log")
    measured[name] = {
        "overrides": overrides,
        "wall_seconds": round(time.time() - start, 1),
        "peak_rss_gib": usage.ru_maxrss / 2**20,  # Linux reports KiB
        "estimate_gib": estimate / 2**30,
        "results": json.loads((folder / "results.json").read_text()),
    }
    write_json(args.out_dir / "measurements.json", measured)
    return measured[name]


def ppl_row(name, record, lengths) -> str:
    by_length = {row["length"]: row["ppl"] for row in record["results"]["eval"]}
    cells = " | ".join(f"{by_length[n]:.2f}" if n in by_length else "-" for n in lengths)
    return f"| {name} | {cells} | {EXPECT[name]} |"


def verdict(measured, lengths, l0) -> list[str]:
    """Each expectation read off the table by a stated rule."""
    ppl = {n: {r["length"]: r["ppl"] for r in m["results"]["eval"]} for n, m in measured.items() if n in EXPECT}
    within, longest = [n for n in lengths if n <= l0], lengths[-1]
    if not within or "rope" not in ppl or longest <= l0:
        return ["(no length at or below L0 and one past it: nothing to read)"]
    home = within[-1]
    lines = []
    rope_ratio = ppl["rope"][longest] / ppl["rope"][home]
    lines.append(
        f"- rope explodes past L0 (PPL at {longest} over {home} > 2): {rope_ratio:.2f}, "
        + ("agrees" if rope_ratio > 2 else "does not agree")
    )
    if "pi" in ppl:
        worse = all(ppl["pi"][n] > ppl["rope"][n] for n in within)
        lines.append(f"- PI worse than rope at every length within L0: {'agrees' if worse else 'does not agree'}")
    for name in ("ntk", "ntk-dynamic", "yarn", "clex"):
        if name in ppl:
            ratio = ppl[name][longest] / ppl["rope"][home]
            lines.append(
                f"- {name} near rope's L0 value (PPL at {longest} over rope's at {home} < 1.25): "
                f"{ratio:.2f}, " + ("agrees" if ratio < 1.25 else "does not agree")
            )
    return lines


def page(args, measured, lengths, l0, factor) -> str:
    total = sum(m["wall_seconds"] for m in measured.values()) / 60
    header = " | ".join(str(n) for n in lengths)
    lines = [
        "# A real checkpoint past its L0, training-free",
        "",
        f"Checkpoint: `{args.source}` (L0 = {l0}); corpus: {args.corpus}. Every length scores the same "
        f"{args.sequences} x {lengths[-1]} tokens (`eval.same_tokens=true`: the shorter lengths cut each window into "
        "consecutive pieces), one or two sequences per length, enough for effects of this size and no more. Static "
        f"factors x{factor:g} (the longest length over L0). Made by (resumable; {total:.0f} min of runs on this "
        "machine, 2 CPU cores):",
        "",
        f"    python benchmarks/real_checkpoint.py {args.source} --out-dir RUNS --page docs/real_checkpoint.md",
        "",
        "## Perplexity against length",
        "",
        f"| method | {header} | expected (Peng et al. 2023; Chen et al. 2023) |",
        "|---" * (len(lengths) + 2) + "|",
        *(ppl_row(n, measured[n], lengths) for n in EXPECT if n in measured),
        "",
        *verdict(measured, lengths, l0),
        "",
        "## Passkey retrieval at the longest length",
        "",
        f"Accuracy over {args.passkey_trials} random keys x 3 depths (0, 0.5, 1); every answer in the run's "
        "passkey_samples.jsonl.",
        "",
        "| method | length | accuracy |",
        "|---|---|---|",
    ]
    for name in ("rope", "yarn"):
        passkey = (measured.get(name) or {}).get("results", {}).get("tasks", {}).get("passkey", {})
        for length, accuracy in passkey.items():
            lines.append(f"| {name} | {length} | {accuracy:.2f} |")
    lines += [
        "",
        "## Memory: the estimate against the measured peak",
        "",
        "The estimate is `clex/config/cost.py`'s (what a run is refused by); the peak is the process's maximum RSS.",
        "",
        "| run | estimated GiB | measured GiB | ratio | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, m in measured.items():
        estimate, peak = m["estimate_gib"], m["peak_rss_gib"]
        lines.append(f"| {name} | {estimate:.2f} | {peak:.2f} | {estimate / peak:.2f} | {m['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def arguments(scratch: Path):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="a transformers checkpoint folder or a .gguf file")
    parser.add_argument("--out-dir", type=Path)
    parser.add_argument("--page", type=Path, help="the Markdown page to write (default: OUT_DIR/real_checkpoint.md)")
    parser.add_argument("--lengths", type=lambda s: [int(n) for n in s.split(",")], default=[4096, 8192, 16384])
    parser.add_argument("--sequences", type=int, default=2, help="windows of the longest length")
    parser.add_argument("--passkey-trials", type=int, default=2)
    parser.add_argument("--memory-lengths", type=lambda s: [int(n) for n in s.split(",")], default=[2048, 8192, 16384])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.out_dir = str(tiny_checkpoint(scratch / "model")), scratch / "runs"
        args.lengths, args.sequences, args.passkey_trials, args.memory_lengths = [2048, 8192], 1, 1, [2048]
    if not args.model or not args.out_dir:
        parser.error("give MODEL_DIR_OR_GGUF and --out-dir (or --smoke)")
    args.source, args.out_dir = args.model, args.out_dir.resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return args


def checkpoint_folder(args) -> Path:
    """The checkpoint as a transformers folder (a .gguf file converted once, into OUT_DIR/checkpoint)."""
    model = Path(args.model).resolve()
    if model.suffix == ".gguf":
        converted = args.out_dir / "checkpoint"
        model = converted if (converted / "config.json").is_file() else from_gguf(model, converted)
    return model


def measure_memory(args, measured: dict):
    """Evaluation at each memory length, and a few fine-tuning steps at the shortest: their peak memory."""
    for length in [] if args.smoke else args.memory_lengths:  # the smoke's rope run took this path already
        run(
            args,
            f"memory-eval-{length}",
            ["strategy=rope", f"eval.lengths=[{length}]", f"eval.max_tokens={length}"],
            measured,
        )
    short = min(args.memory_lengths)
    finetune = ["strategy=rope", "train.steps=3", f"train.length={short}", "train.batch_size=1"]
    run(args, f"memory-finetune-{short}", [*finetune, f"eval.lengths=[{short}]", f"eval.max_tokens={short}"], measured)


def main():
    scratch = tempfile.TemporaryDirectory()
    args = arguments(Path(scratch.name))
    model = checkpoint_folder(args)
    l0 = json.loads((model / "config.json").read_text())["max_position_embeddings"]
    files = {k: f"[{v}]" for k, v in OTHER_FILES.items()}
    args.corpus = (
        "the longest files of this interpreter's standard library (test split: "
        + ", ".join(f.name for f in TEST_FILES)
        + ")"
    )
    args.common = [
        "model=hf",
        f"model.path={model}",
        "train.steps=0",
        "data=text",
        f"data.paths={files['paths']}",
        f"data.validation_paths={files['validation_paths']}",
        f"data.test_paths=[{','.join(map(str, TEST_FILES))}]",
        "trainer.enable_progress_bar=false",
    ]
    lengths, factor = sorted(args.lengths), max(args.lengths) / l0
    listed = f"eval.lengths=[{','.join(map(str, lengths))}]"
    ppl = [listed, "eval.same_tokens=true", f"eval.max_tokens={args.sequences * lengths[-1]}"]
    passkey = [
        "eval=passkey",
        f"eval.passkey.multipliers=[{lengths[-1] / l0:g}]",
        "eval.passkey.depths=[0.0,0.5,1.0]",
        f"eval.passkey.trials={args.passkey_trials}",
    ]
    record = args.out_dir / "measurements.json"
    measured = json.loads(record.read_text()) if record.is_file() else {}
    for name, overrides in methods(factor).items():
        if args.smoke and name != "rope":
            continue  # the smoke checks the code paths, not the methods
        run(args, name, [*overrides, *ppl, *(passkey if name in ("rope", "yarn") else [])], measured)
    measure_memory(args, measured)
    text = page(args, measured, lengths, l0, factor)
    write_text(args.page or args.out_dir / "real_checkpoint.md", text)
    print(text)


if __name__ == "__main__":
    main()
