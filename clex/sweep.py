"""Optuna sweeps: a sweep file (search space, objective, sampler, pruner, base experiment) and a worker
that creates or joins the study and runs trials in-process until the study has its finished trials.

Storage: a journal file by default (several processes on one machine or NFS), any RDB URL for a
cluster. A worker that dies leaves a RUNNING trial whose heartbeat stops; the next worker to look marks
it FAIL and Optuna's RetryHeartbeatStaleTrialCallback re-queues its parameters (RDB: Optuna's own heartbeat;
journal storage has none in Optuna 5, so the heartbeat is a user attribute written by a thread here).
"""
import fcntl
import json
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import optuna
import yaml
from omegaconf import OmegaConf
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from clex.config import load_defaults, parse_value, single_config
from clex.registry import ConfigError, TooManyFailures
from clex.sweep_ranks import TrialChannel

STUDY_DEFAULTS = {"name": None, "n_trials": 8, "storage": None, "sampler": "tpe", "seed": 0, "pruner": "median",
                  "pruner_warmup_steps": 0, "pruner_startup_trials": 2, "objectives": None,
                  "heartbeat_interval": 10, "grace_period": 60, "max_retry": 3, "seeds": 1, "max_failures": 5,
                  "share_runs": False}
SAMPLERS = ("tpe", "gp", "cmaes", "grid", "random")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("minimize", "maximize")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load_sweep(path: Path, cli_overrides: list, config_dir: Path) -> dict:
    """The sweep file checked against the experiment config; ``study.x=...`` on the command line
    overrides the study section, any other ``key=value`` the base experiment."""
    if not path.is_file():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"sweep={path.stem!r} has no file {path}; choices: {', '.join(options)}")
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path.name}: not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected sections study, experiment, space")
    unknown = set(raw) - {"study", "experiment", "space"}
    if unknown:
        raise ConfigError(f"{path.name}: unknown section(s) {', '.join(sorted(unknown))}; allowed: study, experiment, space")
    study = dict(STUDY_DEFAULTS, name=path.stem)
    for key, value in list((raw.get("study") or {}).items()) + [(k[6:], v) for k, v in cli_overrides if k.startswith("study.")]:
        if key not in STUDY_DEFAULTS:
            raise ConfigError(f"{path.name}: unknown study key {key!r}; allowed: {', '.join(STUDY_DEFAULTS)}")
        study[key] = parse_value(value) if isinstance(value, str) and key != "storage" else value
    experiment = list(raw.get("experiment") or []) + [f"{k}={v}" for k, v in cli_overrides if not k.startswith("study.")]
    space = raw.get("space") or {}
    if not space:
        raise ConfigError(f"{path.name}: space is empty; give at least one parameter, e.g. strategy.amplification")
    _check_study(path.name, study)
    _check_space(path.name, space, experiment, config_dir, study["objectives"])
    return {"study": study, "experiment": experiment, "space": space, "path": str(path)}


def _check_study(name, study):
    if not (isinstance(study["n_trials"], int) and study["n_trials"] >= 1):
        raise ConfigError(f"{name}: study.n_trials must be a positive integer, got {study['n_trials']!r}")
    if study["sampler"] not in SAMPLERS:
        raise ConfigError(f"{name}: study.sampler must be one of {', '.join(SAMPLERS)}, got {study['sampler']!r}")
    if study["pruner"] not in PRUNERS:
        raise ConfigError(f"{name}: study.pruner must be one of {', '.join(PRUNERS)}, got {study['pruner']!r}")
    for key in ("seeds", "max_failures"):
        if not (isinstance(study[key], int) and not isinstance(study[key], bool) and study[key] >= 1):
            raise ConfigError(f"{name}: study.{key} must be a positive integer, got {study[key]!r}")
    if not isinstance(study["share_runs"], bool):
        raise ConfigError(f"{name}: study.share_runs must be true or false, got {study['share_runs']!r}")
    objectives = study["objectives"]
    if not objectives or not all(isinstance(o, dict) and set(o) == {"metric", "direction"} for o in objectives):
        raise ConfigError(f"{name}: study.objectives must be a list of {{metric, direction}}, got {objectives!r}")
    for objective in objectives:
        metric_length_multiplier(objective["metric"])
        if objective["direction"] not in DIRECTIONS:
            raise ConfigError(f"{name}: direction must be minimize or maximize, got {objective['direction']!r}")


def _check_space(name, space, experiment, config_dir, objectives):
    cfg = single_config(config_dir, experiment)
    _, groups = load_defaults(config_dir)
    for key, dist in space.items():
        kind = dist.get("type") if isinstance(dist, dict) else None
        if key not in groups and OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ConfigError(f"{name}: space key {key!r} is not an experiment config key (see experiments/run.py --cfg)")
        if kind == "categorical":
            if not dist.get("choices"):
                raise ConfigError(f"{name}: space.{key}: categorical needs a non-empty choices list")
        elif kind in ("float", "int"):
            low, high = dist.get("low"), dist.get("high")
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
                raise ConfigError(f"{name}: space.{key}: {kind} needs numbers low < high, got low={low!r} high={high!r}")
            if dist.get("log") and low <= 0:
                raise ConfigError(f"{name}: space.{key}: a log distribution needs low > 0, got {low}")
            extra = set(dist) - {"type", "low", "high", "log", "step"}
            if extra:
                raise ConfigError(f"{name}: space.{key}: unknown field(s) {', '.join(sorted(extra))}; allowed: low, high, log, step")
        else:
            raise ConfigError(f"{name}: space.{key}: type must be float, int or categorical, got {kind!r}")
    for values in _corners(space):  # every choice, and each end of every range, makes a valid experiment
        overrides = [f"{key}={value}" for key, value in values.items()]
        try:
            trial_cfg = single_config(config_dir, experiment + overrides)
            from clex.config import validate

            validate(trial_cfg)
        except ConfigError as error:
            raise ConfigError(f"{name}: space {' '.join(overrides)}: {error}") from None
        _check_objectives(name, objectives, trial_cfg)


def _corners(space: dict) -> list[dict]:
    """One assignment per categorical choice and per range end, the other keys at their first value."""
    values = {key: dist["choices"] if dist["type"] == "categorical" else [dist["low"], dist["high"]]
              for key, dist in space.items()}
    first = {key: options[0] for key, options in values.items()}
    return [{**first, key: option} for key, options in values.items() for option in options]


def _check_objectives(name, objectives, cfg):
    from clex.config import eval_lengths

    lengths = eval_lengths(cfg)
    for objective in objectives:
        multiplier = metric_length_multiplier(objective["metric"])
        if multiplier is not None and multiplier * cfg.train.length not in lengths:
            raise ConfigError(f"{name}: objective {objective['metric']} needs length {multiplier * cfg.train.length} "
                              f"(train.length {cfg.train.length}), which is not among the eval lengths {lengths}")


def metric_length_multiplier(metric: str):
    """'ppl@4' -> 4 (PPL at 4 x train.length); 'extrapolation_length' and 'val_loss' -> None."""
    if metric in ("extrapolation_length", "val_loss"):
        return None
    kind, _, multiplier = metric.partition("@")
    if kind not in ("ppl", "nll") or not multiplier.isdigit():
        raise ConfigError(f"objective metric {metric!r}: use ppl@<k>, nll@<k> (k x train.length), "
                          "extrapolation_length or val_loss")
    return int(multiplier)


def metric_value(results: dict, metric: str) -> float:
    multiplier = metric_length_multiplier(metric)
    if metric == "extrapolation_length":
        value = results["extrapolation_length"]["value"]
    elif metric == "val_loss":
        value = results["train"]["final_val_loss"]
    else:
        length = multiplier * results["train_length"]
        row = next((r for r in results["eval"] if r["length"] == length), None)
        if row is None:
            raise ConfigError(f"objective {metric}: length {length} is not among the eval lengths")
        value = row[metric.split("@")[0]]
    return math.nan if value is None else float(value)


# --- storage and study --------------------------------------------------------------------------
def storage_for(study_cfg, studies_dir: Path):
    url = study_cfg["storage"]
    if url and "://" in str(url):
        try:
            return optuna.storages.RDBStorage(
                str(url), heartbeat_interval=study_cfg["heartbeat_interval"], grace_period=study_cfg["grace_period"],
                failed_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=study_cfg["max_retry"]))
        except ImportError as error:  # SQLAlchemy found no driver for the URL's dialect
            raise ConfigError(f"study.storage {str(url).split('://')[0]}://...: the database driver is not installed "
                              f"({error.name or error}); e.g. pip install psycopg2-binary (PostgreSQL) or pymysql (MySQL)") from None
    path = Path(url) if url else studies_dir / f"{study_cfg['name']}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), path


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
        grid[key] = dist["choices"] if dist["type"] == "categorical" else list(
            _frange(dist["low"], dist["high"], dist["step"], dist["type"]))
    return grid


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler's seed for the trial about to be asked: workers of one study ask for different
    trial numbers, so they explore different points; one worker repeats its study exactly."""
    return (study_seed * 1_000_003 + number) % 2**31


def make_sampler(study_cfg, space, seed=None):
    name, seed = study_cfg["sampler"], study_cfg["seed"] if seed is None else seed
    if name == "grid":
        return CountedGridSampler(grid_of(space), seed=seed)
    return {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
            "gp": lambda: optuna.samplers.GPSampler(seed=seed),
            "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[name]()


def _frange(low, high, step, kind):
    count = int(math.floor((high - low) / step + 1e-9)) + 1
    return [(int if kind == "int" else float)(low + i * step) for i in range(count)]


def make_pruner(study_cfg):
    if study_cfg["pruner"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=study_cfg["pruner_startup_trials"],
                                           n_warmup_steps=study_cfg["pruner_warmup_steps"])
    if study_cfg["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


class PruneOnValidation(L.Callback):
    """Reports the validation metric at the global step (not the epoch, so several validations per
    epoch all count) and stops a trial that Optuna's pruner rejects."""

    def __init__(self, trial, monitor="val/loss"):
        self.trial, self.monitor = trial, monitor  # trial is None on DDP ranks other than 0

    def on_validation_end(self, trainer, module):
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        prune = False
        if self.trial is not None:
            self.trial.report(float(value), step=trainer.global_step)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops together
            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} at step {trainer.global_step}")


@contextmanager
def heartbeat(study, trial, interval: float):
    """Beats while a trial runs: Optuna's own for RDB storage, a user attribute for journal files.
    Yields an event that is cleared if another worker has declared the trial dead meanwhile."""
    stop, alive = threading.Event(), threading.Event()
    alive.set()
    storage = study._storage

    def beat():
        while not stop.is_set():
            try:
                if isinstance(storage, optuna.storages.RDBStorage):
                    storage.record_heartbeat(trial._trial_id)
                else:
                    trial.set_user_attr("heartbeat", time.time())
            except optuna.exceptions.UpdateFinishedTrialError:
                alive.clear()
                return
            if storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
                alive.clear()
                return
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield alive
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study, study_cfg):
    """RUNNING trials whose heartbeat is older than the grace period: FAIL, then re-queued."""
    if isinstance(study._storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return
    now, retry = time.time(), RetryHeartbeatStaleTrialCallback(max_retry=study_cfg["max_retry"])
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        last = trial.user_attrs.get("heartbeat", trial.datetime_start.timestamp())
        if now - last > study_cfg["grace_period"]:
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker died (no heartbeat)")
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker got there first
            retry(study, study._storage.get_trial(trial._trial_id))


@contextmanager
def file_lock(path: Path | None):
    if path is None:
        yield
        return
    with open(f"{path}.worker-lock", "w") as handle:  # not .lock: optuna uses that name
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the worker ---------------------------------------------------------------------------------
def open_study(sweep: dict, studies_dir: Path):
    study_cfg = sweep["study"]
    storage = storage_for(study_cfg, studies_dir)
    journal = None
    if isinstance(storage, tuple):
        storage, journal = storage
    directions = [o["direction"] for o in study_cfg["objectives"]]
    study = optuna.create_study(study_name=study_cfg["name"], storage=storage, directions=directions,
                                sampler=make_sampler(study_cfg, sweep["space"]), pruner=make_pruner(study_cfg),
                                load_if_exists=True)
    study.set_user_attr("objectives", [o["metric"] for o in study_cfg["objectives"]])
    return study, journal


def suggest(trial, space: dict) -> list[str]:
    overrides = []
    for key, dist in space.items():
        if dist["type"] == "categorical":
            value = trial.suggest_categorical(key, dist["choices"])
        elif dist["type"] == "int":
            value = trial.suggest_int(key, dist["low"], dist["high"], step=dist.get("step", 1), log=dist.get("log", False))
        else:
            value = trial.suggest_float(key, dist["low"], dist["high"], step=dist.get("step"), log=dist.get("log", False))
        overrides.append(f"{key}={value}")
    return overrides


def trial_config(sweep: dict, config_dir: Path, overrides: list, number: int, seed_index: int = 0):
    """The experiment of one seed of trial ``number`` (a retried trial passes its original's number,
    so it resumes or reuses that trial's run)."""
    cfg = single_config(config_dir, overrides)
    cfg.seed = int(cfg.seed) + seed_index
    if sweep["study"]["share_runs"]:  # named by their config under out_dir: a run any study has finished is reused
        return cfg
    cfg.name = f"{sweep['study']['name']}-trial{number:04d}" + (f"-seed{cfg.seed}" if sweep["study"]["seeds"] > 1 else "")
    cfg.out_dir = str(Path(cfg.out_dir) / "sweeps" / sweep["study"]["name"])
    return cfg


def run_number(study, trial) -> int:
    """The trial whose run this one continues: itself, or the first of the trials it retries (Optuna's
    retry callback records it in the system attributes, which a live Trial does not expose)."""
    return study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)


def pruning(sweep: dict) -> bool:
    return len(sweep["study"]["objectives"]) == 1 and sweep["study"]["pruner"] != "none"


def follow_rank_zero(sweep: dict, config_dir: Path, channel: TrialChannel) -> int:
    """A rank > 0 of a data-parallel sweep worker: run the trials rank 0 announces until it says stop."""
    from clex.experiment import TrainingDiverged, prepare, run_experiment

    message, ran = channel.receive(), 0
    while message is not None:
        cfg = trial_config(sweep, config_dir, message["overrides"], message["number"], message.get("seed_index", 0))
        prune = pruning(sweep) and message.get("seed_index", 0) == 0
        try:
            run_experiment(cfg, prepare(cfg), callbacks=[PruneOnValidation(None)] if prune else [])
        except (optuna.TrialPruned, ConfigError, TrainingDiverged, RuntimeError, ValueError):
            pass  # rank 0 records the outcome
        ran += 1
        message = channel.receive()
    return ran


class DeclaredDead(Exception):
    """Another worker marked this worker's running trial failed (its heartbeat came late)."""


def record_seeds(trial, runs: list[dict], objectives: list[dict]) -> list[float]:
    """Per-seed values, their std and n in the trial's user attributes; the objective is their mean."""
    import statistics

    per_seed = {str(r["seed"]): [metric_value(r, o["metric"]) for o in objectives] for r in runs}
    columns = list(zip(*per_seed.values()))
    trial.set_user_attr("run_dir", runs[0]["run_dir"])
    trial.set_user_attr("run_dirs", [r["run_dir"] for r in runs])
    trial.set_user_attr("ppl", {str(row["length"]): row["ppl"] for row in runs[0]["eval"]})
    trial.set_user_attr("extrapolation_length", runs[0]["extrapolation_length"]["value"])
    trial.set_user_attr("parameters", runs[0]["parameters"])
    trial.set_user_attr("values_per_seed", per_seed)
    trial.set_user_attr("n_seeds", len(runs))
    trial.set_user_attr("values_std", [statistics.stdev(c) if len(c) > 1 and all(map(math.isfinite, c)) else None
                                       for c in columns])
    return [sum(c) / len(c) for c in columns]


def run_trial(study, trial, sweep: dict, config_dir: Path, channel: TrialChannel) -> TrialState | None:
    """One trial (``study.seeds`` experiments, seeds seed..seed+N-1), in-process through the same
    code path as experiments/run.py; returns its state (None if another worker declared it dead)."""
    from clex.experiment import TrainingDiverged, prepare, run_experiment

    study_cfg = sweep["study"]
    objectives = study_cfg["objectives"]
    try:
        overrides = sweep["experiment"] + suggest(trial, sweep["space"])
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("fail_reason", None)  # a retried trial inherits its predecessor's attributes
        runs, number = [], run_number(study, trial)
        with heartbeat(study, trial, study_cfg["heartbeat_interval"]) as alive:
            for index in range(study_cfg["seeds"]):
                cfg = trial_config(sweep, config_dir, overrides, number, index)
                channel.send({"overrides": overrides, "number": number, "seed_index": index})
                callbacks = [PruneOnValidation(trial)] if pruning(sweep) and index == 0 else []
                runs.append(run_experiment(cfg, prepare(cfg), callbacks=callbacks))
                if not alive.is_set():
                    raise DeclaredDead
        values = record_seeds(trial, runs, objectives)
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(f"objective is not finite: {values}")
        study.tell(trial, values)
        return TrialState.COMPLETE
    except (DeclaredDead, optuna.exceptions.UpdateFinishedTrialError):
        print(f"trial {trial.number} was marked failed by another worker while it ran (its heartbeat came late: "
              f"raise study.grace_period on a slow file system); its parameters were re-queued and a retry reuses "
              f"this run's results; going on")
        return None
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("prune_reason", str(pruned))
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except (ConfigError, TrainingDiverged, RuntimeError, ValueError) as error:
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {error}")
        return TrialState.FAIL


def run_worker(sweep: dict, config_dir: Path, studies_dir: Path, channel: TrialChannel | None = None,
               poll_seconds: float = 2.0) -> int:
    """Runs trials until the study has n_trials finished (complete or pruned) trials; waits while
    other workers' trials run, so a trial of a dead worker is failed and retried here. Stops after
    ``study.max_failures`` failed trials in a row (TooManyFailures)."""
    study, journal = open_study(sweep, studies_dir)
    channel = channel or TrialChannel()
    study_cfg = sweep["study"]
    target = study_cfg["n_trials"]
    if study_cfg["sampler"] == "grid" and grid_size(sweep["space"]) < target:
        print(f"the grid has {grid_size(sweep['space'])} points: the study ends there (study.n_trials={target})")
        target = grid_size(sweep["space"])
    ran, failures = 0, []
    while True:
        with file_lock(journal):
            fail_stale_trials(study, study_cfg)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            trial = None
            if finished < target and (waiting or finished + running < target):
                if study_cfg["sampler"] != "grid":  # grid points go by trial number already
                    study.sampler = make_sampler(study_cfg, sweep["space"], seed=trial_seed(study_cfg["seed"], len(trials)))
                trial = study.ask()
        if trial is None:
            if finished >= target:
                channel.send(None)  # data-parallel workers: the other ranks stop
                return ran
            time.sleep(poll_seconds)
            continue
        if journal is None and _is_surplus(study, trial, target):
            continue
        state = run_trial(study, trial, sweep, config_dir, channel)
        ran += 1
        failures = failures + [trial] if state == TrialState.FAIL else []
        if len(failures) >= study_cfg["max_failures"]:
            channel.send(None)
            reason = study.get_trials(deepcopy=False)[failures[-1].number].user_attrs.get("fail_reason")
            raise TooManyFailures(f"the last {len(failures)} trials failed (study.max_failures="
                                  f"{study_cfg['max_failures']}); the last: {reason}")


def _is_surplus(study, trial, target: int) -> bool:
    """RDB storage has no cross-process lock here: a trial asked by two workers at once beyond the
    target is closed unrun (FAIL, reason recorded) rather than run twice."""
    live = [t for t in study.get_trials(deepcopy=False)
            if t.state in FINISHED + (TrialState.RUNNING,) and t.number < trial.number]
    if len(live) < target:
        return False
    trial.set_user_attr("fail_reason", "surplus: the study already had its trials; not run")
    study.tell(trial, state=TrialState.FAIL)
    return True


def summary(sweep: dict, studies_dir: Path, top: int = 5) -> str:
    study, _ = open_study(sweep, studies_dir)
    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    objectives = ", ".join(f"{o['direction']} {o['metric']}" for o in sweep["study"]["objectives"])
    lines = [f"study {study.study_name}: {objectives}; target {sweep['study']['n_trials']} finished trials",
             "states: " + ", ".join(f"{k.lower()} {v}" for k, v in counts.items() if v)]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trials if len(sweep["study"]["objectives"]) > 1 else sorted(
            complete, key=lambda t: t.value, reverse=sweep["study"]["objectives"][0]["direction"] == "maximize")
        lines.append("best trials:")
        for t in best[:top]:
            params = ", ".join(f"{k}={v}" for k, v in t.params.items())
            lines.append(f"  #{t.number} values={[round(v, 4) for v in t.values]} {params}  {t.user_attrs.get('run_dir')}")
    lines.append("all trials:")
    for t in trials:
        reason = {TrialState.FAIL: t.user_attrs.get("fail_reason"), TrialState.PRUNED: t.user_attrs.get("prune_reason")}.get(t.state)
        seeds = t.user_attrs.get("values_per_seed")
        if seeds and len(seeds) > 1:
            std = ", ".join("-" if v is None else f"{v:.4g}" for v in t.user_attrs["values_std"])
            reason = f"{len(seeds)} seeds {json.dumps(seeds)}, std [{std}]"
        lines.append(f"  #{t.number} {t.state.name.lower():8} {t.user_attrs.get('run_dir', '-')} {reason or ''}".rstrip())
    return "\n".join(lines)
