"""What a config costs, checked before anything runs: an estimate of the peak memory of one process (the
weights with their gradients and AdamW state, plus the largest of a training step's activations in stage 2 at
train.length, in stage 1 at L0, and an evaluation forward at the longest length; a run that trains nothing,
train.steps=0 with no stage 1, is charged its whole weights alone and the evaluation), from the model's width,
layers, heads and vocabulary, the batch, the lengths, the precision and the attention implementation. A config
whose estimate exceeds the memory of this machine (or of one GPU) is refused in one line instead of exhausting it.

Measured against the peak (max RSS, /usr/bin/time) of real CPU runs of the default tiny-llama (float32, 2 steps,
eval at L) the estimate was 0.97-1.63 x the measured peak: L=1024 x 16: 1.64 GiB estimated / 1.66 measured;
L=4096 x 4: 1.64 / 1.55; L=2048 x 16: 2.67 / 2.76; eager attention L=1024 x 8: 3.00 / 1.84. Only what
exceeds the whole machine (or one GPU) is refused, so the factor never refuses a config that fits.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

from clex.errors import ConfigError
from clex.eval.memory import CPU_BUDGET, LOGIT_SLICE_BYTES, chunked_bytes, plan

GiB = 2**30
PROCESS_BYTES = 0.6 * GiB  # python, torch, transformers and Lightning themselves
TRAIN_REMEDY = "train.length or train.batch_size (or train.gradient_checkpointing=true)"
BASE_REMEDY = "model.original_length or base.batch_size (stage 1, the base pre-training at L0)"
EVAL_REMEDY = "the longest of eval.lengths / eval.multipliers (or set eval.chunk_size)"


def precision_bytes(precision: str) -> tuple[int, int]:
    """Bytes per weight (with its gradient and AdamW's two moments, each) and per activation."""
    if precision.startswith(("bf16-true", "16-true")):
        return 2, 2
    if precision.startswith(("bf16", "16")):  # mixed: float32 weights, 16-bit activations
        return 4, 2
    return 4, 4


def model_shape(cfg) -> dict | None:
    """hidden, intermediate, layers, heads, vocab of the configured model (a checkpoint's config.json for
    model=hf); None where they are not known (a checkpoint without a config: transformers says so later)."""
    m = cfg.model
    if m.name == "hf":
        path = Path(str(m.get("path"))) / "config.json"
        try:
            c = json.loads(path.read_text())
            return {
                "hidden": c["hidden_size"],
                "intermediate": c.get("intermediate_size", 4 * c["hidden_size"]),
                "layers": c["num_hidden_layers"],
                "heads": c["num_attention_heads"],
                "vocab": c["vocab_size"],
            }
        except (OSError, ValueError, KeyError, TypeError):
            return None
    vocab = 257 if cfg.data.get("tokenizer", "byte") == "byte" else int(cfg.data.vocab_size)
    return {
        "hidden": m.hidden_size,
        "intermediate": m.intermediate_size,
        "layers": m.num_layers,
        "heads": m.num_heads,
        "vocab": vocab,
    }


def peak_memory(cfg, max_length: int) -> tuple[float, str]:
    """The estimated peak bytes of one process, and the key to lower for it."""
    shape = model_shape(cfg)
    if shape is None:
        return 0.0, ""
    h, inter, layers, heads, vocab = (shape[k] for k in ("hidden", "intermediate", "layers", "heads", "vocab"))
    weight, act = precision_bytes(str(cfg.trainer.get("precision", "32-true")))
    eager = cfg.model.get("attn_implementation", "sdpa") == "eager"
    parameters = 2 * vocab * h + layers * (4 * h * h + 3 * h * inter)
    sharded = isinstance(cfg.trainer.get("strategy"), Mapping)  # fsdp / deepspeed split them over the ranks
    devices = cfg.trainer.get("devices")
    ranks = (devices if isinstance(devices, int) else 1) * cfg.trainer.get("num_nodes", 1)
    weights = 4 * weight * parameters / (ranks if sharded else 1)  # weights, gradients, AdamW's two moments

    def forward(batch, length, saved):
        """Activations of a forward of ``batch`` x ``length`` tokens: every layer's saved for the backward
        (training), or one layer's at a time (evaluation); the float32 logits and their log-softmax (evaluation
        scores them in slices of memory.LOGIT_SLICE_BYTES)."""
        per_layer = batch * length * (12 * h + 5 * inter + (3 * heads * length if eager else 0)) * act
        logits = 3 * batch * length * vocab * 4
        return per_layer * (layers + 1 if saved else 2) + (logits if saved else min(logits, LOGIT_SLICE_BYTES))

    t = cfg.train
    stages = []  # (activation bytes of one training step, the keys to lower for it)
    if t.steps:  # stage 2; train.steps=0 evaluates only
        saved = not t.gradient_checkpointing  # checkpointing keeps each layer's input only
        stage2 = forward(t.batch_size, t.length, saved) + (0 if saved else t.batch_size * t.length * h * layers * act)
        stages.append((stage2, TRAIN_REMEDY))
    if cfg.model.name != "hf" and cfg.base.steps:  # stage 1 at L0, never checkpointed (a checkpoint has none)
        stages.append((forward(cfg.base.batch_size, cfg.model.original_length, True), BASE_REMEDY))
    training, remedy = max(stages, key=lambda stage: stage[0], default=(0, TRAIN_REMEDY))
    if not stages:  # nothing is fitted, so nothing is sharded: the whole weights, without gradients or moments
        weights = weight * parameters
    given = cfg.eval.get("tokens_per_batch")
    if given is None:  # chosen at evaluation time within a budget (clex/eval/memory.py)
        eval_batch, auto_chunk = plan({**shape, "kv_heads": heads}, max_length, CPU_BUDGET, eager, act)
    else:
        eval_batch, auto_chunk = max(1, int(given) // max_length), None
    chunk = cfg.eval.get("chunk_size") or auto_chunk or max_length
    evaluation = forward(eval_batch, min(chunk, max_length), saved=False)
    if chunk < max_length:  # through the KV cache: the cache and each chunk's scores against it
        evaluation += chunked_bytes({**shape, "kv_heads": heads}, max_length, chunk, eager, act)
    if training >= evaluation:
        return PROCESS_BYTES + weights + training, remedy
    return PROCESS_BYTES + weights + evaluation, EVAL_REMEDY


def available_memory(cfg) -> tuple[float, str]:
    """Bytes one process may use: one GPU's memory, or this machine's RAM shared by its CPU ranks."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory, "one GPU's memory"
    devices = cfg.trainer.get("devices", 1)
    ranks = devices if isinstance(devices, int) and devices > 0 else 1
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return total / ranks, "this machine's memory" + (f" over {ranks} ranks" if ranks > 1 else "")


def check_clex(cfg):
    """CLEX's own checks, its cap on the solver's steps among them, before the corpus is read: its own
    options, with a stand-in head size (none of those checks depends on it)."""
    if cfg.strategy.name != "clex":
        return
    import inspect

    from omegaconf import OmegaConf

    from clex.rope.strategies.clex import Clex

    own = inspect.signature(Clex.__init__).parameters
    options = {k: v for k, v in OmegaConf.to_container(cfg.strategy).items() if k in own}
    Clex(
        rotary_dim=64,
        base=float(cfg.model.get("rope_base") or 1e4),
        original_length=int(cfg.model.get("original_length") or 128),
        **options,
    )


def check_cost(cfg, max_length: int):
    """Refuses, in one line, a config whose estimated peak memory (or ODE solve) exceeds what this machine has."""
    check_clex(cfg)
    need, lower = peak_memory(cfg, max_length)
    have, where = available_memory(cfg)
    if need > have:
        key, value = {
            TRAIN_REMEDY: ("train.length", cfg.train.length),
            BASE_REMEDY: ("model.original_length", cfg.model.get("original_length")),
        }.get(lower, ("eval.lengths", max_length))
        raise ConfigError(
            f"{key}={value}: this config needs an estimated {need / GiB:.1f} GiB of memory at its peak, "
            f"more than the {have / GiB:.1f} GiB of {where}; lower {lower}"
        )
