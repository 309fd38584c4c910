"""Released CLEX checkpoints (DAMO-NLP-SG/CLEX, 2023 and 2024 releases) on transformers 5, and ours in their format.

Their format is the family's ordinary state dict (Llama, Mixtral, Phi) plus the ODE under ``model.clex_layer``:
``proj_func.ode_up_proj`` [d/2, lambda d] (applied as ``z @ up``), ``proj_func.ode_down_proj`` [lambda d, d/2]
and ``inv_freq`` [d/2] (z(1) = log inv_freq), with ``rope_scaling = {type: clex, max_factor, param_factor[, act,
time_dt]}`` in config.json. transformers 5 cannot build a model from that config (``KeyError: 'clex'``), so we
build the family's plain model from the config without its rope_scaling, and patch it with our CLEX carrying
the checkpoint's ODE weights (config_json.official_strategy: base 10000 inside ntk(t), t = ceil(len / L0)
clamped at max_factor, the log-scale rule of the release). No remote code, no download.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from clex.checkpoints.config_json import (
    OFFICIAL_NTK_BASE,
    OFFICIAL_TIME_DT,
    official_attention,
    official_clex,
    official_strategy,
)
from clex.errors import ConfigError
from clex.io import load_tensors, replaced_directory

PREFIX = "model.clex_layer."
ODE_KEYS = {
    "up": PREFIX + "proj_func.ode_up_proj",
    "down": PREFIX + "proj_func.ode_down_proj",
    "inv_freq": PREFIX + "inv_freq",
}
CONFIG_ONLY = ("rope_scaling", "log_scale", "use_flashattn", "auto_map", "architectures", "transformers_version")


def transformers_config(settings: dict):
    """The family's transformers 5 config: config.json without the keys only the official code reads."""
    from transformers import CONFIG_MAPPING

    config = {k: v for k, v in settings["config"].items() if k not in CONFIG_ONLY and k != "model_type"}
    return CONFIG_MAPPING[settings["family"]](**config)


def _weight_files(directory: Path) -> dict:
    """tensor name -> the file holding it (safetensors or pytorch .bin, one file or sharded by an index)."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{index}: not a valid weight index (a JSON object with weight_map)") from None
            return {name: directory / file for name, file in weight_map.items()}
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return {None: directory / name}
    raise ConfigError(f"{directory}: no model.safetensors or pytorch_model.bin (nor their index)")


def _read_tensor(path: Path, name: str):
    if path.suffix == ".safetensors":
        with safe_open(str(path), "pt") as handle:
            return handle.get_tensor(name) if name in handle.keys() else None
    return load_tensors(path, "a released CLEX checkpoint's weights", "use the checkpoint as released").get(name)


def ode_tensors(directory, settings: dict, rotary_dim: int) -> dict:
    """The three ODE tensors of a released checkpoint, checked against its config: {up, down, inv_freq}."""
    directory = Path(directory)
    files = _weight_files(directory)
    half, width = rotary_dim // 2, int(round(settings["param_factor"] * rotary_dim))
    shapes = {"up": (half, width), "down": (width, half), "inv_freq": (half,)}
    tensors = {}
    for short, name in ODE_KEYS.items():
        path = files.get(name, files.get(None))
        tensor = _read_tensor(path, name) if path is not None else None
        if tensor is None:
            raise ConfigError(
                f"{path or directory}: no tensor {name}; a released CLEX checkpoint has {', '.join(ODE_KEYS.values())}"
            )
        if tuple(tensor.shape) != shapes[short]:
            raise ConfigError(
                f"{path}: {name} has shape {list(tensor.shape)}; config.json (rotary dim {rotary_dim}, "
                f"rope_scaling.param_factor {settings['param_factor']}) needs {list(shapes[short])}"
            )
        tensors[short] = tensor.float()
    return tensors


def load_ode(strategy, directory, settings: dict | None = None):
    """Put a released checkpoint's ODE into our CLEX strategy: W_up = up^T, W_down = down^T, z(1) = log inv_freq."""
    settings = settings or official_clex(directory)
    tensors = ode_tensors(directory, settings, strategy.rotary_dim)
    with torch.no_grad():
        strategy.up.weight.copy_(tensors["up"].T)
        strategy.down.weight.copy_(tensors["down"].T)
    strategy.start_from(tensors["inv_freq"])
    return strategy


def load_model(directory, **from_pretrained_options):
    """The family's plain transformers model with the checkpoint's weights (the ODE tensors are left out)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    settings = official_clex(directory)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the clex_layer tensors are "unexpected keys" to the plain model
    try:
        return AutoModelForCausalLM.from_pretrained(
            directory, config=transformers_config(settings), local_files_only=True, **from_pretrained_options
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def load_official(directory, **from_pretrained_options):
    """A released CLEX checkpoint as a transformers 5 model patched with our CLEX, ready to evaluate."""
    from clex.rope.patch import patch_model, rotary_settings
    from clex.rope.strategies import build_strategy

    settings = official_clex(directory)
    model = load_model(directory, **from_pretrained_options)
    options = official_strategy(settings)
    rotary = official_attention(settings)
    strategy = build_strategy(options.pop("name"), **rotary_settings(model), **options)
    return patch_model(model, load_ode(strategy, directory, settings), **rotary)


def check_exportable(model):
    """What the official format cannot express is refused here, in one line each."""
    from clex.rope.patch import rotary_module

    rotary = rotary_module(model)
    strategy = rotary.strategy
    family = model.config.model_type
    if strategy.name != "clex":
        raise ConfigError(
            f"cannot export to the official CLEX format: strategy {strategy.name!r}: the format holds CLEX only"
        )
    problems = [
        (
            family not in ("llama", "mixtral", "phi"),
            f"model type {family!r}: the official code has Llama, Mixtral and Phi",
        ),
        (strategy.dynamics != "continuous", "discrete dynamics: the official ODE is continuous"),
        (strategy.eval_scale != "ceil", "an evaluation rule other than t = ceil(len / L0)"),
        (strategy.beyond_max != "clamp", "beyond_max=extrapolate: the official t stops at max_factor"),
        (
            (model.config.rope_parameters or {}).get("rope_type", "default") != "default",
            "a checkpoint rope other than plain RoPE underneath",
        ),
        (
            strategy.width % strategy.rotary_dim != 0,
            f"projection width {strategy.width}: the format needs an integer multiple of the rotary dim "
            f"{strategy.rotary_dim}",
        ),
        (
            strategy.ntk_base != OFFICIAL_NTK_BASE,
            f"ntk_base {strategy.ntk_base:g}: the official ntk(t) uses base 10000 (train with strategy.ntk_base=10000)",
        ),
        (
            rotary.log_scale and rotary.log_scale_clamp,
            "log_scale with the clamp at 1: the official factor is unclamped",
        ),
        (rotary.log_scale and family != "llama", "log_scale on a family whose official code never applies it"),
    ]
    for failed, why in problems:
        if failed:
            raise ConfigError(f"cannot export to the official CLEX format: {why}")


def save_official(model, directory, tokenizer=None):
    """Write a CLEX-patched model in the official (2024) format, atomically: config.json with rope_scaling
    {type: clex, max_factor, param_factor, act, time_dt}, log_scale, use_flashattn, and the ODE tensors beside
    the family's state dict (in model.safetensors, or a shard of their own when the weights are sharded)."""
    from clex.rope.patch import rotary_module

    check_exportable(model)
    rotary = rotary_module(model)
    strategy = rotary.strategy
    with replaced_directory(directory) as tmp:
        _write_official(model, rotary, strategy, tmp, tokenizer)
    return Path(directory)


def _write_official(model, rotary, strategy, tmp: Path, tokenizer):
    state = {k: v for k, v in model.state_dict().items() if ".rotary_emb." not in k}
    model.save_pretrained(tmp, state_dict=state)
    ode = {
        ODE_KEYS["up"]: strategy.up.weight.detach().T.contiguous().float().cpu(),
        ODE_KEYS["down"]: strategy.down.weight.detach().T.contiguous().float().cpu(),
        ODE_KEYS["inv_freq"]: strategy.base_inv_freq.detach().float().cpu(),
    }
    index = tmp / "model.safetensors.index.json"
    if index.is_file():  # sharded: the ODE in a shard of its own, named in the index
        save_file(ode, str(tmp / "model-clex_layer.safetensors"), metadata={"format": "pt"})
        entry = json.loads(index.read_text())
        entry["weight_map"].update({name: "model-clex_layer.safetensors" for name in ode})
        index.write_text(json.dumps(entry, indent=2))
    else:
        weights = load_file(str(tmp / "model.safetensors"))
        save_file({**weights, **ode}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((tmp / "config.json").read_text())
    config.pop("clex_strategy", None)
    rope = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = rope.get("rope_theta", strategy.base)
    config["max_position_embeddings"] = strategy.original_length  # the official L0
    max_factor = int(strategy.max_scale) if strategy.max_scale == int(strategy.max_scale) else strategy.max_scale
    config["rope_scaling"] = {
        "type": "clex",
        "max_factor": max_factor,
        "param_factor": int(strategy.width // strategy.rotary_dim),
        "act": strategy.activation,
        "time_dt": OFFICIAL_TIME_DT,
    }
    config.update(log_scale=bool(rotary.log_scale), use_flashattn=bool(rotary.log_scale))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
