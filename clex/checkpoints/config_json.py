"""What a checkpoint's config.json says about its rope: the rope types a strategy can start from, the
checkpoint's L0, and the settings of a released CLEX checkpoint (no torch: config composition reads them
before anything is built)."""

import json
import math
from pathlib import Path

from clex import io
from clex.errors import ConfigError
from clex.rope.starting import original_length


def read_config(path) -> dict | None:
    """A checkpoint folder's config.json as a dict (None if there is none); invalid JSON (released configs
    with a trailing comma exist) is refused in one line naming the file and where."""
    config_file = Path(str(path)) / "config.json" if path else None
    if config_file is None or not config_file.is_file():
        return None
    try:
        config = json.loads(io.read_limited(config_file, "config.json"))
    except RecursionError:
        raise ConfigError(f"{config_file}: not a checkpoint's config.json (nested too deeply to read)") from None
    except ConfigError:  # not a regular file, or too large: said by io.read_limited
        raise
    except (ValueError, UnicodeDecodeError) as error:
        where = (
            f"line {error.lineno} column {error.colno}: {error.msg}"
            if isinstance(error, json.JSONDecodeError)
            else error
        )
        raise ConfigError(
            f"{config_file}: not valid JSON ({where}); fix the file (e.g. drop a trailing comma)"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file}: expected a JSON object, got {type(config).__name__}")
    return config


def checkpoint_original_length(path) -> int | None:
    """L0 from a checkpoint's config.json (as clex.rotary_settings reads it), or None if there is none."""
    config = read_config(path)
    if config is None:
        return None
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return original_length(rope, config.get("max_position_embeddings"))


# --- released CLEX checkpoints (DAMO-NLP-SG/CLEX) ---------------------------------------------------
OFFICIAL_FAMILIES = ("llama", "mixtral", "phi")
OFFICIAL_TIME_DT = 0.01  # the 2023 release's rk4 step in t (no time_dt key)
OFFICIAL_NTK_BASE = 10000.0  # the official ntk(t) uses 10000 whatever rope_theta is
# our solver for an import: rk4 in s = log(2t - 1) with steps small enough to match the official rk4 at dt 0.01
IMPORT_SOLVER = {"method": "rk4", "step_size": 0.05, "max_step_t": 0.1}
STRUCTURAL = ("amplification", "projection_width", "activation", "dynamics")  # fixed by the ODE weights


def official_clex(path) -> dict | None:
    """The settings of a released CLEX checkpoint (rope_scaling type clex), or None for any other checkpoint:
    {family, release (2023: no act key), max_factor, param_factor, act, time_dt, log_scale (as its code
    applies it: 2023 Llama in every attention path, 2024 Llama only under use_flashattn, 2024 Mixtral and
    Phi-2 never), original_length, config (config.json)}."""
    config = read_config(path)
    rope = (config or {}).get("rope_scaling") or {}
    if not isinstance(rope, dict) or rope.get("type", rope.get("rope_type")) != "clex":
        return None
    where = f"{Path(str(path)) / 'config.json'}: rope_scaling"
    family = config.get("model_type")
    if family not in OFFICIAL_FAMILIES:
        raise ConfigError(
            f"{where} is CLEX but model_type is {family!r}; released CLEX checkpoints are "
            f"{', '.join(OFFICIAL_FAMILIES)}"
        )
    release = 2024 if "act" in rope else 2023
    settings = {
        "family": family,
        "release": release,
        "act": rope.get("act", "silu"),
        "time_dt": rope.get("time_dt", OFFICIAL_TIME_DT),
        "config": config,
    }
    for key in ("max_factor", "param_factor"):
        value = rope.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise ConfigError(f"{where}.{key} must be a number >= 1, got {value!r}")
        settings[key] = value
    if settings["act"] not in ("tanh", "silu"):
        raise ConfigError(f"{where}.act must be tanh or silu, got {settings['act']!r}")
    if not isinstance(settings["time_dt"], (int, float)) or not settings["time_dt"] > 0:
        raise ConfigError(f"{where}.time_dt must be a number > 0, got {settings['time_dt']!r}")
    if not isinstance(config.get("max_position_embeddings"), int) or config["max_position_embeddings"] < 1:
        raise ConfigError(
            f"{where}: max_position_embeddings (L0) must be a positive integer, got "
            f"{config.get('max_position_embeddings')!r}"
        )
    log_scale = bool(config.get("log_scale", False))
    if release == 2024:
        log_scale = log_scale and family == "llama" and bool(config.get("use_flashattn", True))
    settings.update(log_scale=log_scale, original_length=config["max_position_embeddings"])
    return settings


def official_strategy(settings: dict) -> dict:
    """The CLEX strategy section that reproduces a released checkpoint's evaluation."""
    return {
        "name": "clex",
        "max_scale": float(settings["max_factor"]),
        "amplification": float(settings["param_factor"]),
        "projection_width": None,
        "activation": settings["act"],
        "dynamics": "continuous",
        "beyond_max": "clamp",
        "eval_scale": "ceil",
        "ntk_base": OFFICIAL_NTK_BASE,
        **IMPORT_SOLVER,
    }


def official_attention(settings: dict) -> dict:
    """The attention section of a released checkpoint's evaluation: its code's log scale, unclamped."""
    return {
        "log_scale": settings["log_scale"],
        "log_scale_clamp": False,
        "log_scale_train": False,  # the official training scripts leave it off; its evaluation turns it on
    }


def checkpoint_strategy(path) -> tuple[str, dict, int] | None:
    """(what it is, its strategy and attention sections, its L0) for a checkpoint that carries a strategy: a
    released CLEX checkpoint, or one written by clex.save_pretrained (its ``clex_strategy`` entry); None for any
    other."""
    settings = official_clex(path)
    if settings is not None:
        sections = {"strategy": official_strategy(settings), "attention": official_attention(settings)}
        return "a released CLEX checkpoint", sections, settings["original_length"]
    entry = (read_config(path) or {}).get("clex_strategy")
    if not isinstance(entry, dict) or not entry.get("name"):
        return None
    attention = {
        "log_scale": entry.get("log_scale", False),
        "log_scale_clamp": entry.get("log_scale_clamp", True),
        "log_scale_train": entry.get("log_scale_train"),
    }
    sections = {"strategy": {"name": entry["name"], **entry.get("options", {})}, "attention": attention}
    return "saved by clex.save_pretrained", sections, entry["original_length"]


def apply_checkpoint_strategy(cfg, given: set):
    """``model=hf`` on a checkpoint that carries a strategy (a released CLEX checkpoint, or a run's saved model):
    the strategy section and L0 take the checkpoint's settings, so it is evaluated or fine-tuned as it was
    trained; the keys the command line gives win, except those its weights fix (the ODE's), which must agree."""
    found = checkpoint_strategy(cfg.model.get("path"))
    if found is None:
        return
    what, sections, L0 = found
    name = sections["strategy"]["name"]
    if cfg.strategy.name != name:
        raise ConfigError(
            f"model.path {cfg.model.path} is {what} with strategy {name!r}: run it with "
            f"strategy={name}, got strategy={cfg.choices.strategy}"
        )
    for section, values in sections.items():
        for key, value in values.items():
            if key not in cfg[section]:
                continue
            if f"{section}.{key}" in given:
                if section == "strategy" and key in STRUCTURAL and cfg.strategy[key] != value:
                    raise ConfigError(
                        f"strategy.{key}={cfg.strategy[key]!r} does not fit the checkpoint's weights "
                        f"(its value: {value!r}); leave it unset"
                    )
                continue
            cfg[section][key] = value
    if "model.original_length" not in given:
        cfg.model.original_length = int(L0)
