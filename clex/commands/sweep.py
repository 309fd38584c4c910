"""An Optuna sweep worker: creates or joins the study and runs trials until it has its count.

    python sweeps/run.py sweep=clex_lambda [study.n_trials=N] [study.storage=URL] [experiment overrides]
    python sweeps/run.py sweep=clex_lambda --summary
    python sweeps/run.py --config-dir DIR sweep=NAME ...   # your config groups (and DIR/sweeps/NAME.yaml)

Start the same command in several processes (or cluster jobs) to share one study; rerun it to resume.
"""

import os
import sys
import textwrap
from pathlib import Path

from clex.commands import CONFIG_DIR, SWEEP_DIR
from clex.commands.cli import fail, take_config_dirs
from clex.config.files import check_config_dirs, sweep_dirs
from clex.config.study import STUDY_DEFAULTS
from clex.config.values import check_name
from clex.errors import ConfigError, Interrupted, TooManyFailures

STUDIES_DIR = Path("sweeps") / "studies"  # the default storage folder, under the folder it runs from


def sweep_names(folders: list[Path]) -> list[str]:
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})


def sweep_file(folders: list[Path], name: str) -> Path:
    """The sweep file ``name`` in the last folder that has it (a user's --config-dir DIR/sweeps/ wins)."""
    check_name("sweep", name, "a sweep file's name")
    for folder in reversed(folders):
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise ConfigError(f"sweep={name!r} is not a sweep file; choices: {', '.join(sweep_names(folders))}")


def usage(folders: list[Path]) -> str:
    from clex.commands.run import show

    study = [f"  study.{key} = {show(value)}" for key, value in STUDY_DEFAULTS.items()]
    return "\n".join(
        [
            __doc__.strip(),
            "",
            "sweeps:",
            *textwrap.wrap(", ".join(sweep_names(folders)), 116, initial_indent="  ", subsequent_indent="  "),
            "",
            "study keys and their defaults (a sweep file's study section sets some; study.name: the sweep's name):",
            *study,
            "",
            "experiment keys: any other key=value or group=option; experiments/run.py --help [group=option ...] lists",
            "each with its default.",
            "--config-dir DIR: as for experiments/run.py; every trial is composed with it, and the study records it",
            "(a worker without the same folders is refused).",
        ]
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        user_dirs, argv = take_config_dirs(argv)
        dirs = [CONFIG_DIR, *user_dirs]
        check_config_dirs(dirs)
        folders = sweep_dirs(SWEEP_DIR, dirs)
        if "--help" in argv or "-h" in argv:
            print(usage(folders))
            return 0
        show_summary = "--summary" in argv
        args = [a for a in argv if a != "--summary"]
        pairs = []
        for arg in args:
            if "=" not in arg:
                raise ConfigError(f"argument {arg!r} is not key=value (see --help)")
            pairs.append(tuple(arg.split("=", 1)))
        name = dict(pairs).get("sweep")
        if not name:
            raise ConfigError(f"sweep=<name> is required; choices: {', '.join(sweep_names(folders))}")
        from clex.commands.cli import quiet_libraries

        quiet_libraries()
        from clex.sweeps import TRIAL_ENV, TrialChannel, follow_rank_zero, load_sweep, run_worker, srun_rank, summary

        sweep = load_sweep(sweep_file(folders, name), [p for p in pairs if p[0] != "sweep"], dirs)
        if show_summary:
            print(summary(sweep, STUDIES_DIR))
            return 0
        launched = (int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("NODE_RANK", 0))) != (0, 0)
        rank = srun_rank()  # srun started every rank, maybe on several nodes
        channel = TrialChannel(rank)
        try:
            if rank or (launched and TRIAL_ENV in os.environ):  # a rank > 0: no Optuna here
                follow_rank_zero(sweep, channel)
                return 0
            ran = run_worker(sweep, STUDIES_DIR, channel)
        finally:
            channel.close()
    except ConfigError as error:
        return fail(error)
    except TooManyFailures as error:
        return fail(f"worker stopped: {error}", 1)
    except Interrupted as error:  # SIGTERM in a trial's training: its heartbeat stops, another worker retries it
        return fail(f"worker {error}; its trial is retried from its run folder", error.code)
    print(f"worker done: ran {ran} trial(s)")
    print(summary(sweep, STUDIES_DIR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
