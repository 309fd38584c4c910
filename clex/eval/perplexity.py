"""Perplexity against length (docs/design.md, section 5) under three protocols (full sequences, KV-chunked,
sliding window) and the extrapolation-length metric."""

import contextlib
import math

import torch
import torch.nn.functional as F


def _token_nll(logits, targets) -> torch.Tensor:
    """NLL of each target [B, T]; -100 marks a target that is not scored (its NLL is 0)."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


def sliced_nll(model, inputs, targets) -> torch.Tensor:
    """``_token_nll`` of a forward without its whole logits: the decoder's hidden states once, then the output head
    on slices of memory.logit_slice(vocabulary) tokens (a 49k vocabulary makes 16k tokens' logits 3 GB, and the
    log-softmax copies them). Models that transform their logits after the head (soft-capping, a logit scale) take
    the whole forward."""
    from clex.eval.memory import logit_slice

    head, config = model.get_output_embeddings(), model.config
    step = logit_slice(head.weight.shape[0]) if head is not None else inputs.numel()
    transformed = getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None)
    if inputs.numel() <= step or transformed or not hasattr(model, "base_model"):
        return _token_nll(model(input_ids=inputs).logits, targets)
    hidden = model.base_model(input_ids=inputs).last_hidden_state
    flat, wanted = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    pieces = [
        F.cross_entropy(head(flat[s : s + step]).float(), wanted[s : s + step], reduction="none")
        for s in range(0, len(wanted), step)
    ]
    return torch.cat(pieces).view(targets.shape)


def _chunked_nll(model, inputs, targets, chunk_size: int) -> float:
    """The official long-context protocol: the input in chunks, each attending to the previous ones
    through the KV cache; t is fixed to that of the whole input, so it equals one full forward."""
    from transformers import DynamicCache

    from clex.eval.decoding import forward_cached
    from clex.rope.patch import is_patched, rotary_module

    # an unpatched model keeps its own rotary module: nothing to fix
    fixed = rotary_module(model).evaluation_length(inputs.shape[1]) if is_patched(model) else contextlib.nullcontext()
    pieces, cache = [], DynamicCache()
    with fixed:
        for start in range(0, inputs.shape[1], chunk_size):
            logits, cache = forward_cached(model, inputs[:, start : start + chunk_size], cache)
            pieces.append(_token_nll(logits, targets[:, start : start + chunk_size]))
    return torch.cat(pieces, dim=1)


@torch.no_grad()
def sequence_nll(
    model,
    sequences: torch.Tensor,
    tokens_per_batch: int,
    chunk_size: int | None = None,
    scored: torch.Tensor | None = None,
    by_position: bool = False,
    key_mask: torch.Tensor | None = None,
    progress=None,
):
    """Sum of next-token NLL over the scored tokens of every sequence, and their count. ``scored[i]``:
    only the last scored[i] predictions of sequence i count (sliding windows); None: every one.
    ``chunk_size``: each sequence in chunks through the KV cache instead of one forward.
    ``by_position``: also the NLL summed over sequences at each input position [length] (float64).
    ``key_mask`` [N, length]: also the NLL sum and count over the targets it marks (key tokens), last.
    ``progress(sequences done, sequences, tokens done)`` is called after each forward."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = max(1, tokens_per_batch // sequences.shape[1])
    total, count, key_total, key_count = 0.0, 0, 0.0, 0
    per_position = torch.zeros(sequences.shape[1] - 1, dtype=torch.float64)
    for start in range(0, len(sequences), batch_size):
        ids = sequences[start : start + batch_size].to(device)
        inputs, targets = ids[:, :-1], ids[:, 1:].clone()
        if scored is not None:
            first = targets.shape[1] - scored[start : start + batch_size].to(device)
            targets[torch.arange(targets.shape[1], device=device)[None] < first[:, None]] = -100
        if chunk_size and chunk_size < inputs.shape[1]:
            nll = _chunked_nll(model, inputs, targets, chunk_size)
        else:
            nll = sliced_nll(model, inputs, targets)
        total += nll.sum().item()
        if by_position:
            per_position += nll.sum(0).double().cpu()
        count += int((targets != -100).sum())
        if key_mask is not None:
            keys = key_mask[start : start + batch_size].to(device) & (targets != -100)
            key_total, key_count = key_total + nll[keys].sum().item(), key_count + int(keys.sum())
        if progress is not None:
            progress(min(start + batch_size, len(sequences)), len(sequences), count)
    return (
        (total, count)
        + ((per_position,) if by_position else ())
        + ((key_total, key_count) if key_mask is not None else ())
    )


def position_bins(original_length: int, length: int) -> list[tuple[int, int]]:
    """The bins of ``eval.position_bins``: [0, L0), [L0, 2 L0), [2 L0, 4 L0), ... up to ``length``."""
    bins, start, end = [], 0, original_length
    while start < length:
        bins.append((start, min(end, length)))
        start, end = end, 2 * end
    return bins


def binned_nll(per_position: torch.Tensor, sequences: int, original_length: int) -> list[dict]:
    """Mean NLL of the predictions made at input positions [start, end), for each bin."""
    rows = []
    for start, end in position_bins(original_length, len(per_position)):
        tokens = (end - start) * sequences
        rows.append(
            {
                "start": start,
                "end": end,
                "tokens": tokens,
                "nll": float(per_position[start:end].sum()) / tokens if tokens else None,
            }
        )
    return rows


def shared_sequences(longest: torch.Tensor, length: int) -> torch.Tensor:
    """``eval.same_tokens``: each window of the longest length cut into consecutive pieces of ``length``
    (+1) tokens that overlap by one, so every length predicts exactly the same tokens, only with less
    context; [N, longest + 1] -> [N * longest / length, length + 1]."""
    total = longest.shape[1] - 1
    if total % length:
        raise ValueError(f"{length} does not divide the longest evaluation length {total}")
    return torch.cat([longest[:, k * length : (k + 1) * length + 1] for k in range(total // length)])


def sliding_windows(encoded, window: int, stride: int, max_tokens: int, seed: int):
    """Sliding-window scoring (how YaRN and others evaluate PG19): windows of ``window`` tokens moved by
    ``stride`` over each held-out document (``encoded``: each one's token ids), each scoring only the
    predictions past the previous window's,
    so every token is scored once and, after the first window, with at least window - stride tokens
    of context. The last window ends at the document's end. Documents in a seeded order until
    ``max_tokens`` predictions are scored; documents shorter than window + 1 tokens are skipped.
    Returns (windows [N, window + 1], scored [N], documents used, documents skipped)."""
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed)).tolist()
    windows, scored, used, skipped, total = [], [], 0, 0, 0
    for index in order:
        if total >= max_tokens:
            break
        tokens = torch.as_tensor(encoded[index], dtype=torch.long)
        predictions = len(tokens) - 1
        if predictions < window:
            skipped += 1
            continue
        used, done, begin = used + 1, 0, 0
        while done < predictions and total < max_tokens:
            begin = min(begin, predictions - window)
            windows.append(tokens[begin : begin + window + 1])
            scored.append(begin + window - done)
            total, done, begin = total + scored[-1], begin + window, begin + stride
    if not windows:
        return torch.zeros(0, window + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long), 0, skipped
    return torch.stack(windows), torch.tensor(scored), used, skipped


def key_token_options(eval_cfg) -> dict | None:
    """``eval.key_tokens``: a checkpoint folder (the evaluator; threshold 2 nats) or {evaluator, threshold}."""
    from omegaconf import DictConfig, OmegaConf

    from clex.errors import ConfigError

    keys = eval_cfg.get("key_tokens")
    if keys is None:
        return None
    if isinstance(keys, str):
        return {"evaluator": keys, "threshold": 2.0}
    if (
        isinstance(keys, DictConfig)
        and isinstance(keys.get("evaluator"), str)
        and set(keys) <= {"evaluator", "threshold"}
    ):
        return {"evaluator": keys.evaluator, "threshold": keys.get("threshold", 2.0)}
    shown = OmegaConf.to_container(keys) if isinstance(keys, DictConfig) else keys
    raise ConfigError(
        "eval.key_tokens must be a checkpoint folder (e.g. runs/<name>/model; runs/<name>-seed${seed}/model gives each "
        f"seed its own) or {{evaluator: <folder>, threshold: <nats>}}, got {shown!r}"
    )


def check_options(eval_cfg, lengths: list[int]):
    """``eval.*``, before anything runs: one line naming the key and what it allows."""

    from clex.errors import require, warn

    require(eval_cfg.max_tokens >= 1, "eval.max_tokens", "must be >= 1", eval_cfg.max_tokens)
    if eval_cfg.max_tokens <= max(lengths):
        warn(
            f"eval.max_tokens {eval_cfg.max_tokens} is at most the longest evaluation length "
            f"{max(lengths)}: that length scores one sequence; raise eval.max_tokens for a steadier number",
            once=True,
        )
    require(
        eval_cfg.chunk_size is None or eval_cfg.chunk_size >= 1,
        "eval.chunk_size",
        "must be >= 1 or null",
        eval_cfg.chunk_size,
    )
    require(0 < eval_cfg.eps, "eval.eps", "must be > 0", eval_cfg.eps)
    require(
        eval_cfg.get("documents") in (None, "longest"),
        "eval.documents",
        "must be null (each length: the "
        "documents long enough for it) or longest (every length: those long enough for the longest)",
        eval_cfg.get("documents"),
    )
    stride = eval_cfg.get("stride")
    same_tokens, bins = eval_cfg.get("same_tokens", False), eval_cfg.get("position_bins", False)
    require(isinstance(same_tokens, bool), "eval.same_tokens", "must be true or false", same_tokens)
    require(isinstance(bins, bool), "eval.position_bins", "must be true or false", bins)
    require(
        not ((same_tokens or bins) and stride),
        "eval.same_tokens / eval.position_bins",
        "score full sequences; they do not combine with eval.stride",
        stride,
    )
    require(
        not same_tokens or all(max(lengths) % n == 0 for n in lengths),
        "eval.same_tokens",
        f"cuts the longest length's windows into pieces of each length, so every length must divide the longest "
        f"({max(lengths)}); got lengths",
        lengths,
    )
    require(
        stride is None or (isinstance(stride, int) and not isinstance(stride, bool) and 1 <= stride <= min(lengths)),
        "eval.stride",
        f"must be null or an integer from 1 to the shortest evaluation length ({min(lengths)})",
        stride,
    )
    if stride and eval_cfg.max_tokens <= max(lengths):
        warn(
            f"eval.max_tokens {eval_cfg.max_tokens} is at most the longest evaluation length "
            f"{max(lengths)}: with eval.stride that length scores one window per document, with no overlap; "
            "raise eval.max_tokens",
            once=True,
        )
    check_key_tokens(eval_cfg, stride)
    from clex.eval.tasks import check_tasks

    check_tasks(eval_cfg, lengths)


def check_key_tokens(eval_cfg, stride):
    """``eval.key_tokens``: a threshold in nats > 0, on full sequences."""
    from clex.errors import require

    keys = key_token_options(eval_cfg)
    if keys is not None:
        threshold = keys["threshold"]
        require(
            isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and threshold > 0,
            "eval.key_tokens.threshold",
            "must be a number of nats > 0",
            threshold,
        )
        require(not stride, "eval.key_tokens", "scores full sequences; it does not combine with eval.stride", stride)


def long_enough(encoded, length: int) -> list:
    """The documents (their token ids) with more than ``length`` tokens (``eval.documents=longest``: every length
    is scored on these, so the columns of a table differ in length only, not also in which documents they read)."""
    return [tokens for tokens in encoded if len(tokens) > length]


def extrapolation_length(rows: list[dict], reference: int, eps: float) -> dict:
    """The largest length whose PPL stays within (1 + eps) of the PPL at the ``reference`` length (the training
    length L where it is evaluated; config.compose.reference_length), interpolated linearly in log-length between
    the last length inside and the first outside. ``censored`` is true when every evaluated length stays inside:
    the value is then a lower bound."""
    rows = sorted((r for r in rows if r["length"] >= reference and r["ppl"] is not None), key=lambda r: r["length"])
    if not rows or rows[0]["length"] != reference:
        return {"value": None, "censored": False, "eps": eps, "reference": reference}
    limit = (1 + eps) * rows[0]["ppl"]
    for inside, outside in zip(rows, rows[1:], strict=False):
        if not outside["ppl"] <= limit:  # NaN counts as outside
            if not math.isfinite(outside["ppl"]):
                return {"value": float(inside["length"]), "censored": False, "eps": eps, "reference": reference}
            frac = (limit - inside["ppl"]) / (outside["ppl"] - inside["ppl"])
            log_len = math.log(inside["length"]) + frac * (math.log(outside["length"]) - math.log(inside["length"]))
            return {"value": math.exp(log_len), "censored": False, "eps": eps, "reference": reference}
    return {"value": float(rows[-1]["length"]), "censored": True, "eps": eps, "reference": reference}
