"""Gather results.json files (and a study's trials) into one tidy CSV, one row per run x eval length,
and a summary per variant and length: n seeds, mean PPL, 95% Student-t interval (TABLE_summary.csv).
Runs with evaluation tasks (eval=passkey, ruler, harness: clex/eval/tasks) add TABLE_tasks.csv (one row per
run x task x length) and TABLE_tasks_summary.csv (per variant, task and length). Every value is checked before
anything is written; a malformed run is skipped with a warning naming it (--strict: refused, nothing written).

    python analysis/collect.py RUNS_DIR... [--study NAME --storage URL] [--out table.csv] [--strict]
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from clex.commands.cli import fail
from clex.errors import ConfigError


def study_run_dirs(name: str, storage: str) -> list[Path]:
    from clex.analysis.tables import load_study

    study = load_study(name, storage)
    return [
        Path(d) / "results.json"
        for t in study.trials
        if t.state.name == "COMPLETE" and "run_dir" in t.user_attrs
        for d in t.user_attrs.get("run_dirs", [t.user_attrs["run_dir"]])
    ]  # every seed of the trial


def summary_text(summary: list[dict]) -> str:
    """PPL per variant (rows) and evaluation length (columns): mean ± 95% CI (n seeds)."""
    if not summary:
        return "no finite PPL to summarise"
    lengths = sorted({s["length"] for s in summary})
    cells = {}
    for s in summary:
        cells.setdefault((s["variant"], s["train_length"]), {})[s["length"]] = s["interval"]
    width = max(len(v) for v, _ in cells) + 2
    lines = [f"{'variant':<{width}}{'L':>6} " + "".join(f"{n:>28}" for n in lengths)]
    for (variant, train_length), by_length in cells.items():
        row = [
            "-"
            if n not in by_length
            else by_length[n].format()
            if by_length[n].n == 1
            else f"{by_length[n].format()} (n={by_length[n].n})"
            for n in lengths
        ]
        lines.append(f"{variant:<{width}}{train_length:>6} " + "".join(f"{c:>28}" for c in row))
    return "\n".join(lines)


def notes(rows: list[dict], runs: list[dict]) -> list[str]:
    """What sets the collected runs apart beyond their variants: corpora, tokenizers, (L0, model) settings."""
    from clex.analysis.collection import tokenizers_warning

    lines = []
    corpora = Counter(r["corpus"] for r in {r["run"]: r for r in rows}.values())
    if len(corpora) > 1:  # reported, not mixed silently: the corpus column tells them apart
        lines.append(
            f"warning: runs from {len(corpora)} corpus fingerprints ({json.dumps(dict(corpora))}); "
            "compare within one corpus"
        )
    if tokenizers := tokenizers_warning(runs):
        lines.append(f"warning: {tokenizers}")
    settings = Counter((r["original_length"], r["model"]) for r in {r["run"]: r for r in rows}.values())
    if len(settings) > 1:
        lines.append(f"note: {len(settings)} (L0, model) settings: {sorted(settings)}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs", nargs="*", type=Path, help="run directories (searched recursively) or results.json files"
    )
    parser.add_argument("--study", help="an Optuna study whose complete trials' runs are added")
    parser.add_argument("--storage", help="the study's storage: a journal file or an RDB URL")
    parser.add_argument("--out", type=Path, default=Path("analysis/out/table.csv"))
    parser.add_argument("--strict", action="store_true", help="refuse a malformed run instead of skipping it")
    args = parser.parse_args(argv)
    from clex.analysis import tables as analysis
    from clex.analysis.collection import read_runs, tables, write_together
    from clex.eval.protocol import protocols_line

    out = args.out
    named = {key: out.with_name(f"{out.stem}_{key}.csv") for key in ("summary", "tasks", "tasks_summary")}
    try:
        paths = list(args.runs)
        if args.study:
            if not args.storage:
                raise ConfigError("--study needs --storage (the journal file or RDB URL of the sweep)")
            paths += study_run_dirs(args.study, args.storage)
        if not paths:
            raise ConfigError("give at least one run directory or --study/--storage")
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; give the table's file name (e.g. {out / 'table.csv'})")
        runs = read_runs(paths, args.strict)
        rows, tasks = tables(runs)
        summary = analysis.aggregate(rows)
        texts = {out: analysis.csv_text(rows), named["summary"]: analysis.csv_text(summary, analysis.SUMMARY_COLUMNS)}
        if tasks:
            by_task = analysis.aggregate(tasks, "score", ("task", "length"))
            texts[named["tasks"]] = analysis.csv_text(tasks, analysis.TASK_COLUMNS)
            texts[named["tasks_summary"]] = analysis.csv_text(by_task, analysis.TASK_SUMMARY_COLUMNS)
        report = [protocols_line(row["protocol"] for row in rows), summary_text(summary)]
    except ConfigError as error:
        return fail(error)
    try:
        write_together(texts)
    except OSError as error:
        return fail(f"--out {out}: cannot write ({error.strerror or error}); nothing written")
    for line in notes(rows, [results for _, results in runs]):
        print(line, file=sys.stderr)
    stale = [p for key, p in named.items() if key.startswith("tasks") and p not in texts and p.is_file()]
    for path in stale:  # another collection's: it would be read beside this one's table
        path.unlink()
        print(f"note: removed {path} (no run here has task scores)", file=sys.stderr)
    print("\n".join(report))
    task_line = f"; task scores -> {named['tasks']}, {named['tasks_summary']}" if tasks else ""
    print(f"{len(rows)} rows from {len(runs)} runs -> {out}; per variant and length -> {named['summary']}{task_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
