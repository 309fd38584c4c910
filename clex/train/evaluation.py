"""Evaluation of a trained model: perplexity at each length under the configured protocol (the windows, the batch
that fits in memory, key tokens), with a progress line on stderr; results.py writes what it finds."""

import math
import sys
import time
from pathlib import Path

import torch

from clex.data.windows import evaluation_sequences
from clex.eval.perplexity import (
    binned_nll,
    key_token_options,
    long_enough,
    sequence_nll,
    shared_sequences,
    sliding_windows,
)


def evaluate_lengths(cfg, prepared) -> tuple[list[dict], list[dict] | None]:
    """Perplexity at each evaluation length under the configured protocol (evaluate.protocol), and with
    ``eval.position_bins`` the mean NLL per position bin at the longest length (else None)."""
    rows, documents, bins = [], prepared.data.encoded("test"), None  # tokenised once, for every length
    lengths = prepared.eval_lengths
    if cfg.eval.get("documents") == "longest":
        documents = long_enough(documents, max(lengths))
    too_short = len(prepared.corpus.documents["test"]) - len(documents)  # counted as skipped at every length
    if cfg.eval.get("same_tokens"):  # the longest length's windows, cut into pieces for every other length
        longest, used, skipped = evaluation_sequences(documents, max(lengths), cfg.eval.max_tokens, cfg.eval.seed)
    keys = key_tokens(cfg, prepared)
    for length in lengths:
        scored = None
        if cfg.eval.get("stride"):
            sequences, scored, used, skipped = sliding_windows(
                documents, length, cfg.eval.stride, cfg.eval.max_tokens, cfg.eval.seed
            )
        elif cfg.eval.get("same_tokens"):
            sequences = shared_sequences(longest, length)
        else:
            sequences, used, skipped = evaluation_sequences(documents, length, cfg.eval.max_tokens, cfg.eval.seed)
        row = {
            "length": length,
            "ppl": None,
            "nll": None,
            "tokens": 0,
            "documents": used,
            "skipped_documents": skipped + too_short,
        }
        if len(sequences):
            by_position = bool(cfg.eval.get("position_bins")) and length == max(lengths)
            key_mask = keys.mask(sequences) if keys is not None else None
            out = score(cfg, prepared, row, sequences, scored, by_position, key_mask)
            if by_position:
                bins = binned_nll(out[2], len(sequences), prepared.original_length)
        rows.append(row)
    return rows, bins


def score(cfg, prepared, row: dict, sequences, scored, by_position: bool, key_mask) -> tuple:
    """Scores one length's sequences into ``row`` (PPL, NLL, tokens, tokens/s, the batch and chunk chosen, key-token
    PPL); returns sequence_nll's output (with the per-position NLL where ``by_position``)."""
    length = row["length"]
    cuda = torch.cuda.is_available() and next(prepared.model.parameters()).is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    tokens_per_batch, chunk_size = evaluation_batch(cfg.eval, prepared.model, length)
    row.update(tokens_per_batch=tokens_per_batch, chunk_size=chunk_size)
    out = sequence_nll(
        prepared.model,
        sequences,
        tokens_per_batch,
        chunk_size,
        scored,
        by_position=by_position,
        key_mask=key_mask,
        progress=Progress(length),
    )
    total, count = out[:2]
    if key_mask is not None:
        key_total, key_count = out[-2:]
        key_nll = key_total / key_count if key_count else None
        row.update(key_tokens=key_count, key_nll=key_nll, key_ppl=None if key_nll is None else exp_or_inf(key_nll))
    nll = total / count
    row.update(
        nll=nll,
        ppl=exp_or_inf(nll),
        tokens=count,
        tokens_per_second=count / max(time.time() - start, 1e-9),
        peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    )
    return out


def exp_or_inf(nll: float) -> float:
    return math.exp(nll) if nll < 700 else math.inf


class Progress:
    """Evaluation progress on stderr at one length, at most every ``every`` seconds: sequences done, tokens/s,
    time left (a 16k-token evaluation of a real model takes minutes)."""

    def __init__(self, length: int, every: float = 10.0):
        self.length, self.every = length, every
        self.start = self.last = time.time()

    def __call__(self, done: int, total: int, tokens: int):
        now = time.time()
        if now - self.last < self.every or done == total:
            return
        self.last, elapsed = now, now - self.start
        print(
            f"evaluation at {self.length}: {done}/{total} sequences, {tokens / elapsed:,.0f} tokens/s, "
            f"about {elapsed * (total - done) / done:.0f} s left",
            file=sys.stderr,
            flush=True,
        )


def activation_budget(model) -> float:
    """Bytes an evaluation forward's activations may take: half the GPU memory free now, or on a CPU
    memory.CPU_BUDGET (or a quarter of the memory available, if less)."""
    from clex.eval.memory import CPU_BUDGET, GPU_FRACTION

    device = next(model.parameters()).device
    if device.type == "cuda":
        return GPU_FRACTION * torch.cuda.mem_get_info(device)[0]
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return CPU_BUDGET
    return min(CPU_BUDGET, available / 4)


def evaluation_batch(eval_cfg, model, length: int) -> tuple[int, int | None]:
    """(tokens per forward, KV chunk or None) at ``length``: ``eval.tokens_per_batch`` / ``eval.chunk_size`` where
    given, else chosen by memory.plan from the model's shape and activation_budget."""
    from clex.eval.memory import plan

    given_tokens, given_chunk = eval_cfg.get("tokens_per_batch"), eval_cfg.get("chunk_size")
    if given_tokens is not None:
        return int(given_tokens), given_chunk
    c = model.config
    shape = {
        "hidden": c.hidden_size,
        "intermediate": getattr(c, "intermediate_size", None) or 4 * c.hidden_size,
        "heads": c.num_attention_heads,
        "kv_heads": getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
        "layers": c.num_hidden_layers,
    }
    act_bytes = 2 if next(model.parameters()).dtype in (torch.bfloat16, torch.float16) else 4
    eager = getattr(c, "_attn_implementation", "sdpa") == "eager"
    sequences, chunk = plan(shape, length, activation_budget(model), eager, act_bytes)
    return sequences * length, given_chunk or chunk


def key_tokens(cfg, prepared):
    """``eval.key_tokens``: the evaluator whose key tokens are scored beside every token (clex/eval/key_tokens.py)."""
    options = key_token_options(cfg.eval)
    if options is None:
        return None
    from clex.eval.key_tokens import KeyTokens

    return KeyTokens(
        options["evaluator"],
        prepared.original_length,
        options["threshold"],
        cfg.eval.tokens_per_batch or 16384,
        Path(cfg.out_dir) / ".key_tokens",
    )
