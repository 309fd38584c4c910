from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from clex.models import MODELS


@MODELS.register("tiny-neox")
def tiny_neox(cfg, tokenizer):
    """A randomly initialised GPT-NeoX, rotating ``partial_rotary_factor`` of each head."""
    config = GPTNeoXConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.original_length,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": cfg.rope_base,
            "partial_rotary_factor": cfg.partial_rotary_factor,
        },
        attn_implementation=cfg.attn_implementation,
    )
    return GPTNeoXForCausalLM(config)
