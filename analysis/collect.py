"""Gather results.json files (and a study's trials) into one tidy CSV: one row per run x eval length.

    python analysis/collect.py RUNS_DIR... [--study NAME --storage URL] [--out table.csv]
"""
import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clex.registry import ConfigError  # noqa: E402


def study_run_dirs(name: str, storage: str) -> list[Path]:
    from clex.analysis import load_study

    study = load_study(name, storage)
    return [Path(t.user_attrs["run_dir"]) / "results.json" for t in study.trials
            if t.state.name == "COMPLETE" and "run_dir" in t.user_attrs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run directories (searched recursively) or results.json files")
    parser.add_argument("--study", help="an Optuna study whose complete trials' runs are added")
    parser.add_argument("--storage", help="the study's storage: a journal file or an RDB URL")
    parser.add_argument("--out", type=Path, default=Path("analysis/out/table.csv"))
    args = parser.parse_args(argv)
    from clex.analysis import collect, write_csv

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
        print(f"error: {error}", file=sys.stderr)
        return 2
    runs = {r["run"]: r for r in rows}.values()
    corpora = Counter(r["corpus"] for r in runs)
    if len(corpora) > 1:  # reported, not mixed silently: the corpus column tells them apart
        print(f"warning: runs from {len(corpora)} corpus fingerprints "
              f"({json.dumps(dict(corpora))}); compare within one corpus", file=sys.stderr)
    settings = Counter((r["original_length"], r["model"]) for r in runs)
    if len(settings) > 1:
        print(f"note: {len(settings)} (L0, model) settings: {sorted(settings)}", file=sys.stderr)
    write_csv(rows, args.out)
    print(f"{len(rows)} rows from {len(runs)} runs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
