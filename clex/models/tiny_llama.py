from transformers import LlamaConfig, LlamaForCausalLM

from clex.models import MODELS


@MODELS.register("tiny-llama")
def tiny_llama(cfg, tokenizer):
    """A randomly initialised Llama; ``original_length`` (L0) is its pre-training length."""
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.original_length,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        tie_word_embeddings=True,
        attn_implementation=cfg.attn_implementation,
    )
    return LlamaForCausalLM(config)
