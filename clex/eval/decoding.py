"""Decoding through the KV cache, shared by passkey retrieval, the RULER-style tasks and the harness: one
cached forward, and greedy answers that keep the prompt's t for every generated token."""

import contextlib
import functools
import inspect

import torch

from clex.rope.patch import is_patched, rotary_module


@functools.cache
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


@torch.no_grad()
def greedy_answer(model, prompt: torch.Tensor, answer_length: int, chunk_size: int | None = None) -> torch.Tensor:
    """``answer_length`` greedy tokens after ``prompt``, through the KV cache; ``chunk_size``: the prompt is
    read in chunks (as ``eval.chunk_size`` scores perplexity). A patched model keeps the prompt's t for the
    answer too: the cached keys and the new queries rotate with the same frequencies."""
    device = next(model.parameters()).device
    fixed = rotary_module(model).evaluation_length(len(prompt)) if is_patched(model) else contextlib.nullcontext()
    generated, cache, step_size = [], None, chunk_size or len(prompt)
    with fixed:
        for start in range(0, len(prompt), step_size):
            logits, cache = forward_cached(
                model, prompt[None, start : start + step_size].to(device), cache, last_only=True
            )
        for step in range(answer_length):
            token = logits[:, -1].argmax(-1, keepdim=True)
            generated.append(int(token))
            if step + 1 < answer_length:
                logits, cache = forward_cached(model, token, cache, last_only=True)
    return torch.tensor(generated)
