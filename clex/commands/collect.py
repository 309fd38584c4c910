"""Gather results.json files (and a study's trials) into one tidy CSV, one row per run x eval length,
and a summary per variant and length: n seeds, mean PPL, 95% Student-t interval (TABLE_summary.csv).

    python analysis/collect.py RUNS_DIR... [--study NAME --storage URL] [--out table.csv]
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from clex.cli import fail
from clex.registry import ConfigError


def study_run_dirs(name: str, storage: str) -> list[Path]:
    from clex.analysis import load_study

    study = load_study(name, storage)
    return [
        Path(d) / "results.json"
        for t in study.trials
        if t.state.name == "COMPLETE" and "run_dir" in t.user_attrs
        for d in t.user_attrs.get("run_dirs", [t.user_attrs["run_dir"]])
    ]  # every seed of the trial


def summary_text(summary: list[dict]) -> str:
    """PPL per variant (rows) and evaluation length (columns): mean ± 95% CI (n seeds)."""
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs", nargs="*", type=Path, help="run directories (searched recursively) or results.json files"
    )
    parser.add_argument("--study", help="an Optuna study whose complete trials' runs are added")
    parser.add_argument("--storage", help="the study's storage: a journal file or an RDB URL")
    parser.add_argument("--out", type=Path, default=Path("analysis/out/table.csv"))
    args = parser.parse_args(argv)
    from clex.analysis import SUMMARY_COLUMNS, aggregate, collect, write_csv

    try:
        paths = list(args.runs)
        if args.study:
            if not args.storage:
                raise ConfigError("--study needs --storage (the journal file or RDB URL of the sweep)")
            paths += study_run_dirs(args.study, args.storage)
        if not paths:
            raise ConfigError("give at least one run directory or --study/--storage")
        rows = collect(paths)
        if not rows:
            raise ConfigError(f"no results.json under {', '.join(map(str, args.runs))}")
    except ConfigError as error:
        return fail(error)
    runs = {r["run"]: r for r in rows}.values()
    corpora = Counter(r["corpus"] for r in runs)
    if len(corpora) > 1:  # reported, not mixed silently: the corpus column tells them apart
        print(
            f"warning: runs from {len(corpora)} corpus fingerprints "
            f"({json.dumps(dict(corpora))}); compare within one corpus",
            file=sys.stderr,
        )
    settings = Counter((r["original_length"], r["model"]) for r in runs)
    if len(settings) > 1:
        print(f"note: {len(settings)} (L0, model) settings: {sorted(settings)}", file=sys.stderr)
    write_csv(rows, args.out)
    summary = aggregate(rows)
    summary_path = args.out.with_name(f"{args.out.stem}_summary.csv")
    write_csv(summary, summary_path, SUMMARY_COLUMNS)
    from clex.stats import protocols_line

    print(protocols_line(row["protocol"] for row in rows))
    print(summary_text(summary))
    print(f"{len(rows)} rows from {len(runs)} runs -> {args.out}; per variant and length -> {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
