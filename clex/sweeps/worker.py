"""The worker loop: asks for trials until the study has its count, runs each (``study.seeds``
experiments) in-process through the same code path as experiments/run.py, and tells Optuna."""

import functools
import math
import time
from contextlib import nullcontext
from pathlib import Path

import lightning as L
import optuna
from optuna.trial import TrialState

from clex import io
from clex.config.compose import single_config
from clex.config.identity import current_key
from clex.errors import ConfigError, TooManyFailures
from clex.sweeps.liveness import FINISHED, DeclaredDead, fail_stale_trials, heartbeat, is_surplus, run_number
from clex.sweeps.ranks import TrialChannel
from clex.sweeps.schema import metric_value
from clex.sweeps.study import WORKER_N_TRIALS, grid_size, make_optuna_sampler, open_study, trial_seed
from clex.train.run_folder import check_folder, run_name


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


def suggest(trial, space: dict) -> dict:
    """The trial's point: space key -> its value, as Optuna draws it (a bool, a number, a name)."""
    values = {}
    for key, dist in space.items():
        if dist["type"] == "categorical":
            value = trial.suggest_categorical(key, dist["choices"])
        elif dist["type"] == "int":
            value = trial.suggest_int(
                key, dist["low"], dist["high"], step=dist.get("step", 1), log=dist.get("log", False)
            )
        else:
            value = trial.suggest_float(
                key, dist["low"], dist["high"], step=dist.get("step"), log=dist.get("log", False)
            )
        values[key] = value
    return values


def trial_config(sweep: dict, values: dict, number: int, seed_index: int = 0, base=None):
    """The experiment of one seed of trial ``number`` (a retried trial passes its original's number, so it resumes
    or reuses that trial's run): the sweep's experiment with the trial's values, each read as its key's kind
    (``base``: that config, composed once for the trial's seeds). It is composed from the config folders the sweep
    was checked against (``sweep["config_dir"]``: the shipped one and any --config-dir, recorded by the study)."""
    cfg = (base if base is not None else single_config(sweep["config_dir"], sweep["experiment"], values)).copy()
    cfg.seed = int(cfg.seed) + seed_index
    if sweep["study"]["share_runs"]:  # named by their config under out_dir: a run any study has finished is reused
        return cfg
    cfg.name = f"{sweep['study']['name']}-trial{number:04d}" + (
        f"-seed{cfg.seed}" if sweep["study"]["seeds"] > 1 else ""
    )
    cfg.out_dir = str(Path(cfg.out_dir) / "sweeps" / sweep["study"]["name"])
    return cfg


def pruning(sweep: dict) -> bool:
    return len(sweep["study"]["objectives"]) == 1 and sweep["study"]["pruner"] != "none"


@functools.cache
def shared_data():
    """The last data this worker read: its trials of one corpus and tokenizer read and tokenise it once."""
    from clex.train.experiment import SharedData

    return SharedData(keep=1)


def prepared(cfg):
    return shared_data().prepare(cfg)


def follow_rank_zero(sweep: dict, channel: TrialChannel) -> int:
    """A rank > 0 of a data-parallel sweep worker: run the trials rank 0 announces until it says stop."""
    from clex.train.experiment import TrainingDiverged, run_experiment

    message, ran = channel.receive(), 0
    while message is not None:
        cfg = trial_config(sweep, message["values"], message["number"], message.get("seed_index", 0))
        prune = pruning(sweep) and message.get("seed_index", 0) == 0
        try:
            run_experiment(cfg, prepared(cfg), callbacks=[PruneOnValidation(None)] if prune else [])
        except (optuna.TrialPruned, ConfigError, TrainingDiverged, RuntimeError, ValueError):
            pass  # rank 0 records the outcome
        ran += 1
        message = channel.receive()
    return ran


def record_seeds(trial, runs: list[dict], objectives: list[dict]) -> list[float]:
    """Per-seed values, their std and n in the trial's user attributes; the objective is their mean."""
    import statistics

    per_seed = {str(r["seed"]): [metric_value(r, o["metric"]) for o in objectives] for r in runs}
    columns = list(zip(*per_seed.values(), strict=False))
    trial.set_user_attr("run_dir", runs[0]["run_dir"])
    trial.set_user_attr("run_dirs", [r["run_dir"] for r in runs])
    trial.set_user_attr("ppl", {str(row["length"]): row["ppl"] for row in runs[0]["eval"]})
    trial.set_user_attr("extrapolation_length", runs[0]["extrapolation_length"]["value"])
    trial.set_user_attr("parameters", runs[0]["parameters"])
    trial.set_user_attr("values_per_seed", per_seed)
    trial.set_user_attr("n_seeds", len(runs))
    trial.set_user_attr(
        "values_std", [statistics.stdev(c) if len(c) > 1 and all(map(math.isfinite, c)) else None for c in columns]
    )
    return [sum(c) / len(c) for c in columns]


def holds_other_config(cfg) -> bool:
    try:
        check_folder(cfg, Path(cfg.out_dir) / run_name(cfg))
    except ConfigError:
        return True
    return False


def finished_twin(study, trial, overrides: list) -> int | None:
    """The number of a complete trial that ran exactly these overrides (a sampler may draw a point twice; a trial
    recorded before a key moved, strategy.log_scale, names it as it was)."""

    def today(recorded):
        return [f"{current_key(key)}={value}" for key, _, value in (o.partition("=") for o in recorded or [])]

    return next(
        (
            t.number
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.number != trial.number and today(t.user_attrs.get("overrides")) == today(overrides)
        ),
        None,
    )


def run_trial(study, trial, sweep: dict, channel: TrialChannel) -> TrialState | None:
    """One trial (``study.seeds`` experiments, seeds seed..seed+N-1), in-process through the same
    code path as experiments/run.py; returns its state (None if another worker declared it dead)."""
    from clex.train.experiment import TrainingDiverged, run_experiment

    study_cfg = sweep["study"]
    objectives = study_cfg["objectives"]
    try:
        values = suggest(trial, sweep["space"])
        overrides = sweep["experiment"] + [f"{key}={value}" for key, value in values.items()]  # what it ran, in words
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("fail_reason", None)  # a retried trial inherits its predecessor's attributes
        runs, number = [], run_number(study, trial)
        experiment = single_config(sweep["config_dir"], sweep["experiment"], values)  # once per trial
        if number != trial.number and holds_other_config(trial_config(sweep, values, number, 0, experiment)):
            number = trial.number  # the dead trial's folder ran other settings: a fresh folder
        twin = finished_twin(study, trial, overrides)
        if number == trial.number and twin is not None:
            number = twin  # its folder holds this very config, finished: run_experiment reuses it
            print(f"trial {trial.number}: the same point as finished trial {twin}; its run reused, not trained again")
        with heartbeat(study, trial, study_cfg["heartbeat_interval"]) as alive:
            for index in range(study_cfg["seeds"]):
                cfg = trial_config(sweep, values, number, index, experiment)
                channel.send({"values": values, "number": number, "seed_index": index})
                callbacks = [PruneOnValidation(trial)] if pruning(sweep) and index == 0 else []
                runs.append(run_experiment(cfg, prepared(cfg), callbacks=callbacks, wait=True))
                if not alive.is_set():
                    raise DeclaredDead
        values = record_seeds(trial, runs, objectives)
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(f"objective is not finite: {values}")
        study.tell(trial, values)
        return TrialState.COMPLETE
    except (DeclaredDead, optuna.exceptions.UpdateFinishedTrialError):
        print(
            f"trial {trial.number} was marked failed by another worker while it ran (its heartbeat came late: "
            f"raise study.grace_period on a slow file system); its parameters were re-queued and a retry reuses "
            f"this run's results; going on"
        )
        return None
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("prune_reason", str(pruned))
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    except (ConfigError, TrainingDiverged, RuntimeError, ValueError) as error:
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:500])
        study.tell(trial, state=TrialState.FAIL)
        if study_cfg["sampler"] == "grid":  # Optuna's grid counts a failed point as visited: queue it again
            study.enqueue_trial(trial.params)
        print(f"trial {trial.number} failed: {error}")
        return TrialState.FAIL


def run_worker(
    sweep: dict,
    studies_dir: Path,
    channel: TrialChannel | None = None,
    poll_seconds: float = 2.0,
) -> int:
    """Runs trials until the study has n_trials finished (complete or pruned) trials; waits while
    other workers' trials run, so a trial of a dead worker is failed and retried here. Stops after
    ``study.max_failures`` failed trials in a row (TooManyFailures)."""
    study, journal = open_study(sweep, studies_dir)
    channel = channel or TrialChannel()
    study_cfg = sweep["study"]
    target = study_cfg["n_trials"]
    if study.user_attrs.get(WORKER_N_TRIALS) != target:  # what --summary reports as the study's target
        study.set_user_attr(WORKER_N_TRIALS, target)
    if study_cfg["sampler"] == "grid" and grid_size(sweep["space"]) < target:
        print(f"the grid has {grid_size(sweep['space'])} points: the study ends there (study.n_trials={target})")
        target = grid_size(sweep["space"])
    ran, failures = 0, []
    while True:
        # one worker at a time asks for a trial (not .lock: optuna's journal uses that name)
        held = (
            io.exclusive(f"{journal}.worker-lock", f"study journal {journal}", wait=True) if journal else nullcontext()
        )
        with held:
            fail_stale_trials(study, study_cfg)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            trial = None
            if finished < target and (waiting or finished + running < target):
                if study_cfg["sampler"] != "grid":  # grid points go by trial number already
                    study.sampler = make_optuna_sampler(
                        study_cfg, sweep["space"], seed=trial_seed(study_cfg["seed"], len(trials))
                    )
                trial = study.ask()
        if trial is None:
            if finished >= target:
                channel.send(None)  # data-parallel workers: the other ranks stop
                return ran
            time.sleep(poll_seconds)
            continue
        if journal is None and is_surplus(study, trial, target):
            continue
        state = run_trial(study, trial, sweep, channel)
        ran += 1
        failures = failures + [trial] if state == TrialState.FAIL else []
        if len(failures) >= study_cfg["max_failures"]:
            channel.send(None)
            reason = study.get_trials(deepcopy=False)[failures[-1].number].user_attrs.get("fail_reason")
            raise TooManyFailures(
                f"the last {len(failures)} trials failed (study.max_failures="
                f"{study_cfg['max_failures']}); the last: {reason}"
            )
