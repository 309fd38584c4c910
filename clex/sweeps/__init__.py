"""Optuna sweeps: a sweep file (search space, objective, sampler, pruner, base experiment) and a worker
that creates or joins the study and runs trials in-process until the study has its finished trials.

Storage: a journal file by default (several processes on one machine or NFS), any RDB URL for a
cluster. A worker that dies leaves a RUNNING trial whose heartbeat stops; the next worker to look marks
it FAIL and Optuna's RetryHeartbeatStaleTrialCallback re-queues its parameters (RDB: Optuna's own heartbeat;
journal storage has none in Optuna 5, so the heartbeat is a user attribute written by a thread here).
"""

from clex.sweeps.ranks import TRIAL_ENV, TrialChannel, srun_rank
from clex.sweeps.schema import STUDY_DEFAULTS, load_sweep, metric_value
from clex.sweeps.study import open_study, summary
from clex.sweeps.worker import follow_rank_zero, run_trial, run_worker

__all__ = [
    "STUDY_DEFAULTS",
    "TRIAL_ENV",
    "TrialChannel",
    "follow_rank_zero",
    "load_sweep",
    "metric_value",
    "open_study",
    "run_trial",
    "run_worker",
    "srun_rank",
    "summary",
]
