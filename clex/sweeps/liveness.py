"""Worker liveness: heartbeats, failing the trials of dead workers, the journal lock. The only module
that touches Optuna internals (``study._storage``, ``trial._trial_id``): journal storage has no
heartbeat in Optuna 5, and a live Trial does not expose the retry callback's system attributes."""

import threading
import time
from contextlib import contextmanager

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def is_database(storage) -> bool:
    """An RDB storage (PostgreSQL, MySQL, SQLite), which has Optuna's own heartbeat; Optuna wraps it in a cache
    (``_CachedStorage``), so the backend says."""
    return isinstance(getattr(storage, "_backend", storage), optuna.storages.RDBStorage)


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
                if is_database(storage):
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
    if is_database(study._storage):
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


def run_number(study, trial) -> int:
    """The trial whose run this one continues: itself, or the first of the trials it retries (Optuna's
    retry callback records it in the system attributes, which a live Trial does not expose)."""
    return study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial", trial.number)


class DeclaredDead(Exception):
    """Another worker marked this worker's running trial failed (its heartbeat came late)."""


def is_surplus(study, trial, target: int) -> bool:
    """RDB storage has no cross-process lock here: a trial asked by two workers at once beyond the
    target is closed unrun (FAIL, reason recorded) rather than run twice."""
    live = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in FINISHED + (TrialState.RUNNING,) and t.number < trial.number
    ]
    if len(live) < target:
        return False
    trial.set_user_attr("fail_reason", "surplus: the study already had its trials; not run")
    study.tell(trial, state=TrialState.FAIL)
    return True
