from clex.models import MODELS, checkpoint_dir


@MODELS.register("hf")
def pretrained(cfg, tokenizer):
    """A local transformers checkpoint directory (``model.path``); no hub access is attempted."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(checkpoint_dir(cfg), local_files_only=True,
                                                attn_implementation=cfg.attn_implementation)
