"""Where the config files are: the shipped folder (``clex/configs``), then the folders a user adds with
``--config-dir DIR`` (a later folder wins over an earlier one).

A user folder holds any of: ``<group>/<option>.yaml``, which adds an option to a group or replaces the shipped
option of that name (``extends: <its own name>`` starts it from the one it replaces, so it need give only the keys
that change; ``extends: <another option>`` makes a preset of that option); ``config.yaml``, whose keys change
top-level defaults (``train.steps``, ``out_dir``, ...) and whose ``defaults`` list changes a group's default
option; and ``sweeps/<name>.yaml``, more sweep files. A user's option must name a registered strategy or model,
and must have every key of the option it replaces or whose ``name`` it gives (else a key would be missing at run
time): each of these is refused in one line naming the file.
"""

import difflib
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from clex.config.identity import current_key
from clex.config.schema import typed
from clex.config.values import check_name, flat_keys
from clex.errors import ConfigError

ConfigDirs = Path | str | Sequence[Path | str]
NOT_GROUPS = ("sweeps",)  # folders of a user's config folder that hold other files than group options


def as_dirs(config_dir: ConfigDirs) -> list[Path]:
    """One folder or a list of them, first the shipped one."""
    return [Path(config_dir)] if isinstance(config_dir, (str, Path)) else [Path(d) for d in config_dir]


def shown(dirs: list[Path], path: Path) -> str:
    """A file as messages name it: ``group/option.yaml`` in the shipped folder, the whole path in a user's."""
    return str(path.relative_to(dirs[0])) if path.is_relative_to(dirs[0]) else str(path)


def read_yaml(dirs: list[Path], path: Path) -> DictConfig:
    """A config file, or one line saying why it cannot be read (not YAML, a YAML tag, not key: value lines)."""
    try:
        node = OmegaConf.load(path)
    except Exception as error:  # yaml's, OmegaConf's and the file system's errors alike: one line
        why = " ".join(str(error).split())[:200]
        raise ConfigError(f"{shown(dirs, path)}: not a readable config file: {why}") from None
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{shown(dirs, path)}: must hold key: value lines, got a {type(node).__name__}")
    return node


def option_file(config_dir: ConfigDirs, group: str, option: str, below: int | None = None):
    """``(folder index, path)`` of ``group=option`` in the last folder that has it (of those before ``below``)."""
    check_name(f"{group}={option}", option, f"an option name of group {group!r}")
    dirs = as_dirs(config_dir)
    for index in reversed(range(len(dirs) if below is None else below)):
        path = dirs[index] / group / f"{option}.yaml"
        if path.is_file():
            return index, path
    return None


def group_options(config_dir: ConfigDirs, group: str) -> list[str]:
    return sorted({p.stem for d in as_dirs(config_dir) for p in (d / group).glob("*.yaml")})


def load_defaults(config_dir: ConfigDirs) -> tuple[DictConfig, dict]:
    """The top-level defaults and group -> default option: the shipped ``config.yaml``, then each user folder's."""
    dirs = as_dirs(config_dir)
    if not (dirs[0] / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {dirs[0]}")
    base = read_yaml(dirs, dirs[0] / "config.yaml")
    defaults = {}
    for entry in base.pop("defaults", []):
        defaults.update(dict(entry))
    for folder in dirs[1:]:
        if (folder / "config.yaml").is_file():
            _apply_user_defaults(dirs, folder / "config.yaml", base, defaults)
    return base, defaults


def _apply_user_defaults(dirs, path: Path, base: DictConfig, defaults: dict):
    node = read_yaml(dirs, path)
    entries = node.pop("defaults", None)
    for entry in [] if entries is None else entries if isinstance(entries, ListConfig) else [entries]:
        if not (isinstance(entry, DictConfig) and len(entry) == 1):
            raise ConfigError(f"{path}: defaults must be a list of 'group: option' lines, got {entry!r}")
        ((group, option),) = entry.items()
        if group not in defaults:
            raise ConfigError(f"{path}: defaults: {group!r} is not a config group; groups: {', '.join(defaults)}")
        if option_file(dirs, group, str(option)) is None:
            raise ConfigError(
                f"{path}: defaults: {group}={option!r} is not an option of group {group!r}; "
                f"choices: {', '.join(group_options(dirs, group))}"
            )
        defaults[group] = str(option)
    known = flat_keys(base)
    for key, value in flat_keys(node).items():
        if isinstance(value, DictConfig) and len(value):
            continue  # a section: its keys are checked one by one
        if key.split(".")[0] in defaults:
            raise ConfigError(
                f"{path}: {key}: {key.split('.')[0]} is a config group; choose its option in defaults, or put "
                f"the keys in {key.split('.')[0]}/<option>.yaml"
            )
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else " (its keys are the shipped config.yaml's)"
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
        if isinstance(known[key], DictConfig) != isinstance(value, DictConfig):
            kind = "a section" if isinstance(known[key], DictConfig) else "a value"
            raise ConfigError(f"{path}: {key} is {kind} in the shipped config.yaml, got {show_node(value)!r}")
        new = typed(key, OmegaConf.select(base, key), show_node(value), f"{path}: {key}")
        OmegaConf.update(base, key, new, force_add=True)


def show_node(node):
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node._value()


def load_option(config_dir: ConfigDirs, group: str, option: str, below=None, seen=(), files=None) -> DictConfig:
    """A group option's YAML; ``extends: other`` starts it from that option of the same group, and
    ``extends: <its own name>`` from the folder below (the option a user's file replaces). ``files``, when
    given, collects the files read, the furthest ancestor first."""
    dirs = as_dirs(config_dir)
    found = option_file(dirs, group, option, below)
    if found is None:
        raise ConfigError(
            f"{group}={option!r} is not an option of group {group!r}; choices: {', '.join(group_options(dirs, group))}"
        )
    index, path = found
    node = read_yaml(dirs, path)
    parent = node.pop("extends", None)
    if parent is not None:
        parent_below = index if parent == option else None
        parent_found = option_file(dirs, group, str(parent), parent_below)
        if parent_found is None or parent_found[1] in seen + (path,):
            raise ConfigError(
                f"{shown(dirs, path)}: extends {parent!r}, which is itself or not an option of group {group!r}"
            )
        node = OmegaConf.merge(load_option(dirs, group, str(parent), parent_below, seen + (path,), files), node)
    if files is not None:
        files.append(path)
    if index > 0 and not seen:  # a user's option, as composed
        _check_user_option(dirs, group, option, index, path, node)
    return node


def registered(group: str) -> list[str] | None:
    """The names a group's ``name`` key may take, for groups whose options are built by name (torch is imported
    here only for a user's own option)."""
    if group == "strategy":
        from clex.rope.strategies import strategy_names

        return strategy_names()
    if group == "model":
        from clex.models import MODELS

        return MODELS.names()
    return None


def _check_user_option(dirs, group, option, index, path, node):
    name = node.get("name")
    names = registered(group)
    if names is not None and name not in names:
        raise ConfigError(
            f"{path}: name must be a registered {group} ({', '.join(names)}), got {name!r}; a preset of one: "
            f"'extends: <option>' and the keys that change"
        )
    reference = option_file(dirs, group, option, below=index) or (
        option_file(dirs, group, str(name), below=index) if name else None
    )
    if reference is None:
        return
    theirs = load_option(dirs, group, reference[1].stem, below=reference[0] + 1, seen=(path,))
    ours, keys = flat_keys(node), flat_keys(theirs)
    missing = [key for key, value in keys.items() if key not in ours and not isinstance(value, DictConfig)]
    if missing:
        raise ConfigError(
            f"{path}: lacks {', '.join(missing)}, which {shown(dirs, reference[1])} has; add them, or start the "
            f"file with 'extends: {reference[1].stem}' and give only the keys that change"
        )
    open_keys = {k for k, v in keys.items() if (isinstance(v, DictConfig) and not len(v)) or v._is_none()}
    unknown = [
        key
        for key in ours
        if key not in keys and not any(".".join(key.split(".")[:n]) in open_keys for n in range(1, key.count(".") + 1))
    ]
    if unknown:
        moved = [current_key(f"{group}.{key}") for key in unknown if current_key(f"{group}.{key}") != f"{group}.{key}"]
        where = f" ({', '.join(moved)} now: set them in config.yaml or on the command line)" if moved else ""
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}{where}; {shown(dirs, reference[1])} has {', '.join(keys)}"
        )


def check_config_dirs(dirs: list[Path]):
    """Each user folder exists and holds only config groups, ``config.yaml`` and ``sweeps/``."""
    for folder in dirs[1:]:
        if not folder.is_dir():
            raise ConfigError(f"--config-dir {folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    _, defaults = load_defaults(dirs)
    for folder in dirs[1:]:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.yaml"))):
            if sub.name not in defaults and sub.name not in NOT_GROUPS:
                raise ConfigError(
                    f"--config-dir {folder}: {sub.name}/ is not a config group; groups: {', '.join(defaults)}"
                    f" (and {', '.join(NOT_GROUPS)}/ for sweep files)"
                )


def sweep_dirs(shipped: Path, dirs: list[Path]) -> list[Path]:
    """Where sweep files are found: the shipped folder, then each user folder's ``sweeps/`` (later ones winning)."""
    return [shipped] + [d / "sweeps" for d in dirs[1:]]
