"""Perplexity against length (docs/design.md, section 5) under three protocols (full sequences, KV-chunked,
sliding window) and the extrapolation-length metric."""
import contextlib
import functools
import inspect
import logging
import math

import torch
import torch.nn.functional as F


def _nll_sum(logits, targets) -> float:
    """Summed NLL of the targets; -100 marks a target that is not scored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()


@functools.lru_cache(maxsize=None)
def forward_parameters(model_type) -> frozenset:
    """The argument names of a model class's forward (read once, not at every decoding step)."""
    return frozenset(inspect.signature(model_type.forward).parameters)


def forward_cached(model, input_ids, cache=None, last_only: bool = False):
    """One forward through the KV cache: (logits, cache). Recent transformers 5.x name the argument and
    the output ``cache``, earlier 5.x releases ``past_key_values``. ``last_only``: the last position's
    logits only (a 128k-token prompt's full logits would take tens of GB)."""
    parameters = forward_parameters(type(model))
    name = "cache" if "cache" in parameters else "past_key_values"
    options = {name: cache} if cache is not None else {}
    if last_only and "logits_to_keep" in parameters:
        options["logits_to_keep"] = 1
    out = model(input_ids=input_ids, use_cache=True, **options)
    return out.logits, getattr(out, name)


def _chunked_nll(model, inputs, targets, chunk_size: int) -> float:
    """The official long-context protocol: the input in chunks, each attending to the previous ones
    through the KV cache; t is fixed to that of the whole input, so it equals one full forward."""
    from transformers import DynamicCache

    from clex.rotary import is_patched, rotary_module

    # an unpatched model keeps its own rotary module: nothing to fix
    fixed = rotary_module(model).evaluation_length(inputs.shape[1]) if is_patched(model) else contextlib.nullcontext()
    total, cache = 0.0, DynamicCache()
    with fixed:
        for start in range(0, inputs.shape[1], chunk_size):
            logits, cache = forward_cached(model, inputs[:, start: start + chunk_size], cache)
            total += _nll_sum(logits, targets[:, start: start + chunk_size])
    return total


@torch.no_grad()
def sequence_nll(model, sequences: torch.Tensor, tokens_per_batch: int, chunk_size: int | None = None,
                 scored: torch.Tensor | None = None):
    """Sum of next-token NLL over the scored tokens of every sequence, and their count. ``scored[i]``:
    only the last scored[i] predictions of sequence i count (sliding windows); None: every one.
    ``chunk_size``: each sequence in chunks through the KV cache instead of one forward."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = max(1, tokens_per_batch // sequences.shape[1])
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        ids = sequences[start: start + batch_size].to(device)
        inputs, targets = ids[:, :-1], ids[:, 1:].clone()
        if scored is not None:
            first = targets.shape[1] - scored[start: start + batch_size].to(device)
            targets[torch.arange(targets.shape[1], device=device)[None] < first[:, None]] = -100
        if chunk_size and chunk_size < inputs.shape[1]:
            total += _chunked_nll(model, inputs, targets, chunk_size)
        else:
            total += _nll_sum(model(input_ids=inputs).logits, targets)
        count += int((targets != -100).sum())
    return total, count


def sliding_windows(tokenizer, documents, window: int, stride: int, max_tokens: int, seed: int):
    """Sliding-window scoring (how YaRN and others evaluate PG19): windows of ``window`` tokens moved by
    ``stride`` over each held-out document, each scoring only the predictions past the previous window's,
    so every token is scored once and, after the first window, with at least window - stride tokens
    of context. The last window ends at the document's end. Documents in a seeded order until
    ``max_tokens`` predictions are scored; documents shorter than window + 1 tokens are skipped.
    Returns (windows [N, window + 1], scored [N], documents used, documents skipped)."""
    order = torch.randperm(len(documents), generator=torch.Generator().manual_seed(seed)).tolist()
    windows, scored, used, skipped, total = [], [], 0, 0, 0
    for index in order:
        if total >= max_tokens:
            break
        tokens = torch.as_tensor(tokenizer.encode(documents[index][1]), dtype=torch.long)
        predictions = len(tokens) - 1
        if predictions < window:
            skipped += 1
            continue
        used, done, begin = used + 1, 0, 0
        while done < predictions and total < max_tokens:
            begin = min(begin, predictions - window)
            windows.append(tokens[begin: begin + window + 1])
            scored.append(begin + window - done)
            total, done, begin = total + scored[-1], begin + window, begin + stride
    if not windows:
        return torch.zeros(0, window + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0, skipped
    return torch.stack(windows), torch.tensor(scored), used, skipped


WARNED = set()


def warn_once(message: str):
    """A config warning once per process (a comma list checks every config before the first run)."""
    if message not in WARNED:
        WARNED.add(message)
        logging.getLogger("clex").warning(message)


def check_options(eval_cfg, lengths: list[int]):
    """``eval.*``, before anything runs: one line naming the key and what it allows."""
    from omegaconf import OmegaConf

    from clex import ruler
    from clex.config import require

    require(eval_cfg.max_tokens >= 1, "eval.max_tokens", "must be >= 1", eval_cfg.max_tokens)
    require(eval_cfg.chunk_size is None or eval_cfg.chunk_size >= 1, "eval.chunk_size", "must be >= 1 or null",
            eval_cfg.chunk_size)
    require(0 < eval_cfg.eps, "eval.eps", "must be > 0", eval_cfg.eps)
    require(eval_cfg.get("documents") in (None, "longest"), "eval.documents", "must be null (each length: the "
            "documents long enough for it) or longest (every length: those long enough for the longest)",
            eval_cfg.get("documents"))
    stride = eval_cfg.get("stride")
    require(stride is None or (isinstance(stride, int) and not isinstance(stride, bool) and 1 <= stride <= min(lengths)),
            "eval.stride", f"must be null or an integer from 1 to the shortest evaluation length ({min(lengths)})", stride)
    if stride and eval_cfg.max_tokens <= max(lengths):
        warn_once(f"warning: eval.max_tokens {eval_cfg.max_tokens} is at most the longest evaluation length "
                  f"{max(lengths)}: with eval.stride that length scores one window per document, with no overlap; "
                  "raise eval.max_tokens")
    if eval_cfg.get("passkey"):
        ruler.check_depths("eval.passkey.depths", OmegaConf.to_container(eval_cfg.passkey).get("depths"))
    if eval_cfg.get("ruler"):
        ruler.check_options(OmegaConf.to_container(eval_cfg.ruler))


def long_enough(tokenizer, documents, length: int) -> list:
    """The documents with more than ``length`` tokens (``eval.documents=longest``: every length is scored on
    these, so the columns of a table differ in length only, not also in which documents they read)."""
    return [doc for doc in documents if len(tokenizer.encode(doc[1])) > length]


def protocol(eval_cfg) -> dict:
    """How perplexity was scored, for results.json and every table header."""
    chunk, stride = eval_cfg.get("chunk_size"), eval_cfg.get("stride")
    entry = {"name": "sliding_window" if stride else "kv_chunked" if chunk else "full",
             "window": "the evaluation length", "chunk_size": chunk}
    if stride:
        entry["stride"] = stride
    if eval_cfg.get("documents") == "longest":
        entry["documents"] = "longest"
    return entry


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
