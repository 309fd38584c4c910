"""Config composition and validation: OmegaConf groups, ``group=option`` and ``a.b.c=value``.

A config directory holds ``config.yaml`` (with a ``defaults`` list of ``{group: option}``) and one
folder per group with one YAML file per option; ``config_dir`` is one such folder or a list of them (the
shipped one, then a user's, see clex/config/files.py). ``+a.b=value`` adds a key that the defaults lack.
Every error is a ConfigError: one line naming the key and what is allowed.
"""

import difflib
import importlib.util
import itertools
import math
import os

from omegaconf import DictConfig, ListConfig, OmegaConf

from clex.checkpoints.config_json import apply_checkpoint_strategy, checkpoint_original_length
from clex.config.files import ConfigDirs, as_dirs, group_options, load_defaults, load_option, option_file, show_node
from clex.config.identity import current_key
from clex.config.schema import check_keys, typed
from clex.config.values import check_name, flat_keys, parse_value
from clex.errors import ConfigError, require, warn

ONE_VALUE = ("name", "out_dir", "resume", "compare.reference")  # one value for every run of a list


def split_list(key: str, raw: str) -> list[str]:
    """``a,b,c`` -> its items (a comma list makes one run per item); ``[..]``, ``{..}`` and quoted
    values are single values. Empty and repeated items are refused."""
    if "," not in raw or raw.lstrip()[:1] in ("[", "{", "'", '"'):
        return [raw]
    items = [item.strip() for item in raw.split(",")]
    if not all(items):
        raise ConfigError(f"{key}={raw}: empty item in a comma list; write {key}=a,b,c")
    parsed = [str(parse_value(item, key)) for item in items]
    repeated = sorted({item for item, value in zip(items, parsed, strict=False) if parsed.count(value) > 1})
    if repeated:
        raise ConfigError(f"{key}={raw}: repeated value(s) {', '.join(repeated)} in a comma list")
    if key.lstrip("+") in ONE_VALUE:
        raise ConfigError(f"{key} takes one value for every run of a list, got the comma list {raw!r}")
    return items


def parse_overrides(config_dir: ConfigDirs, args: list[str]) -> tuple[dict, list]:
    """``axes``: key -> its values, for groups (``strategy=rope,pi``: every group has one) and for keys
    given a comma list (``seed=0,1,2``); ``overrides``: the single-valued ``key=value`` pairs."""
    _, defaults = load_defaults(config_dir)
    base = None
    axes, overrides, seen = {}, [], set()
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not key=value or group=option (see --help)")
        key, raw = arg.split("=", 1)
        items = split_list(key, raw)
        if key.lstrip("+") in seen and (len(items) > 1 or len(axes.get(key, [])) > 1):
            raise ConfigError(f"{key} is given twice, once as a comma list; give one list ({key}=a,b)")
        seen.add(key.lstrip("+"))  # a later single value overrides an earlier one (sweep files, then the command line)
        if key in defaults:
            known = group_options(config_dir, key)
            for option in items:
                if option not in known:
                    raise ConfigError(
                        f"{key}={option!r} is not an option of group {key!r}; choices: {', '.join(known)}"
                    )
            axes[key] = items
        elif len(items) > 1:
            base = base if base is not None else compose(config_dir, {}, [])
            if isinstance(OmegaConf.select(base, key.lstrip("+"), default=None), (ListConfig, DictConfig)):
                raise ConfigError(
                    f"{key} is a list or section, so it cannot take a comma list of runs; "
                    f"write one list like {key}=[a,b]"
                )
            axes[key] = items
        else:
            overrides.append((key, raw))
    return axes, overrides


def expand(axes: dict) -> list[dict]:
    """Every combination of the axes' values (``strategy=rope,pi seed=0,1`` -> four runs)."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*(axes[k] for k in keys))]


def single_config(config_dir: ConfigDirs, args: list[str], values: dict | None = None) -> DictConfig:
    """One config from ``key=value`` arguments, then ``values`` (key -> a typed value, each read as its key's kind:
    a sweep trial's point, never turned into text); comma lists are refused (sweeps, benchmarks)."""
    axes, overrides = parse_overrides(config_dir, args)
    lists = [f"{k}={','.join(v)}" for k, v in axes.items() if len(v) > 1]
    if lists:
        raise ConfigError(f"{lists[0]}: one value per key here (a sweep's space or run.py takes lists)")
    return compose(config_dir, {k: v[0] for k, v in axes.items()}, overrides, values)


def compose(config_dir: ConfigDirs, choice: dict, overrides: list, values: dict | None = None) -> DictConfig:
    """The defaults, the chosen group options, then the key=value overrides and the typed ``values`` (which may
    choose groups too), each read as its key's kind. ``choice``: group -> option, or one item of a key's list."""
    dirs = as_dirs(config_dir)
    cfg, defaults = load_defaults(dirs)
    values = values or {}
    choice = {**choice, **{k: str(v) for k, v in values.items() if k in defaults}}
    values = {k: v for k, v in values.items() if k not in defaults}
    overrides = list(overrides) + [(k, v) for k, v in choice.items() if k not in defaults]
    choice = {k: v for k, v in choice.items() if k in defaults}
    for group, option in {**defaults, **choice}.items():
        if option_file(dirs, group, option) is None:
            raise ConfigError(
                f"{group}={option!r} is not an option of group {group!r}; "
                f"choices: {', '.join(group_options(dirs, group))}"
            )
        cfg[group] = load_option(dirs, group, option)
    if "recipe" in cfg:
        apply_recipe(dirs, cfg, choice)
    cfg["choices"] = {**defaults, **choice}
    known = flat_keys(cfg)
    pairs = [(key, parse_value(raw, key)) for key, raw in overrides] + list(values.items())
    for key, new in pairs:
        if key.startswith("+"):
            key = key[1:]
            if key in known:
                raise ConfigError(f"+{key}: the key exists already; drop the '+' to override it")
        elif key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if current_key(key) != key:  # where it was before the attention section
                hint = f"; it is in the attention section now: {current_key(key)}"
            raise ConfigError(f"unknown config key {key!r}{hint} (--cfg prints every key)")
        elif isinstance(known[key], DictConfig):
            raise ConfigError(f"{key} is a section, not a value; set one of its keys, e.g. {key}.<name>=...")
        else:
            new = typed(key, OmegaConf.select(cfg, key), new)
        OmegaConf.update(cfg, key, new, force_add=True)
    given = {key.lstrip("+") for key, _ in pairs}
    if cfg.model.name == "hf":  # a checkpoint that carries a strategy runs with it
        apply_checkpoint_strategy(cfg, given)
    if cfg.model.name == "hf" and "train.length" not in given:  # a pretrained model trains at its own L0
        original = cfg.model.get("original_length") or checkpoint_original_length(cfg.model.get("path"))
        if original:
            cfg.train.length = int(original)
    return cfg


def apply_recipe(dirs, cfg: DictConfig, choice: dict):
    """A recipe (``recipe=official``) is a preset across groups: its ``groups`` pick options of other groups (a
    group chosen on the command line must agree: the recipe's keys are written for its own options), then its
    other sections set keys of the composed config, which the command line's ``key=value`` still overrides."""
    recipe = cfg.pop("recipe")
    name = choice.get("recipe")
    for group, option in (recipe.pop("groups", None) or {}).items():
        if group in choice and choice[group] != option:
            raise ConfigError(
                f"recipe={name} sets {group}={option}, got {group}={choice[group]}; drop one of the two "
                f"(change the recipe's keys with {group}.<key>=...)"
            )
        cfg[group] = load_option(dirs, group, option)
        choice[group] = option
    known = flat_keys(cfg)
    for key, value in flat_keys(recipe).items():
        if isinstance(value, DictConfig):
            continue
        parents = [".".join(key.split(".")[:n]) for n in range(1, key.count(".") + 1)]
        open_section = any(isinstance(known.get(p), DictConfig) and not len(known[p]) for p in parents)
        if key not in known and not open_section:  # an empty section (sampler.scale_options) takes any key
            moved = f"; it is {current_key(key)} now" if current_key(key) != key else ""
            raise ConfigError(f"recipe={name}: unknown config key {key!r}{moved}")
        new = show_node(value)
        if key in known:
            new = typed(key, OmegaConf.select(cfg, key), new, f"recipe={name}: {key}")
        OmegaConf.update(cfg, key, new, force_add=True)


def check_finite(cfg: DictConfig, prefix: str = ""):
    """No NaN or infinite number anywhere in the config."""
    for key, value in flat_keys(cfg).items():
        node = value._value() if hasattr(value, "_value") else value
        if isinstance(node, float) and not math.isfinite(node):
            raise ConfigError(f"{prefix}{key} must be a finite number, got {node}")


# --- experiment checks that need no model or data -------------------------------------------
ATTENTION = ("sdpa", "eager", "flash_attention_2")


def eval_lengths(cfg) -> list[int]:
    """The evaluation lengths in tokens: exactly ``eval.lengths``, or ``eval.multipliers`` x L; nothing is added
    (reference_length says which of them the extrapolation length is measured against)."""
    for key in ("lengths", "multipliers"):
        value = cfg.eval.get(key)
        require(
            value is None or isinstance(value, (list, ListConfig)),
            f"eval.{key}",
            "must be a list like [128,256]",
            value,
        )
    key = "eval.lengths" if cfg.eval.lengths is not None else "eval.multipliers"
    given = list(cfg.eval.lengths if cfg.eval.lengths is not None else cfg.eval.multipliers)
    require(len(given) > 0, key, "must not be empty (nothing would be evaluated)", given)
    for value in given:  # checked as given, before multiplying by L
        require(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            key,
            "must be positive integers",
            given,
        )
    require(len(set(given)) == len(given), key, "must not repeat a value (each length is evaluated once)", given)
    lengths = given if cfg.eval.lengths is not None else [m * cfg.train.length for m in given]
    return sorted(set(lengths))


def reference_length(cfg, lengths: list[int], original_length: int) -> int:
    """The length the extrapolation length is measured against: L when it is evaluated (L0 for a run that trains
    nothing, train.steps=0, when L0 is), else the shortest evaluated length."""
    own = original_length if cfg.train.steps == 0 else cfg.train.length
    return own if own in lengths else min(lengths)


def check_model_shape(model):
    """A built-in model's heads divide its width into even (rotary) head dims (each size's range: schema)."""
    if "hidden_size" in model and "num_heads" in model:
        require(
            model.hidden_size % model.num_heads == 0 and (model.hidden_size // model.num_heads) % 2 == 0,
            "model.num_heads",
            f"must divide model.hidden_size ({model.hidden_size}) into heads of an even width (rotary pairs)",
            model.num_heads,
        )


def validate(cfg):
    """Checks that need no model or data (those come in ``prepare``)."""
    check_finite(cfg)
    check_keys(cfg)  # every key's kind, a number's range (config/schema.py)
    t = cfg.train
    if cfg.get("name") is not None:
        check_name("name", cfg.get("name"), "one folder name under out_dir")
    betas = list(t.betas)
    require(
        len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
        "train.betas",
        "must be two numbers in [0, 1), like [0.9, 0.95]",
        betas,
    )
    if cfg.model.name != "hf":
        check_model_shape(cfg.model)
    from clex.eval.perplexity import check_options

    check_options(cfg.eval, eval_lengths(cfg))
    devices, cores = cfg.trainer.get("devices"), os.cpu_count() or 1
    if cfg.trainer.get("accelerator") == "cpu" and isinstance(devices, int) and devices > cores:
        warn(
            f"trainer.devices={devices} starts {devices} CPU processes on {cores} cores: they share the "
            f"cores and every step waits for the slowest; set trainer.devices at most {cores}",
            once=True,
        )
    check_data(cfg)
    from clex.rope.samplers import POSITION_SAMPLERS, SCALE_SAMPLERS, build_scale_sampler

    check_attention(cfg.model.get("attn_implementation", "sdpa"), str(cfg.trainer.get("precision", "32-true")))
    SCALE_SAMPLERS.get(cfg.sampler.scale)
    max_scale = cfg.strategy.get("max_scale")
    if isinstance(max_scale, (int, float)) and max_scale >= 1:  # a strategy that samples t: its options, now
        build_scale_sampler(cfg.sampler.scale, max_scale, cfg.sampler.scale_options)
    POSITION_SAMPLERS.get(cfg.sampler.position)


def check_data(cfg):
    """The data section's choices (each number's range: config/schema.py)."""
    require(
        cfg.data.get("split", "hash") in ("hash", "position"),
        "data.split",
        "must be hash or position",
        cfg.data.get("split"),
    )
    tokenizer = cfg.data.get("tokenizer", "byte")
    require(tokenizer in ("byte", "bpe"), "data.tokenizer", "must be byte or bpe", tokenizer)
    require(
        tokenizer == "byte" or cfg.model.name != "hf",
        "data.tokenizer",
        "must be byte with model=hf (the checkpoint's own tokenizer is used)",
        tokenizer,
    )
    fractions = cfg.data.validation_fraction + cfg.data.test_fraction
    require(fractions < 1, "data.validation_fraction + data.test_fraction", "must sum to < 1", fractions)


def check_attention(name: str, precision: str):
    """SDPA (PyTorch picks its flash or memory-efficient kernel on GPUs), eager, or the flash-attn package."""
    require(name in ATTENTION, "model.attn_implementation", f"must be one of {', '.join(ATTENTION)}", name)
    if name == "flash_attention_2":
        require(
            importlib.util.find_spec("flash_attn") is not None,
            "model.attn_implementation",
            "flash_attention_2 needs the flash-attn package (and a CUDA GPU), which is not installed",
            name,
        )
        require(
            precision.startswith(("bf16", "16")),
            "trainer.precision",
            "must be 16-bit (bf16-mixed, bf16-true, 16-mixed, 16-true) for flash_attention_2",
            precision,
        )
