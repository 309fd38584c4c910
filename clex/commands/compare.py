"""comparison.md from finished runs: per variant and length, mean PPL ± 95% CI over seeds, paired
differences against a reference, the runs; and the figure with bands. The same report as a comma list
of experiments/run.py writes, for runs made by separate commands or collected from several places.

The report goes to a folder named for its runs (analysis/out/comparison-<strategies>-<hash of the run
names>), with runs.json listing them: the same runs again rewrite it; an --out holding another
comparison is refused unless --force. A malformed run is skipped with a warning (--strict: refused).

    python analysis/compare.py RUNS_DIR_OR_RESULTS... [--reference rope] [--where KEY=VALUE ...] [--out DIR] [--force]
        [--strict] [--no-runs]

``--where data.name=text``: only the runs whose resolved config has that value (dotted keys; repeatable, all
must hold). Runs of different settings are compared within each setting, never paired across.
"""

import argparse
import json
import sys
from pathlib import Path

from clex.commands.cli import fail
from clex.errors import ConfigError, warn

OUT = Path("analysis/out")


def check_target(target: Path, results: list[dict], force: bool = False):
    """Refuse (ConfigError) a ``target`` that is a file, or that holds the comparison.md of other runs than
    ``results`` (by its runs.json), unless ``force``: the same runs again rewrite their own comparison."""
    from clex.analysis.comparison import RUNS, runs_record

    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {target} is a file, not a folder")
    if force or not (target / "comparison.md").exists():
        return
    ours = {(r["name"], r["variant_id"], r["seed"]) for r in runs_record(results)}
    try:
        theirs = {(r["name"], r["variant_id"], r["seed"]) for r in json.loads((target / RUNS).read_text())["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{target} holds a comparison.md that does not say which runs it compared (no readable {RUNS}); "
            "--force replaces it, or choose another --out"
        ) from None
    if theirs != ours:
        raise ConfigError(
            f"{target} holds the comparison of other runs ({len(theirs)} runs, {len(theirs - ours)} of them not "
            f"among these {len(ours)}); --force replaces it, or choose another --out"
        )


def where(runs, conditions: list[str]) -> list[dict]:
    """The runs whose resolved config has every ``key=value`` (values compared as the config reads them)."""
    from clex.config.identity import current_key
    from clex.config.values import flat_keys, parse_value

    wanted = {}
    for condition in conditions:
        key, sep, raw = condition.partition("=")
        if not sep or not key:
            raise ConfigError(f"--where {condition!r}: write KEY=VALUE, e.g. --where data.name=text")
        wanted[current_key(key)] = parse_value(raw, key)  # results are read in today's layout
    kept = [
        r
        for _, r in runs
        if all(flat_keys(r.get("config") or {}, sections=False).get(k) == v for k, v in wanted.items())
    ]
    if conditions and not kept:
        raise ConfigError(f"--where {' '.join(conditions)}: no run has that; nothing to compare")
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "runs", nargs="+", type=Path, help="run directories (searched recursively) or results.json files"
    )
    parser.add_argument(
        "--reference",
        default="rope",
        help="a variant's label (e.g. clex) or a strategy; paired differences are taken against it",
    )
    parser.add_argument("--out", type=Path, help=f"the folder (default: one named for the runs, under {OUT}/)")
    parser.add_argument("--force", action="store_true", help="replace the comparison of other runs in --out")
    parser.add_argument("--strict", action="store_true", help="refuse a malformed run instead of skipping it")
    parser.add_argument("--no-runs", action="store_true", help="leave out the per-run table")
    parser.add_argument(
        "--where", action="append", default=[], metavar="KEY=VALUE", help="keep the runs whose config has it"
    )
    args = parser.parse_args(argv)
    from clex.analysis.collection import read_runs, tokenizers_warning
    from clex.analysis.comparison import comparison_dir, write_comparison

    try:
        results = where(read_runs(args.runs, args.strict), args.where)
        target = args.out or comparison_dir(OUT, results)
        check_target(target, results, args.force)
    except ConfigError as error:
        return fail(error)
    if warning := tokenizers_warning(results):
        warn(warning)
    try:
        print(write_comparison(results, target, args.reference, runs=not args.no_runs))
    except OSError as error:
        return fail(f"{target}: cannot write the comparison ({error.strerror or error})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
