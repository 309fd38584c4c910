from clex.models import MODELS, checkpoint_dir
from clex.registry import ConfigError


@MODELS.register("hf")
def pretrained(cfg, tokenizer):
    """A local transformers checkpoint directory (``model.path``); no hub access is attempted."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(checkpoint_dir(cfg), local_files_only=True,
                                                    attn_implementation=cfg.attn_implementation)
    except (OSError, ValueError) as error:
        raise ConfigError(f"model.path: {cfg.path} holds no model transformers can load: "
                          f"{' '.join(str(error).split())[:200]}") from None
