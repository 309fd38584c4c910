"""One config value: read from the command line (``parse_value``) and checked against the type of the value it
replaces (``check_type``); ``flat_keys`` lists every key of a config by its dotted path."""

import re

from omegaconf import DictConfig, ListConfig, OmegaConf

from clex.errors import ConfigError

INTERPOLATION = re.compile(r"\$\{[A-Za-z_][\w.]*\}")


def flat_keys(node, prefix="", sections: bool = True) -> dict:
    """Dotted path -> value, for every key of a config (a DictConfig: its nodes; a plain dict: its values),
    sections included; ``sections=False``: values only (what labels and filters compare: an empty section is
    no value)."""
    keys = {}
    for key in node:
        value = node._get_node(key) if isinstance(node, DictConfig) else node[key]
        if sections or not isinstance(value, (dict, DictConfig)):
            keys[f"{prefix}{key}"] = value
        if isinstance(value, (dict, DictConfig)):
            keys.update(flat_keys(value, f"{prefix}{key}.", sections))
    return keys


PLAIN_NAME = re.compile(r"[A-Za-z0-9_][\w.+=-]*")


def check_name(key: str, value, what: str):
    """A name that becomes a file or folder name: letters, digits and ``_ . + = -``, not starting with a dot (the
    project's own folders, .base and .tokenizers, start with one), no path separator: one line otherwise."""
    if not (isinstance(value, (str, int)) and not isinstance(value, bool) and PLAIN_NAME.fullmatch(str(value))):
        raise ConfigError(
            f"{key} must be {what}: letters, digits and _ . + = - (no '/', not starting with '.'), got {value!r}"
        )
    if len(str(value)) > 200:
        raise ConfigError(f"{key} must be at most 200 characters (a file name), got {len(str(value))}")


def parse_value(raw: str, key: str = "value"):
    """A command-line value as OmegaConf reads it (numbers, booleans, lists, null), NaN included.
    YAML tags (``!!python/...``, ``!!set``) are refused, not constructed."""
    if raw.lstrip().startswith("!"):
        raise ConfigError(f"{key}={raw}: YAML tags are not read; give a plain value")
    if INTERPOLATION.fullmatch(raw.strip()):  # another key's value, e.g. model.original_length=${train.length}
        return raw.strip()
    if INTERPOLATION.search(raw) and raw.strip()[:1] not in ("[", "{"):  # a string with a key's value in it:
        return raw.strip()  # runs/evaluator-seed${seed}/model, resolved when the config is read
    try:
        value = OmegaConf.from_dotlist([f"value={raw}"]).value
    except Exception as error:  # yaml's and OmegaConf's own errors: an unsupported value
        raise ConfigError(f"{key}={raw}: not a plain value ({type(error).__name__})") from None
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "+inf"):
        return float(value)
    return OmegaConf.to_container(value) if isinstance(value, ListConfig) else value


def check_type(key: str, old, new):
    """``new`` as the type of ``old``, the value it replaces (an integer given for a float becomes a float)."""
    if isinstance(new, str) and INTERPOLATION.fullmatch(new):
        return new  # resolved when the config is read, then checked like any value
    if new is None and old is not None:
        raise ConfigError(f"{key} cannot be null (its default is {old!r})")
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
