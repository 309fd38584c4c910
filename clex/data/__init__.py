"""Corpora, splits, tokenisation and the train / validation / evaluation token streams.

A corpus source is one file here registered in ``DATASETS``: a function of its config section
returning ``(key, text)`` documents, where ``key`` (a relative path) decides the split.
"""

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from clex.registry import ConfigError, Registry

DATASETS = Registry("dataset", "clex.data")
SPLITS = ("train", "validation", "test")
log = logging.getLogger("clex")


def split_of(key: str, validation: float, test: float) -> str:
    """Deterministic split by a hash of the document's key (not by Python's salted hash())."""
    u = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return "test" if u < test else "validation" if u < test + validation else "train"


def split_by_position(key: str, text: str, validation: float, test: float) -> list[tuple]:
    """One document cut in three: its first 1 - v - t of characters train, then validation, then test."""
    first, second = round(len(text) * (1 - validation - test)), round(len(text) * (1 - test))
    return [
        (f"{key}#train", text[:first], "train"),
        (f"{key}#validation", text[first:second], "validation"),
        (f"{key}#test", text[second:], "test"),
    ]


@dataclass
class Corpus:
    documents: dict  # split -> list of (key, text)
    fingerprint: dict  # files, bytes, sha256 over (key, content) of every document, the split


def load_corpus(cfg) -> Corpus:
    """The source's documents in train / validation / test. ``data.split``: ``hash`` (each document
    by a hash of its key: a path relative to the corpus root, so moving the folder keeps the split) or
    ``position`` (every document cut by position; automatic for fewer documents than splits). A
    source may name a document's split itself (explicit test or validation paths)."""
    source = DATASETS.get(cfg.name)
    if cfg.get("on_bad_file", "error") not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_file must be error or skip, got {cfg.on_bad_file!r}")
    docs = sorted(source(cfg), key=lambda doc: doc[0])
    if cfg.get("max_documents"):  # caps the documents split by key; those a source puts in a split stay whole
        given = [doc for doc in docs if len(doc) > 2 and doc[2]]
        docs = sorted(
            [doc for doc in docs if not (len(doc) > 2 and doc[2])][: cfg.max_documents] + given, key=lambda doc: doc[0]
        )
    mode = cfg.get("split", "hash")
    if mode == "hash" and 0 < len(docs) < len(SPLITS):
        log.info("data: %d document(s), fewer than the 3 splits: each is split by position", len(docs))
        mode = "position"
    documents = {split: [] for split in SPLITS}
    explicit = {doc[2] for doc in docs if len(doc) > 2 and doc[2]}  # these splits hold their given files only
    digest, total = hashlib.sha256(), 0
    for key, text, *given in docs:
        raw = text.encode("utf-8", "surrogateescape")
        digest.update(key.encode() + b"\0" + hashlib.sha256(raw).digest())
        total += len(raw)
        if given and given[0]:
            documents[given[0]].append((key, text))
        elif mode == "position":
            for piece, part, split in split_by_position(key, text, cfg.validation_fraction, cfg.test_fraction):
                documents["train" if split in explicit else split].append((piece, part))
        else:
            split = split_of(key, cfg.validation_fraction, cfg.test_fraction)
            documents["train" if split in explicit else split].append((key, text))
    sizes = {split: len(documents[split]) for split in SPLITS}
    for split, count in sizes.items():
        if docs and not count:
            raise ConfigError(
                f"data: the {split} split is empty ({len(docs)} documents split by {mode} into "
                f"{', '.join(f'{k} {v}' for k, v in sizes.items())}); set data.{split}_paths=[...], "
                f"data.split=position, or a larger data.{split}_fraction"
            )
    split_bytes = {split: sum(len(t) for _, t in documents[split]) for split in SPLITS}
    log.info(
        "data: %s",
        ", ".join(f"{split} {sizes[split]} documents ({split_bytes[split]:,} characters)" for split in SPLITS),
    )
    fingerprint = {
        "source": cfg.name,
        "files": len(docs),
        "bytes": total,
        "sha256": digest.hexdigest()[:16],
        "split": mode,
        "split_files": sizes,
        "split_characters": split_bytes,
    }
    return Corpus(documents, fingerprint)


class ByteTokenizer:
    """UTF-8 bytes 0..255, and 256 as the document separator."""

    vocab_size = 257
    separator = 256
    name = "bytes"
    prefix = []  # what starts a prompt (a checkpoint's BOS); bytes and our BPE have none

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", "surrogateescape"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", "replace")

    def describe(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size}


class PretrainedTokenizer:
    """A transformers tokenizer from a local directory; documents separated by its EOS token."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(
                f"model.path: {path} has no tokenizer transformers can load (tokenizer.json or "
                f"tokenizer_config.json): {' '.join(str(error).split())[:200]}"
            ) from None
        self.vocab_size = len(self.tokenizer)
        self.separator = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.name = str(path)
        # the special tokens the tokenizer puts before a text (Llama's BOS): prompts (passkey, RULER) start with them
        plain, full = self.tokenizer("a", add_special_tokens=False)["input_ids"], self.tokenizer("a")["input_ids"]
        self.prefix = full[: len(full) - len(plain)] if plain and full[len(full) - len(plain) :] == plain else []

    def encode(self, text: str) -> np.ndarray:
        from clex.data.bpe import valid_utf8  # undecodable bytes (read with surrogateescape) -> U+FFFD

        return np.asarray(self.tokenizer(valid_utf8(text), add_special_tokens=False)["input_ids"], dtype=np.int32)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def describe(self) -> dict:
        return {"kind": "pretrained", "vocab_size": self.vocab_size, "path": self.name}


def packed_tokens(tokenizer, documents) -> torch.Tensor:
    """All documents of a split, each followed by the separator, as one int32 stream."""
    texts = [text for _, text in documents]
    encoded = tokenizer.encode_batch(texts) if hasattr(tokenizer, "encode_batch") else map(tokenizer.encode, texts)
    pieces = []
    for ids in encoded:
        pieces += [ids, np.array([tokenizer.separator], dtype=np.int32)]
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


def evaluation_sequences(tokenizer, documents, length: int, max_tokens: int, seed: int):
    """Non-overlapping sequences cut from held-out documents (docs/design.md, section 5): each has length + 1
    tokens, so the model reads ``length`` tokens and every one of them is scored (its next token).

    Documents shorter than length + 1 are skipped and counted. A seeded choice of at most
    ceil(max_tokens / length) sequences keeps the cost per length bounded; the choice depends only on
    the documents, the length and the seed, so every strategy is scored on the same tokens.
    Returns (sequences [N, length + 1] int64, number of distinct documents used, documents skipped).
    """
    chunks, skipped = [], 0
    for index, (_, text) in enumerate(documents):
        tokens = tokenizer.encode(text)
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
