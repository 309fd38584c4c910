"""Token streams and the windows cut from them: packed training streams, seeded random windows, the
resumable sampler, and the held-out evaluation sequences."""

import numpy as np
import torch

from clex.errors import ConfigError


def encode_documents(tokenizer, documents) -> list[np.ndarray]:
    """Each document's token ids (int32), in the documents' order; batched where the tokenizer can."""
    texts = [text for _, text in documents]
    return list(tokenizer.encode_batch(texts) if hasattr(tokenizer, "encode_batch") else map(tokenizer.encode, texts))


def packed_tokens(encoded: list[np.ndarray], separator: int) -> torch.Tensor:
    """Encoded documents, each followed by the separator, as one int32 stream."""
    pieces = []
    for ids in encoded:
        pieces += [ids, np.array([separator], dtype=np.int32)]
    return torch.from_numpy(np.concatenate(pieces)) if pieces else torch.zeros(0, dtype=torch.int32)


class RandomWindows(torch.utils.data.Dataset):
    """``count`` windows of ``length + 1`` tokens at seeded random offsets of a token stream: item i
    is always the same window, so a run (or a resumed run) sees the same data in the same order."""

    def __init__(self, tokens: torch.Tensor, length: int, count: int, seed: int, split: str = "train"):
        if len(tokens) < length + 2:
            raise ConfigError(
                f"data: the {split} split has {len(tokens)} tokens, fewer than one window of {length + 2}; "
                "use a larger corpus or a shorter train.length"
            )
        self.tokens, self.length = tokens, length
        generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.randint(0, len(tokens) - length - 1, (count,), generator=generator)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        start = int(self.offsets[i])
        return self.tokens[start : start + self.length + 1].long()


class ResumeSampler(torch.utils.data.Sampler):
    """Indices ``start .. size-1`` in order, with the length of the whole epoch: a run resumed after
    k optimiser steps skips the k batches it has already trained on, and Lightning still counts the
    epoch's batches from the checkpoint."""

    def __init__(self, size: int, start: int = 0):
        self.size, self.start = size, start

    def __len__(self):
        return self.size

    def __iter__(self):
        return iter(range(self.start, self.size))


def evaluation_sequences(encoded: list[np.ndarray], length: int, max_tokens: int, seed: int):
    """Non-overlapping sequences cut from held-out documents (``encoded``: each one's token ids; docs/design.md,
    section 5): each has length + 1 tokens, so the model reads ``length`` tokens and every one of them is scored
    (its next token).

    Documents shorter than length + 1 are skipped and counted. A seeded choice of at most
    ceil(max_tokens / length) sequences keeps the cost per length bounded; the choice depends only on
    the documents, the length and the seed, so every strategy is scored on the same tokens.
    Returns (sequences [N, length + 1] int64, number of distinct documents used, documents skipped).
    """
    chunks, skipped = [], 0
    for index, tokens in enumerate(encoded):
        size = length + 1
        if len(tokens) < size:
            skipped += 1
            continue
        chunks += [(index, tokens[i * size : (i + 1) * size]) for i in range(len(tokens) // size)]
    if not chunks:
        return torch.zeros(0, length + 1, dtype=torch.long), 0, skipped
    count = min(len(chunks), -(-max_tokens // length))
    order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    chosen = [chunks[i] for i in order.tolist()]
    sequences = torch.from_numpy(np.stack([c[1] for c in chosen])).long()
    return sequences, len({c[0] for c in chosen}), skipped
