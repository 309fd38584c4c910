"""Corpus -> train / validation / test documents, by a hash of each document's key or by position."""

import hashlib
import logging
from dataclasses import dataclass

from clex.data.sources import DATASETS
from clex.errors import ConfigError

SPLITS = ("train", "validation", "test")
log = logging.getLogger("clex")


def split_of(key: str, validation: float, test: float) -> str:
    """Deterministic split by a hash of the document's key (not by Python's salted hash())."""
    u = int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64
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
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(raw).digest())
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
