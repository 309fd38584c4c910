from clex.errors import ConfigError
from clex.models import MODELS, checkpoint_dir


@MODELS.register("hf")
def pretrained(cfg, tokenizer):
    """A local transformers checkpoint directory (``model.path``); no hub access is attempted. A released
    CLEX checkpoint gives its family's plain model (its ODE goes into the strategy: clex.checkpoints.official)."""
    from transformers import AutoModelForCausalLM

    from clex.checkpoints.config_json import official_clex
    from clex.checkpoints.pretrained import referenced

    path = referenced(checkpoint_dir(cfg)) or checkpoint_dir(cfg)  # an evaluation-only run's folder: its checkpoint
    try:
        if official_clex(path) is not None:
            from clex.checkpoints.official import load_model

            return load_model(path, attn_implementation=cfg.attn_implementation)
        return AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, attn_implementation=cfg.attn_implementation
        )
    except ConfigError:
        raise
    except Exception as error:  # a malformed weight file: safetensors, torch and transformers raise many kinds
        raise ConfigError(
            f"model.path: {cfg.path} holds no model transformers can load: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:200]}"
        ) from None


SIZES = ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size", "max_position_embeddings")


def check_numbers(path, config: dict):
    """The sizes a run reads from config.json are positive integers and the rope base a finite number > 1: one line
    naming the file and the key (before: a ZeroDivisionError, or PPL inf from rope_theta NaN)."""
    import math

    for key in SIZES:
        value = config.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{path}/config.json: {key} must be a positive integer, got {value!r}")
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else config
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is not None and not (
        isinstance(theta, (int, float)) and not isinstance(theta, bool) and math.isfinite(theta) and theta > 1
    ):
        raise ConfigError(f"{path}/config.json: rope_theta must be a finite number > 1, got {theta!r}")


def check_checkpoint(path):
    """Before anything is built: a rope type that neither transformers nor clex knows is refused in one
    line (transformers would raise KeyError while building the model), and a released CLEX checkpoint's
    ODE tensors must be there with the shapes its config gives."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from clex.checkpoints.config_json import official_clex, read_config

    config = read_config(path) or {}
    check_numbers(path, config)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else rope
    known = sorted({"default", "clex", *ROPE_INIT_FUNCTIONS})
    if kind not in known:
        key = "rope_parameters.rope_type" if "rope_parameters" in config else "rope_scaling.type"
        raise ConfigError(
            f"{path}/config.json: {key} {kind!r} is not a rope type transformers or clex knows; "
            f"known: {', '.join(known)}"
        )
    settings = official_clex(path)
    if settings is not None:
        from clex.checkpoints.official import ode_tensors, transformers_config
        from clex.rope.patch import rotary_settings

        ode_tensors(path, settings, rotary_settings(transformers_config(settings))["rotary_dim"])
