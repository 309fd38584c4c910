"""Config composition and validation: OmegaConf groups, ``group=option`` and ``a.b.c=value``.

A config directory holds ``config.yaml`` (with a ``defaults`` list of ``{group: option}``) and one
folder per group with one YAML file per option. ``+a.b=value`` adds a key that the defaults lack.
Every error is a ConfigError: one line naming the key and what is allowed.
"""
import difflib
import itertools
import math
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from clex.registry import ConfigError


def group_options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def load_defaults(config_dir: Path) -> tuple[DictConfig, dict]:
    path = config_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"no config.yaml in {config_dir}")
    base = OmegaConf.load(path)
    defaults = {}
    for entry in base.pop("defaults", []):
        defaults.update(dict(entry))
    return base, defaults


def parse_overrides(config_dir: Path, args: list[str]) -> tuple[dict, list]:
    """Split ``group=a,b`` choices (lists of options) from ``key=value`` overrides."""
    _, defaults = load_defaults(config_dir)
    choices, overrides = {}, []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not key=value or group=option (see --help)")
        key, raw = arg.split("=", 1)
        if key in defaults:
            options = [o.strip() for o in raw.split(",") if o.strip()]
            known = group_options(config_dir, key)
            for option in options or [raw]:
                if option not in known:
                    raise ConfigError(f"{key}={option!r} is not an option of group {key!r}; choices: {', '.join(known)}")
            choices[key] = options
        else:
            overrides.append((key, raw))
    return choices, overrides


def expand(choices: dict) -> list[dict]:
    """Every combination of the chosen options (``strategy=rope,pi`` -> two runs)."""
    groups = list(choices)
    return [dict(zip(groups, combo)) for combo in itertools.product(*(choices[g] for g in groups))]


def _flat_keys(node, prefix="") -> dict:
    keys = {}
    for key in node:
        path = f"{prefix}{key}"
        value = node._get_node(key)
        keys[path] = value
        if isinstance(value, DictConfig):
            keys.update(_flat_keys(value, path + "."))
    return keys


def parse_value(raw: str):
    """A command-line value as OmegaConf reads it (numbers, booleans, lists, null), NaN included."""
    value = OmegaConf.from_dotlist([f"value={raw}"]).value
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def _check_type(key: str, old, new):
    if old is None or new is None:
        return new
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise ConfigError(f"{key} must be true or false, got {new!r}")
    elif isinstance(old, int):
        if isinstance(new, bool) or not isinstance(new, int):
            raise ConfigError(f"{key} must be an integer, got {new!r}")
    elif isinstance(old, float):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise ConfigError(f"{key} must be a number, got {new!r}")
        new = float(new)
    elif isinstance(old, str):
        if isinstance(new, (list, dict)):
            raise ConfigError(f"{key} must be a string, got {new!r}")
        new = str(new)
    elif isinstance(old, (list, ListConfig)) and not isinstance(new, list):
        raise ConfigError(f"{key} must be a list like [a,b], got {new!r}")
    return new


def compose(config_dir: Path, choice: dict, overrides: list) -> DictConfig:
    """The defaults, the chosen group options, then the key=value overrides, type-checked."""
    cfg, defaults = load_defaults(config_dir)
    for group, option in {**defaults, **choice}.items():
        path = config_dir / group / f"{option}.yaml"
        if not path.is_file():
            raise ConfigError(f"{group}={option!r} is not an option of group {group!r}; "
                              f"choices: {', '.join(group_options(config_dir, group))}")
        cfg[group] = OmegaConf.load(path)
    cfg["choices"] = {**defaults, **choice}
    known = _flat_keys(cfg)
    for key, raw in overrides:
        new = parse_value(raw)
        if key.startswith("+"):
            key = key[1:]
            if key in known:
                raise ConfigError(f"+{key}: the key exists already; drop the '+' to override it")
        elif key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (--cfg prints every key)")
        elif isinstance(known[key], DictConfig):
            raise ConfigError(f"{key} is a section, not a value; set one of its keys, e.g. {key}.<name>=...")
        else:
            new = _check_type(key, OmegaConf.select(cfg, key), new)
        OmegaConf.update(cfg, key, new, force_add=True)
    return cfg


def check_finite(cfg: DictConfig, prefix: str = ""):
    """No NaN or infinite number anywhere in the config."""
    for key, value in _flat_keys(cfg).items():
        node = value._value() if hasattr(value, "_value") else value
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{prefix}{key} must be a finite number, got {node}")


def require(condition: bool, key: str, why: str, value):
    if not condition:
        raise ConfigError(f"{key} {why}, got {value!r}")
