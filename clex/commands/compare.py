"""comparison.md from finished runs: per variant and length, mean PPL ± 95% CI over seeds, paired
differences against a reference, the runs; and the figure with bands. The same report as a comma list
of experiments/run.py writes, for runs made by separate commands or collected from several places.

    python analysis/compare.py RUNS_DIR_OR_RESULTS... [--reference rope] [--out DIR] [--no-runs]
"""

import argparse
import sys
from pathlib import Path

from clex.cli import fail
from clex.registry import ConfigError


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
    parser.add_argument("--out", type=Path, default=Path("analysis/out/comparison"))
    parser.add_argument("--no-runs", action="store_true", help="leave out the per-run table")
    args = parser.parse_args(argv)
    from clex.analysis import read_results, rows_of
    from clex.report import write_comparison

    try:
        results = []
        for root in args.runs:
            if not root.exists():
                raise ConfigError(f"{root}: no such file or directory")
            for path in [root] if root.is_file() else sorted(root.rglob("results.json")):
                if ".base" not in path.parts:
                    results.append(read_results(path))
                    try:
                        rows_of(results[-1], str(path))  # the same checks as collect
                    except (KeyError, TypeError) as error:
                        raise ConfigError(
                            f"{path}: not a clex results.json ({type(error).__name__}: {error})"
                        ) from None
        if not results:
            raise ConfigError(f"no results.json under {', '.join(map(str, args.runs))}")
    except ConfigError as error:
        return fail(error)
    print(write_comparison(results, args.out, args.reference, runs=not args.no_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
