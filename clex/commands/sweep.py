"""An Optuna sweep worker: creates or joins the study and runs trials until it has its count.

    python sweeps/run.py sweep=clex_lambda [study.n_trials=N] [study.storage=URL] [experiment overrides]
    python sweeps/run.py sweep=clex_lambda --summary

Start the same command in several processes (or cluster jobs) to share one study; rerun it to resume.
"""

import os
import sys
from pathlib import Path

from clex.cli import fail
from clex.commands import CONFIG_DIR, SWEEP_DIR
from clex.registry import ConfigError, TooManyFailures

STUDIES_DIR = Path("sweeps") / "studies"  # the default storage folder, under the folder it runs from


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        sweeps = ", ".join(sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))
        print(f"{__doc__.strip()}\n\nsweeps: {sweeps}")
        return 0
    show_summary = "--summary" in argv
    args = [a for a in argv if a != "--summary"]
    try:
        pairs = []
        for arg in args:
            if "=" not in arg:
                raise ConfigError(f"argument {arg!r} is not key=value (see --help)")
            pairs.append(tuple(arg.split("=", 1)))
        name = dict(pairs).get("sweep")
        if not name:
            raise ConfigError(
                f"sweep=<name> is required; choices: {', '.join(sorted(p.stem for p in SWEEP_DIR.glob('*.yaml')))}"
            )
        from clex.cli import quiet_libraries

        quiet_libraries()
        from clex.sweeps import TRIAL_ENV, TrialChannel, follow_rank_zero, load_sweep, run_worker, srun_rank, summary

        sweep = load_sweep(SWEEP_DIR / f"{name}.yaml", [p for p in pairs if p[0] != "sweep"], CONFIG_DIR)
        if show_summary:
            print(summary(sweep, STUDIES_DIR))
            return 0
        launched = (int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))) != (0, 0)
        rank = srun_rank()  # srun started every rank, maybe on several nodes
        channel = TrialChannel(rank)
        try:
            if rank or (launched and TRIAL_ENV in os.environ):  # a rank > 0: no Optuna here
                follow_rank_zero(sweep, CONFIG_DIR, channel)
                return 0
            ran = run_worker(sweep, CONFIG_DIR, STUDIES_DIR, channel)
        finally:
            channel.close()
    except ConfigError as error:
        return fail(error)
    except TooManyFailures as error:
        return fail(f"worker stopped: {error}", 1)
    print(f"worker done: ran {ran} trial(s)")
    print(summary(sweep, STUDIES_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
