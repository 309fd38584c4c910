import os

# Under pytest-xdist (pyproject's addopts: one worker per core this process may use) each worker, and every process
# it starts, keeps to one torch thread: the workers share the cores instead of oversubscribing them. Set before torch
# is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

# a run of the real entry point in seconds: a tiny model, no base pre-training, one fine-tuning step
FAST = [
    "data.max_documents=60",
    "base.steps=0",
    "train.steps=1",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "trainer.enable_progress_bar=false",
]


def tiny_llama(rope_parameters=None, L0=64, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=L0,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
    )
    return LlamaForCausalLM(config).eval()


def tiny_neox(rope_parameters=None, L0=64, seed=0):
    torch.manual_seed(seed)
    params = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    params.update(rope_parameters or {})
    config = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=L0,
        rope_parameters=params,
    )
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(params=["llama", "neox"])
def family(request):
    return {"llama": tiny_llama, "neox": tiny_neox}[request.param]


def save_tiny_tokenizer(path):
    """A byte-level BPE (300 tokens, <eos>) trained here, saved as a transformers tokenizer in ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(["def f(x):\n    return x + 1\n"] * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")
    fast.save_pretrained(path)
    return fast


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort, the same on every worker): the quick ones then fill the workers'
    gaps instead of leaving one worker alone with the longest test at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: the cores this process may use (a SLURM slot or a container's cpuset), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def said(err: str) -> tuple[list[str], list[str]]:
    """stderr split into its warnings (each a "warning: " line, clex.errors.warn) and its other lines."""
    lines = err.strip().splitlines()
    return [w for w in lines if w.startswith("warning: ")], [e for e in lines if not e.startswith("warning: ")]
