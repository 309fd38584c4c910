"""Key-token perplexity (Fang et al., "What is wrong with perplexity for long-context language modeling?",
arXiv 2410.23771): perplexity over the tokens that need far context, picked by a fixed evaluator model.

For a scored sequence of n tokens, the target predicted from input position i is a *key token* when

    log p_E(x_{i+1} | x_0 .. x_i) - log p_E(x_{i+1} | x_{i-L0+1} .. x_i) > threshold,

the evaluator E's gain from seeing the whole context instead of only the last L0 tokens (targets with i < L0
see the same context both ways: never key tokens). The short-context log-probabilities are exact: one window
of L0 tokens per target, each scoring its last prediction. The evaluator is fixed per comparison (the same key
tokens for every method of a seed); the evaluator's gains are cached in ``cache_dir`` by a hash of its weights,
the sequences and L0, so every method of a comparison (and another threshold) reads them instead of recomputing.
"""

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from clex import io
from clex.eval.perplexity import sliced_nll


@torch.no_grad()
def target_logprobs(model, sequences: torch.Tensor, tokens_per_batch: int) -> torch.Tensor:
    """log p(ids[:, i+1] | ids[:, :i+1]) for every i: [N, n] float32 from [N, n + 1] ids (one forward each)."""
    model.eval()
    device = next(model.parameters()).device
    rows = max(1, tokens_per_batch // sequences.shape[1])
    out = []
    for start in range(0, len(sequences), rows):
        ids = sequences[start : start + rows].to(device)
        out.append(-sliced_nll(model, ids[:, :-1], ids[:, 1:]).cpu())
    return torch.cat(out)


@torch.no_grad()
def short_context_logprobs(model, sequences: torch.Tensor, window: int, tokens_per_batch: int) -> torch.Tensor:
    """log p(ids[:, i+1] | the last ``window`` inputs up to i) for every i >= window: [N, n - window]."""
    model.eval()
    device = next(model.parameters()).device
    n = sequences.shape[1] - 1
    rows = max(1, tokens_per_batch // (window + 1))
    out = []
    for sequence in sequences:
        # the windows ids[i - window + 1 .. i + 1] for i = window .. n - 1: inputs of window tokens and their target
        windows = sequence.unfold(0, window + 1, 1)[1 : n - window + 1]
        pieces = []
        for start in range(0, len(windows), rows):
            ids = windows[start : start + rows].to(device)
            logits = model(input_ids=ids[:, :-1]).logits[:, -1].float()
            pieces.append(-F.cross_entropy(logits, ids[:, -1], reduction="none").cpu())
        out.append(torch.cat(pieces) if pieces else torch.zeros(0))
    return torch.stack(out)


def context_gains(model, sequences: torch.Tensor, window: int, tokens_per_batch: int) -> torch.Tensor:
    """[N, n]: each target's log-probability gain under ``model`` from the whole context over the last ``window``
    tokens (0 where the two contexts are the same)."""
    full = target_logprobs(model, sequences, tokens_per_batch)
    gains = torch.zeros_like(full)
    if sequences.shape[1] - 1 > window:
        gains[:, window:] = full[:, window:] - short_context_logprobs(model, sequences, window, tokens_per_batch)
    return gains


def key_token_mask(model, sequences: torch.Tensor, window: int, threshold: float, tokens_per_batch: int):
    """[N, n] bool: the targets whose log-probability under ``model`` gains more than ``threshold`` nats from the
    whole context over the last ``window`` tokens."""
    return context_gains(model, sequences, window, tokens_per_batch) > threshold


def weights_fingerprint(model) -> str:
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class KeyTokens:
    """The evaluator (a checkpoint folder: a run's ``model/`` or any save_pretrained / official CLEX checkpoint)
    and its gains, computed once per set of sequences and cached under ``cache_dir`` (the threshold is applied on
    reading: another threshold recomputes nothing)."""

    def __init__(self, evaluator: str, original_length: int, threshold: float, tokens_per_batch: int, cache_dir):
        self.path, self.window, self.threshold = str(evaluator), int(original_length), float(threshold)
        self.tokens_per_batch, self.cache_dir = tokens_per_batch, Path(cache_dir)
        self._model = self._fingerprint = None

    def model(self):
        if self._model is None:
            from clex.checkpoints.pretrained import load_pretrained

            self._model = load_pretrained(self.path)
            self._fingerprint = weights_fingerprint(self._model)
        return self._model

    def gains(self, sequences: torch.Tensor) -> torch.Tensor:
        model = self.model()
        key = hashlib.sha1(f"{self._fingerprint}|{self.window}".encode() + sequences.numpy().tobytes()).hexdigest()
        path = self.cache_dir / f"gains-{key[:16]}.pt"
        if path.is_file():
            return io.load_tensors(path, "cached key-token gains", f"delete {path} to compute them again")
        gains = context_gains(model, sequences, self.window, self.tokens_per_batch)
        io.atomic_write(path, lambda handle: torch.save(gains, handle))
        return gains

    def mask(self, sequences: torch.Tensor) -> torch.Tensor:
        return self.gains(sequences) > self.threshold
