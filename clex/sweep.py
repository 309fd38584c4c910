"""Optuna sweeps: a sweep file (search space, objective, sampler, pruner, base experiment) and a worker
that creates or joins the study and runs trials in-process until the study has its finished trials.

Storage: a journal file by default (several processes on one machine or NFS), any RDB URL for a
cluster. A worker that dies leaves a RUNNING trial whose heartbeat stops; the next worker to look marks
it FAIL and Optuna's RetryFailedTrialCallback re-queues its parameters (RDB: Optuna's own heartbeat;
journal storage has none in Optuna 5, so the heartbeat is a user attribute written by a thread here).
"""
import fcntl
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import optuna
from omegaconf import OmegaConf
from optuna.storages import RetryFailedTrialCallback
from optuna.trial import TrialState

from clex.config import load_defaults, parse_value, single_config
from clex.registry import ConfigError
from clex.sweep_ranks import TrialChannel

STUDY_DEFAULTS = {"name": None, "n_trials": 8, "storage": None, "sampler": "tpe", "seed": 0, "pruner": "median",
                  "pruner_warmup_steps": 0, "pruner_startup_trials": 2, "objectives": None,
                  "heartbeat_interval": 10, "grace_period": 60, "max_retry": 3}
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
    raw = OmegaConf.to_container(OmegaConf.load(path))
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
    _check_space(path.name, space, experiment, config_dir)
    return {"study": study, "experiment": experiment, "space": space, "path": str(path)}


def _check_study(name, study):
    if not (isinstance(study["n_trials"], int) and study["n_trials"] >= 1):
        raise ConfigError(f"{name}: study.n_trials must be a positive integer, got {study['n_trials']!r}")
    if study["sampler"] not in SAMPLERS:
        raise ConfigError(f"{name}: study.sampler must be one of {', '.join(SAMPLERS)}, got {study['sampler']!r}")
    if study["pruner"] not in PRUNERS:
        raise ConfigError(f"{name}: study.pruner must be one of {', '.join(PRUNERS)}, got {study['pruner']!r}")
    objectives = study["objectives"]
    if not objectives or not all(isinstance(o, dict) and set(o) == {"metric", "direction"} for o in objectives):
        raise ConfigError(f"{name}: study.objectives must be a list of {{metric, direction}}, got {objectives!r}")
    for objective in objectives:
        metric_length_multiplier(objective["metric"])
        if objective["direction"] not in DIRECTIONS:
            raise ConfigError(f"{name}: direction must be minimize or maximize, got {objective['direction']!r}")


def _check_space(name, space, experiment, config_dir):
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
        return optuna.storages.RDBStorage(
            str(url), heartbeat_interval=study_cfg["heartbeat_interval"], grace_period=study_cfg["grace_period"],
            failed_trial_callback=RetryFailedTrialCallback(max_retry=study_cfg["max_retry"]))
    path = Path(url) if url else studies_dir / f"{study_cfg['name']}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.storages.JournalStorage(backend), path


def make_sampler(study_cfg, space):
    name, seed = study_cfg["sampler"], study_cfg["seed"]
    if name == "grid":
        grid = {}
        for key, dist in space.items():
            if dist["type"] != "categorical" and "step" not in dist:
                raise ConfigError(f"sampler grid: space.{key} needs categorical choices or a step")
            grid[key] = dist["choices"] if dist["type"] == "categorical" else list(
                _frange(dist["low"], dist["high"], dist["step"], dist["type"]))
        return optuna.samplers.GridSampler(grid, seed=seed)
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
    """Beats while a trial runs: Optuna's own for RDB storage, a user attribute for journal files."""
    stop = threading.Event()
    storage = study._storage

    def beat():
        while not stop.is_set():
            if isinstance(storage, optuna.storages.RDBStorage):
                storage.record_heartbeat(trial._trial_id)
            else:
                trial.set_user_attr("heartbeat", time.time())
            stop.wait(interval)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study, study_cfg):
    """RUNNING trials whose heartbeat is older than the grace period: FAIL, then re-queued."""
    if isinstance(study._storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
        return
    now, retry = time.time(), RetryFailedTrialCallback(max_retry=study_cfg["max_retry"])
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


def trial_config(sweep: dict, config_dir: Path, overrides: list, number: int):
    cfg = single_config(config_dir, overrides)
    cfg.name = f"{sweep['study']['name']}-trial{number:04d}"
    cfg.out_dir = str(Path(cfg.out_dir) / "sweeps" / sweep["study"]["name"])
    return cfg


def pruning(sweep: dict) -> bool:
    return len(sweep["study"]["objectives"]) == 1 and sweep["study"]["pruner"] != "none"


def follow_rank_zero(sweep: dict, config_dir: Path, channel: TrialChannel) -> int:
    """A rank > 0 of a data-parallel sweep worker: run the trials rank 0 announces until it says stop."""
    from clex.experiment import TrainingDiverged, prepare, run_experiment

    message, ran = channel.receive(), 0
    while message is not None:
        cfg = trial_config(sweep, config_dir, message["overrides"], message["number"])
        try:
            run_experiment(cfg, prepare(cfg), callbacks=[PruneOnValidation(None)] if pruning(sweep) else [])
        except (optuna.TrialPruned, ConfigError, TrainingDiverged, RuntimeError, ValueError):
            pass  # rank 0 records the outcome
        ran += 1
        message = channel.receive()
    return ran


def run_trial(study, trial, sweep: dict, config_dir: Path, channel: TrialChannel) -> None:
    """One trial, in-process through the same code path as experiments/run.py."""
    from clex.experiment import TrainingDiverged, prepare, run_experiment

    study_cfg = sweep["study"]
    objectives = study_cfg["objectives"]
    try:
        overrides = sweep["experiment"] + suggest(trial, sweep["space"])
        trial.set_user_attr("overrides", overrides)
        cfg = trial_config(sweep, config_dir, overrides, trial.number)
        channel.send({"overrides": overrides, "number": trial.number})
        callbacks = [PruneOnValidation(trial)] if pruning(sweep) else []
        with heartbeat(study, trial, study_cfg["heartbeat_interval"]):
            results = run_experiment(cfg, prepare(cfg), callbacks=callbacks)
        trial.set_user_attr("run_dir", results["run_dir"])
        trial.set_user_attr("ppl", {str(r["length"]): r["ppl"] for r in results["eval"]})
        trial.set_user_attr("extrapolation_length", results["extrapolation_length"]["value"])
        trial.set_user_attr("parameters", results["parameters"])
        values = [metric_value(results, o["metric"]) for o in objectives]
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(f"objective is not finite: {values}")
        study.tell(trial, values)
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("prune_reason", str(pruned))
        study.tell(trial, state=TrialState.PRUNED)
    except (ConfigError, TrainingDiverged, RuntimeError, ValueError) as error:
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {error}")


def run_worker(sweep: dict, config_dir: Path, studies_dir: Path, channel: TrialChannel | None = None,
               poll_seconds: float = 2.0) -> int:
    """Runs trials until the study has n_trials finished (complete or pruned) trials; waits while
    other workers' trials run, so a trial of a dead worker is failed and retried here."""
    study, journal = open_study(sweep, studies_dir)
    channel = channel or TrialChannel()
    target, study_cfg = sweep["study"]["n_trials"], sweep["study"]
    ran = 0
    while True:
        with file_lock(journal):
            fail_stale_trials(study, study_cfg)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            trial = study.ask() if finished < target and (waiting or finished + running < target) else None
        if trial is None:
            if finished >= target:
                channel.send(None)  # data-parallel workers: the other ranks stop
                return ran
            time.sleep(poll_seconds)
            continue
        if journal is None and _is_surplus(study, trial, target):
            continue
        run_trial(study, trial, sweep, config_dir, channel)
        ran += 1


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
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
        lines.append(f"  #{t.number} {t.state.name.lower():8} {t.user_attrs.get('run_dir', '-')} {reason}".rstrip())
    return "\n".join(lines)
