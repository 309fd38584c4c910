"""Saving a patched model as a transformers checkpoint, and loading it back patched.

The checkpoint is what ``save_pretrained`` writes (the model's own rope type stays in config.json, so
plain transformers loads it as the unscaled model), plus a ``clex_strategy`` entry in config.json
(strategy name, options, rotary settings) and the strategy's parameters (CLEX's ODE) in
``clex_strategy.safetensors``. We do not register a rope type: a checkpoint naming an unregistered
rope type fails to load in a process that has not imported us.

A run that trains nothing (model=hf, train.steps=0) writes a *reference* instead (``save_reference``): the same
config.json entry and strategy parameters, the tokenizer, and ``clex_reference`` = the evaluated checkpoint's path and
fingerprint, not a copy of its weights (13 GB per run for a 7B model). ``load_pretrained`` and ``model=hf
model.path=`` follow it, and refuse in one line a checkpoint that has moved or changed since.
"""

import hashlib
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from clex.checkpoints.config_json import official_clex
from clex.errors import ConfigError
from clex.io import replaced_directory
from clex.rope.patch import patch_model, rotary_module
from clex.rope.strategies import build_strategy

STRATEGY_WEIGHTS = "clex_strategy.safetensors"
FORMAT_VERSION = 1


def save_pretrained(model, directory, tokenizer=None, format: str = "clex"):
    """Write ``model`` (patched by clex.patch_model) to ``directory``, atomically: a sibling temporary
    directory renamed into place, so a killed save never leaves a half-written checkpoint.
    ``format="official"``: the released CLEX checkpoints' format (clex.checkpoints.official.save_official)."""
    if format not in ("clex", "official"):
        raise ValueError(f"format must be 'clex' or 'official', got {format!r}")
    if format == "official":
        from clex.checkpoints.official import save_official

        return save_official(model, directory, tokenizer)
    set_strategy_entry(model)
    with replaced_directory(directory) as tmp:
        state = {k: v for k, v in model.state_dict().items() if ".rotary_emb." not in k}
        model.save_pretrained(tmp, state_dict=state)
        save_strategy(model, tmp, tokenizer)
    return Path(directory)


def set_strategy_entry(model):
    """config.json's ``clex_strategy`` entry: what rebuilds the strategy and its rotary module."""
    rotary = rotary_module(model)
    strategy = rotary.strategy
    model.config.clex_strategy = {
        "version": FORMAT_VERSION,
        "name": strategy.name,
        "options": dict(strategy.options),
        "log_scale": rotary.log_scale,
        "log_scale_clamp": rotary.log_scale_clamp,
        "log_scale_train": rotary.log_scale_train,
        "rotary_dim": strategy.rotary_dim,
        "base": strategy.base,
        "original_length": strategy.original_length,
    }


def save_strategy(model, folder: Path, tokenizer=None):
    """The strategy's parameters (CLEX's ODE) and the tokenizer, beside a config.json."""
    strategy_state = {k: v.detach().contiguous() for k, v in rotary_module(model).strategy.state_dict().items()}
    if strategy_state:
        save_file(strategy_state, str(folder / STRATEGY_WEIGHTS))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def fingerprint(directory) -> str:
    """A checkpoint's config.json and the names and sizes of its weight files: it changes when either is replaced."""
    directory = Path(directory)
    digest = hashlib.sha1((directory / "config.json").read_bytes())
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def save_reference(model, directory, source, tokenizer=None):
    """A run that trained nothing: the strategy and a reference to the checkpoint ``source`` (its absolute path and
    fingerprint) instead of a copy of its weights, atomically."""
    source = referenced(source) or Path(source).resolve()
    set_strategy_entry(model)
    model.config.clex_reference = {"path": str(source), "fingerprint": fingerprint(source)}
    try:
        with replaced_directory(directory) as tmp:
            model.config.save_pretrained(tmp)
            save_strategy(model, tmp, tokenizer)
    finally:
        del model.config.clex_reference  # the in-memory model stays what it is
    return Path(directory)


def referenced(directory) -> Path | None:
    """The checkpoint a reference folder (save_reference) points at, checked; None for a folder with weights."""
    try:
        entry = json.loads((Path(directory) / "config.json").read_text()).get("clex_reference")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict):
        return None
    source = Path(str(entry.get("path")))
    if not (source / "config.json").is_file():
        raise ConfigError(
            f"{directory} refers to the checkpoint {source}, which is not there any more; put it back, or evaluate "
            "the checkpoint where it is now"
        )
    if fingerprint(source) != entry.get("fingerprint"):
        raise ConfigError(
            f"{directory} refers to the checkpoint {source}, which has changed since (its config.json or weight "
            "files differ); evaluate it again"
        )
    return source


def load_pretrained(directory, **from_pretrained_options):
    """A checkpoint written by ``save_pretrained`` or a released CLEX checkpoint (checkpoints.official), patched with
    its strategy, ready to evaluate."""
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if official_clex(directory) is not None:
        from clex.checkpoints.official import load_official

        return load_official(directory, **from_pretrained_options)
    source = referenced(directory)
    if source is not None and official_clex(source) is not None:  # an evaluation-only run of a released checkpoint
        from clex.checkpoints.official import load_model

        model = load_model(source, **from_pretrained_options)
    else:
        model = AutoModelForCausalLM.from_pretrained(source or directory, **from_pretrained_options)
    entry = json.loads((directory / "config.json").read_text()).get("clex_strategy")
    if not entry:
        raise ValueError(f"{directory} has no clex_strategy entry in config.json: not saved by clex.save_pretrained")
    strategy = build_strategy(
        entry["name"],
        rotary_dim=entry["rotary_dim"],
        base=entry["base"],
        original_length=entry["original_length"],
        **entry["options"],
    )
    load_strategy_weights(strategy, directory)
    return patch_model(
        model,
        strategy,
        log_scale=entry["log_scale"],
        log_scale_clamp=entry.get("log_scale_clamp", True),
        log_scale_train=entry.get("log_scale_train", True),
    )


def load_strategy_weights(strategy, directory):
    """The strategy's parameters (CLEX's ODE) as save_pretrained wrote them, where it wrote any."""
    path = Path(directory) / STRATEGY_WEIGHTS
    if path.is_file():
        strategy.load_state_dict(load_file(str(path)))
    return strategy
