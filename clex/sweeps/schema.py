"""The sweep file: its study, experiment and space sections, checked up front against the experiment
config (every choice and range end composed and validated, objectives against the evaluation lengths)."""

import math
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from clex.config.compose import load_defaults, parse_value, single_config
from clex.config.files import ConfigDirs, as_dirs
from clex.config.study import STUDY_DEFAULTS
from clex.config.values import check_name
from clex.errors import ConfigError

SAMPLERS = ("tpe", "gp", "cmaes", "grid", "random")


PRUNERS = ("median", "hyperband", "none")


DIRECTIONS = ("minimize", "maximize")


def load_sweep(path: Path, cli_overrides: list, config_dir: ConfigDirs) -> dict:
    """The sweep file checked against the experiment config (``config_dir``: the shipped folder, then any of
    ``--config-dir``); ``study.x=...`` on the command line overrides the study section, any other ``key=value``
    the base experiment."""
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
        raise ConfigError(
            f"{path.name}: unknown section(s) {', '.join(sorted(unknown))}; allowed: study, experiment, space"
        )
    study = dict(STUDY_DEFAULTS, name=path.stem)
    given = [(k[6:], v) for k, v in cli_overrides if k.startswith("study.")]
    for items in ((raw.get("study") or {}).items(), given):
        if items is given:
            n_trials_in_file = study["n_trials"]  # the sweep file's (or the default), for --summary
        for key, value in items:
            if key not in STUDY_DEFAULTS:
                raise ConfigError(f"{path.name}: unknown study key {key!r}; allowed: {', '.join(STUDY_DEFAULTS)}")
            study[key] = parse_value(value) if isinstance(value, str) and key != "storage" else value
    experiment = list(raw.get("experiment") or []) + [
        f"{k}={v}" for k, v in cli_overrides if not k.startswith("study.")
    ]
    space = raw.get("space") or {}
    if not space:
        raise ConfigError(f"{path.name}: space is empty; give at least one parameter, e.g. strategy.amplification")
    _check_study(path.name, study)
    _check_space(path.name, space, experiment, config_dir, study["objectives"])
    return {
        "study": study,
        "experiment": experiment,
        "space": space,
        "path": str(path),
        "n_trials_in_file": n_trials_in_file,
        "config_dir": [str(d) for d in as_dirs(config_dir)],  # what every trial is composed from
    }


def _check_study(name, study):
    if study.get("name") is not None:
        check_name(f"{name}: study.name", study["name"], "a study name")
    if not (isinstance(study["n_trials"], int) and study["n_trials"] >= 1):
        raise ConfigError(f"{name}: study.n_trials must be a positive integer, got {study['n_trials']!r}")
    if study["sampler"] not in SAMPLERS:
        raise ConfigError(f"{name}: study.sampler must be one of {', '.join(SAMPLERS)}, got {study['sampler']!r}")
    if study["pruner"] not in PRUNERS:
        raise ConfigError(f"{name}: study.pruner must be one of {', '.join(PRUNERS)}, got {study['pruner']!r}")
    for key in ("seeds", "max_failures"):
        if not (isinstance(study[key], int) and not isinstance(study[key], bool) and study[key] >= 1):
            raise ConfigError(f"{name}: study.{key} must be a positive integer, got {study[key]!r}")
    for key, low in (  # a heartbeat is a journal record: more than one a second floods the journal
        ("heartbeat_interval", 1),
        ("grace_period", 1),
        ("max_retry", 0),
        ("pruner_warmup_steps", 0),
        ("pruner_startup_trials", 0),
        ("seed", 0),
    ):
        value = study[key]
        integer = key not in ("heartbeat_interval", "grace_period")
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < low:
            raise ConfigError(
                f"{name}: study.{key} must be {'an integer' if integer else 'a number'} >= {low}, got {value!r}"
            )
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
            raise ConfigError(
                f"{name}: space key {key!r} is not an experiment config key (see experiments/run.py --cfg)"
            )
        if kind == "categorical":
            if not isinstance(dist.get("choices"), list) or not dist["choices"]:
                raise ConfigError(
                    f"{name}: space.{key}: categorical needs a non-empty choices list, got {dist.get('choices')!r}"
                )
        elif kind in ("float", "int"):
            low, high = dist.get("low"), dist.get("high")
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
                raise ConfigError(
                    f"{name}: space.{key}: {kind} needs numbers low < high, got low={low!r} high={high!r}"
                )
            if dist.get("log") and low <= 0:
                raise ConfigError(f"{name}: space.{key}: a log distribution needs low > 0, got {low}")
            extra = set(dist) - {"type", "low", "high", "log", "step"}
            if extra:
                raise ConfigError(
                    f"{name}: space.{key}: unknown field(s) {', '.join(sorted(extra))}; allowed: low, high, log, step"
                )
        else:
            raise ConfigError(f"{name}: space.{key}: type must be float, int or categorical, got {kind!r}")
    for values in _corners(space):  # every choice, and each end of every range, makes a valid experiment
        overrides = [f"{key}={value}" for key, value in values.items()]  # how a refusal names the point
        try:
            trial_cfg = single_config(config_dir, experiment, values)
            from clex.train.experiment import check_config

            check_config(trial_cfg)
        except ConfigError as error:
            raise ConfigError(f"{name}: space {' '.join(overrides)}: {error}") from None
        _check_objectives(name, objectives, trial_cfg)


def _corners(space: dict) -> list[dict]:
    """One assignment per categorical choice and per range end, the other keys at their first value."""
    values = {
        key: dist["choices"] if dist["type"] == "categorical" else [dist["low"], dist["high"]]
        for key, dist in space.items()
    }
    first = {key: options[0] for key, options in values.items()}
    return [{**first, key: option} for key, options in values.items() for option in options]


def _check_objectives(name, objectives, cfg):
    from clex.config.compose import eval_lengths

    lengths = eval_lengths(cfg)
    for objective in objectives:
        multiplier = metric_length_multiplier(objective["metric"])
        if multiplier is not None and multiplier * cfg.train.length not in lengths:
            raise ConfigError(
                f"{name}: objective {objective['metric']} needs length {multiplier * cfg.train.length} "
                f"(train.length {cfg.train.length}), which is not among the eval lengths {lengths}"
            )


def metric_length_multiplier(metric: str):
    """'ppl@4' -> 4 (PPL at 4 x train.length; an evaluation task's score: 'passkey@2', 'ruler/niah_single@2');
    'extrapolation_length' and 'val_loss' -> None."""
    from clex.eval.tasks import TASKS

    if metric in ("extrapolation_length", "val_loss"):
        return None
    kind, _, multiplier = metric.partition("@")
    if kind.split("/")[0] not in ("ppl", "nll", *TASKS.names()) or not multiplier.isdigit():
        raise ConfigError(
            f"objective metric {metric!r}: use ppl@<k>, nll@<k> (k x train.length), <task>@<k> (a task of "
            f"{', '.join(TASKS.names())}), extrapolation_length or val_loss"
        )
    return int(multiplier)


def metric_value(results: dict, metric: str) -> float:
    multiplier = metric_length_multiplier(metric)
    if metric == "extrapolation_length":
        value = results["extrapolation_length"]["value"]
    elif metric == "val_loss":
        value = results["train"]["final_val_loss"]
    elif metric.split("@")[0] not in ("ppl", "nll"):  # an evaluation task's score
        length = multiplier * results["train_length"]
        value = results.get("tasks", {}).get(metric.split("@")[0], {}).get(str(length))
        if value is None:
            raise ConfigError(f"objective {metric}: the run has no such task score at length {length}")
    else:
        length = multiplier * results["train_length"]
        row = next((r for r in results["eval"] if r["length"] == length), None)
        if row is None:
            raise ConfigError(f"objective {metric}: length {length} is not among the eval lengths")
        value = row[metric.split("@")[0]]
    return math.nan if value is None else float(value)
