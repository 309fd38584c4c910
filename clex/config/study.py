"""The ``study`` section of a sweep file, with its defaults: here, in the light config package, so that the sweep
command's ``--help`` lists them without importing the sweep machinery (Lightning, Optuna)."""

STUDY_DEFAULTS = {
    "name": None,
    "n_trials": 8,
    "storage": None,
    "sampler": "tpe",
    "seed": 0,
    "pruner": "median",
    "pruner_warmup_steps": 0,
    "pruner_startup_trials": 2,
    "objectives": None,
    "heartbeat_interval": 10,
    "grace_period": 60,
    "max_retry": 3,
    "seeds": 1,
    "max_failures": 5,
    "share_runs": False,
}
