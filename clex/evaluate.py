"""Perplexity against length (docs/design.md, section 5) and the extrapolation-length metric."""
import contextlib
import inspect
import math

import torch
import torch.nn.functional as F


def _nll_sum(logits, targets) -> float:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()


def forward_cached(model, input_ids, cache=None):
    """One forward through the KV cache: (logits, cache). Recent transformers 5.x name the argument and
    the output ``cache``, earlier 5.x releases ``past_key_values``."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=input_ids, use_cache=True, **({name: cache} if cache is not None else {}))
    return out.logits, getattr(out, name)


def _chunked_nll(model, ids, chunk_size: int) -> float:
    """The official long-context protocol: the input in chunks, each attending to the previous ones
    through the KV cache; t is fixed to that of the whole input, so it equals one full forward."""
    from transformers import DynamicCache

    from clex.rotary import is_patched, rotary_module

    inputs, targets = ids[:, :-1], ids[:, 1:]
    # an unpatched model keeps its own rotary module: nothing to fix
    fixed = rotary_module(model).evaluation_length(inputs.shape[1]) if is_patched(model) else contextlib.nullcontext()
    total, cache = 0.0, DynamicCache()
    with fixed:
        for start in range(0, inputs.shape[1], chunk_size):
            logits, cache = forward_cached(model, inputs[:, start: start + chunk_size], cache)
            total += _nll_sum(logits, targets[:, start: start + chunk_size])
    return total


@torch.no_grad()
def sequence_nll(model, sequences: torch.Tensor, tokens_per_batch: int, chunk_size: int | None = None):
    """Sum of next-token NLL over every token of every sequence after the first, and that count;
    ``chunk_size``: score each sequence in chunks through the KV cache instead of in one forward."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = max(1, tokens_per_batch // sequences.shape[1])
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        ids = sequences[start: start + batch_size].to(device)
        if chunk_size and chunk_size < ids.shape[1] - 1:
            total += _chunked_nll(model, ids, chunk_size)
        else:
            total += _nll_sum(model(input_ids=ids[:, :-1]).logits, ids[:, 1:])
        count += ids[:, 1:].numel()
    return total, count


def extrapolation_length(rows: list[dict], train_length: int, eps: float) -> dict:
    """The largest length whose PPL stays within (1 + eps) of the PPL at the training length,
    interpolated linearly in log-length between the last length inside and the first outside.
    ``censored`` is true when every evaluated length stays inside: the value is then a lower bound."""
    rows = sorted((r for r in rows if r["length"] >= train_length and r["ppl"] is not None), key=lambda r: r["length"])
    if not rows or rows[0]["length"] != train_length:
        return {"value": None, "censored": False, "eps": eps}
    limit = (1 + eps) * rows[0]["ppl"]
    for inside, outside in zip(rows, rows[1:]):
        if not outside["ppl"] <= limit:  # NaN counts as outside
            if not math.isfinite(outside["ppl"]):
                return {"value": float(inside["length"]), "censored": False, "eps": eps}
            frac = (limit - inside["ppl"]) / (outside["ppl"] - inside["ppl"])
            log_len = math.log(inside["length"]) + frac * (math.log(outside["length"]) - math.log(inside["length"]))
            return {"value": math.exp(log_len), "censored": False, "eps": eps}
    return {"value": float(rows[-1]["length"]), "censored": True, "eps": eps}
