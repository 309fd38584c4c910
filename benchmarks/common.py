"""What the benchmarks share: the tiny settings of their ``--smoke`` mode (the test suite runs every benchmark so,
so none can rot unseen), and a tiny transformers checkpoint with its tokenizer for the ones that read one."""

from pathlib import Path

# a model of one layer and 32 wide, a few steps: checks that a benchmark runs end to end, measures nothing
SMOKE_MODEL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2"]
SMOKE_RUN = [*SMOKE_MODEL, "data.max_documents=60", "base.steps=2", "train.steps=2", "eval.multipliers=[1,2]"]


def tiny_checkpoint(path: Path) -> Path:
    """A random 2-layer Llama (L0 = 4096) and a byte-level BPE of 300 tokens trained on this file: a folder that
    ``model=hf model.path=...`` reads."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"], initial_alphabet=alphabet)
    tokenizer.train_from_iterator([Path(__file__).read_text()] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=4096,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path
