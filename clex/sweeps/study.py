"""Building the Optuna study: storage (journal file or RDB), sampler (seeded per trial so parallel
workers explore different points), pruner, and the summary."""

import json
import math
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from clex.config.identity import WHERE_NOT_WHAT, current_key
from clex.errors import ConfigError
from clex.journal import GRACE_SECONDS, StaleBreakingLock, journal_storage


def storage_for(study_cfg, studies_dir: Path, create: bool = True):
    """The study's storage: a database URL, or a journal file (``create=False``, a reader: one that is not there is
    one ConfigError line, never an empty new file)."""
    url = study_cfg["storage"]
    if url and "://" in str(url):
        try:
            return optuna.storages.RDBStorage(
                str(url),
                heartbeat_interval=study_cfg["heartbeat_interval"],
                grace_period=study_cfg["grace_period"],
                failed_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=study_cfg["max_retry"]),
            )
        except ImportError as error:  # SQLAlchemy found no driver for the URL's dialect
            raise ConfigError(
                f"study.storage {str(url).split('://')[0]}://...: the database driver is not installed "
                f"({error.name or error}); e.g. pip install psycopg2-binary (PostgreSQL) or pymysql (MySQL)"
            ) from None
        except Exception as error:  # SQLAlchemy's: an unknown dialect, a server that refuses, a file it cannot open
            reason = " ".join(str(getattr(error, "orig", None) or error).split())[:200]
            raise ConfigError(
                f"study.storage {url}: cannot open it ({type(error).__name__}: {reason}); give a reachable "
                "database URL (postgresql://user@host/db, sqlite:////abs/path.db) or a journal file path"
            ) from None
    path = Path(url) if url else studies_dir / f"{study_cfg['name']}.journal"
    if not create and not path.is_file():
        raise ConfigError(f"study {study_cfg['name']}: no journal at {path}; no worker has run this sweep there yet")
    if path.is_dir() or str(path.resolve()).startswith(("/proc/", "/sys/", "/dev/")):
        raise ConfigError(f"study.storage {url}: not a journal file (a folder, or a path of the kernel's)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as error:
        raise ConfigError(f"study.storage {url}: cannot create the journal there ({error.strerror})") from None
    lock = Path(f"{path}.lock")  # the journal's lock: a symlink while a worker writes
    if lock.is_symlink():
        print(
            f"the journal lock {lock} exists: another worker is writing, or a killed one left it (a lock older "
            f"than {GRACE_SECONDS:g} s is broken); waiting for it"
        )
    cut_incomplete_record(path)
    return journal_storage(path), path


def cut_incomplete_record(path: Path):
    """A worker killed while appending leaves an incomplete last record; Optuna skips it until the next
    record is appended onto it, and from then on every read fails. It is cut off here, saying so, under
    Optuna's own write lock (so a record a live worker is writing is never taken for a dead one's). An
    unreadable record before the last is real damage: refused, naming the line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = StaleBreakingLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, last = lines[:-1], lines[-1]  # last: what follows the final newline (b"" when none)
        if not last and complete and not _is_record(complete[-1]):
            complete, last = complete[:-1], complete[-1]
        for number, line in enumerate(complete, 1):
            if not _is_record(line):
                raise ConfigError(
                    f"study journal {path}:{number} is not a JSON record (damaged by hand or by the "
                    "file system); repair or remove that line, or give study.name=<a new study>"
                )
        if last:
            keep = sum(len(line) + 1 for line in complete)
            with open(path, "r+b") as handle:
                handle.truncate(keep)
            print(
                f"study journal {path}: dropped its incomplete last record ({len(last)} bytes, line "
                f"{len(complete) + 1}: a worker killed while writing); every record before it is kept"
            )
    finally:
        lock.release()


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class CountedGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler calls ``study.stop()`` after the last grid point, which only works inside
    ``study.optimize``; our worker loop ends a study by its trial count (capped at the grid's size)."""

    def after_trial(self, study, trial, state, values):
        pass


def grid_size(space) -> int:
    return math.prod(len(values) for values in grid_of(space).values())


def grid_of(space) -> dict:
    grid = {}
    for key, dist in space.items():
        if dist["type"] != "categorical" and "step" not in dist:
            raise ConfigError(f"sampler grid: space.{key} needs categorical choices or a step")
        grid[key] = (
            dist["choices"]
            if dist["type"] == "categorical"
            else list(_frange(dist["low"], dist["high"], dist["step"], dist["type"]))
        )
    return grid


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler's seed for the trial about to be asked: workers of one study ask for different
    trial numbers, so they explore different points; one worker repeats its study exactly."""
    return (study_seed * 1_000_003 + number) % 2**31


def make_optuna_sampler(study_cfg, space, seed=None):
    name, seed = study_cfg["sampler"], study_cfg["seed"] if seed is None else seed
    if name == "grid":
        return CountedGridSampler(grid_of(space), seed=seed)
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[name]()


def _frange(low, high, step, kind):
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [(int if kind == "int" else float)(low + i * step) for i in range(count)]


def make_pruner(study_cfg):
    if study_cfg["pruner"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=study_cfg["pruner_startup_trials"], n_warmup_steps=study_cfg["pruner_warmup_steps"]
        )
    if study_cfg["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(sweep: dict, studies_dir: Path, joining: bool = True):
    """The sweep's study, created or loaded; ``joining`` (a worker): its experiment overrides must be the
    study's, and a new study records them. A reader (``--summary``) neither checks nor writes them."""
    study_cfg = sweep["study"]
    storage = storage_for(study_cfg, studies_dir, create=joining)
    journal = None
    if isinstance(storage, tuple):
        storage, journal = storage
    directions = [o["direction"] for o in study_cfg["objectives"]]
    options = dict(
        study_name=study_cfg["name"],
        storage=storage,
        sampler=make_optuna_sampler(study_cfg, sweep["space"]),
        pruner=make_pruner(study_cfg),
    )
    try:  # loaded first: a journal's create_study appends a record even when the study exists
        study = optuna.load_study(**options)
    except KeyError:
        if not joining:  # a reader never creates a study
            raise ConfigError(
                f"study {study_cfg['name']} does not exist in its storage; no worker has run it yet"
            ) from None
        study = optuna.create_study(**options, directions=directions, load_if_exists=True)
    attrs = {"objectives": [o["metric"] for o in study_cfg["objectives"]], "experiment": experiment_settings(sweep)}
    if not joining:
        return study, journal
    check_same_experiment(study, attrs["experiment"])
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:  # written once: a worker joining the study leaves it as it is
            study.set_user_attr(key, value)
    return study, journal


def experiment_settings(sweep: dict) -> dict:
    """The experiment overrides a study's trials run with (the sweep file's, then the command line's):
    key -> value as written, the last of a key winning as in config composition."""
    settings = {}
    for override in sweep["experiment"]:
        key, value = override.split("=", 1)
        if key.lstrip("+").split(".")[0] not in WHERE_NOT_WHAT:  # where a trial's runs go, not what they compute
            settings[key.lstrip("+")] = value
    user_dirs = sweep.get("config_dir", [])[1:]  # after the shipped folder: a user's groups change what trials run
    if user_dirs:
        settings["--config-dir"] = " ".join(user_dirs)
    return settings


def check_same_experiment(study, ours: dict):
    """A worker joins a study only with the settings its trials ran with: otherwise its trials (say, trained
    longer) would rank against the others' for a reason that is not their parameters. A study made before
    the settings were recorded takes this worker's."""
    recorded = study.user_attrs.get("experiment")
    if recorded is not None:  # recorded before a key moved (strategy.log_scale): the same setting today
        recorded = {current_key(key): value for key, value in recorded.items()}
    if recorded is None or recorded == ours:
        return
    differ = [
        f"{key}={recorded.get(key, '(unset)')} in the study, {ours.get(key, '(unset)')} here"
        for key in sorted(set(recorded) | set(ours))
        if recorded.get(key) != ours.get(key)
    ]
    raise ConfigError(
        f"study {study.study_name!r} was made with other experiment overrides ({'; '.join(differ)}); "
        "give the same ones, or study.name=<a new name> for a new study with these"
    )


WORKER_N_TRIALS = "worker_n_trials"  # the study's user attribute: the study.n_trials the last worker started with


def target_text(study, sweep: dict) -> str:
    """How many finished trials the study is run to: the n_trials its last worker was given (a worker runs until
    the study has that many), beside the sweep file's and any given to this --summary, which runs nothing."""
    in_file = sweep.get("n_trials_in_file", sweep["study"]["n_trials"])
    here, last = sweep["study"]["n_trials"], study.user_attrs.get(WORKER_N_TRIALS)
    if last is None:
        text = f"n_trials {in_file} in the sweep file (no worker has recorded the n_trials it was given)"
    elif last == in_file:
        text = f"n_trials {last} given to the last worker started, as in the sweep file"
    else:
        text = f"n_trials {last} given to the last worker started; {in_file} in the sweep file"
    if here not in (in_file, last):
        text += f"; study.n_trials={here} here is no worker's (--summary runs nothing)"
    if sweep["study"]["sampler"] == "grid" and grid_size(sweep["space"]) < (last or here):
        text += f"; the grid ends the study at its {grid_size(sweep['space'])} points"
    return text


def summary(sweep: dict, studies_dir: Path, top: int = 5) -> str:
    study, _ = open_study(sweep, studies_dir, joining=False)
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in sweep["study"]["objectives"])
    finished = counts["COMPLETE"] + counts["PRUNED"]
    lines = [
        f"study {study.study_name}: {objectives}; {finished} finished trial(s); {target_text(study, sweep)}",
        "states: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v),
    ]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = (
            study.best_trials
            if len(sweep["study"]["objectives"]) > 1
            else sorted(
                complete, key=lambda t: t.value, reverse=sweep["study"]["objectives"][0]["direction"] == "maximize"
            )
        )
        lines.append("best trials:")
        for t in best[:top]:
            params = ", ".join(f"{k}={v}" for k, v in t.params.items())
            lines.append(
                f"  #{t.number} values={[round(v, 4) for v in t.values]} {params}  {t.user_attrs.get('run_dir')}"
            )
    lines.append("all trials:")
    for t in trials:
        reason = {
            TrialState.FAIL: t.user_attrs.get("fail_reason"),
            TrialState.PRUNED: t.user_attrs.get("prune_reason"),
        }.get(t.state)
        seeds = t.user_attrs.get("values_per_seed")
        if seeds and len(seeds) > 1:
            std = ", ".join("-" if v is None else f"{v:.4g}" for v in t.user_attrs["values_std"])
            reason = f"{len(seeds)} seeds {json.dumps(seeds)}, std [{std}]"
        lines.append(
            f"  #{t.number} {t.state.name.lower():8} {t.user_attrs.get('run_dir', '-')} {reason or ''}".rstrip()
        )
    return "\n".join(lines)
