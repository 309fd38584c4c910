"""The miniature report: runs the sweeps of each part through their own storage (a rerun skips
finished trials and reuses finished runs), then writes docs/miniature/README.md and its figures.

    python analysis/miniature_report.py [--parts table1,ablations,scaling] [--analyse-only] [overrides...]

Overrides go to every sweep (e.g. trainer=gpu for a cluster node). Every table is mean ± 95% CI
over seeds 0, 1, 2; claims are read off paired intervals.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from clex.commands import SWEEP_DIR
from clex.commands.cli import fail
from clex.errors import ConfigError
from clex.reports.official import SWEEPS_200, SWEEPS_800

PARTS = {
    "table1_4x": [
        "miniature_table1_4x",
        "miniature_table1_4x_yarn16",
        "miniature_table1_4x_clex",
        "miniature_table1_4x_clex_scale",
    ],
    "table1": ["miniature_table1"],
    "ablations": [
        "clex_dynamics",
        "clex_positions",
        "clex_max_scale",
        "clex_amplification",
        "clex_log_scale",
        "clex_eval_rule",
        "baseline_eval_rule",
    ],
    "scaling": ["miniature_scaling"],
    "official": [*SWEEPS_200, *SWEEPS_800],  # their key-token pass: python analysis/official_report.py
}


def run_sweep(name: str, out: Path, overrides: list[str], study: str | None = None) -> float:
    """The sweep ``name`` into out/studies/<study or name>.journal (another journal: the same sweep run again with
    other evaluation overrides, its runs reused)."""
    start = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clex.commands.sweep",
            f"sweep={name}",
            f"out_dir={out}",
            f"study.storage={out / 'studies' / ((study or name) + '.journal')}",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
    )
    if done.returncode:
        raise ConfigError(f"sweep {name} ended with exit code {done.returncode}; rerun to resume it")
    return time.time() - start


def study_results(name: str, out: Path, study: str | None = None) -> list[dict]:
    """The results of the complete trials' runs, in the order of the sweep file's choices."""
    from clex.analysis.tables import load_study, read_results
    from clex.config.identity import current_key

    journal = out / "studies" / f"{study or name}.journal"
    if not journal.is_file():
        return []
    loaded = load_study(name, str(journal))
    space = yaml.safe_load((SWEEP_DIR / f"{name}.yaml").read_text())["space"]

    def order(trial):  # the first choices first: they are the reference of the paired tables
        params = {current_key(k): v for k, v in trial.params.items()}  # as the study recorded them, maybe before a move
        return [space[k]["choices"].index(params[k]) for k in space if params.get(k) in space[k]["choices"]]

    trials = sorted((t for t in loaded.trials if t.state.name == "COMPLETE"), key=order)
    return [read_results(Path(d) / "results.json") for t in trials for d in t.user_attrs["run_dirs"]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--out-runs", type=Path, default=Path("runs") / "miniature")
    parser.add_argument("--out", type=Path, default=Path("docs") / "miniature")
    parser.add_argument("--analyse-only", action="store_true", help="write the report from what is finished")
    args, overrides = parser.parse_known_args(argv)
    parts = [p.strip() for p in args.parts.split(",")]
    try:
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ConfigError(f"--parts: unknown part(s) {', '.join(unknown)}; choices: {', '.join(PARTS)}")
        if not args.analyse_only:
            for part in parts:
                for name in PARTS[part]:
                    run_sweep(name, args.out_runs, overrides)
    except ConfigError as error:
        return fail(error)
    from clex import io
    from clex.reports.miniature import write_report

    text = write_report({name: study_results(name, args.out_runs) for part in PARTS for name in PARTS[part]}, args.out)
    io.write_text(args.out / "README.md", text)
    print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
