"""A byte-level BPE trained with the ``tokenizers`` library on the train split only (never on validation
or test text), cached under ``out_dir/.tokenizers/<corpus>-<vocabulary size>/`` and reused by every run
of that corpus. Byte-level: every text round-trips, no unknown token. A token is about 3-4 bytes of
code or prose, so a window of L tokens sees 3-4x the text of L bytes."""

import hashlib
import logging
from pathlib import Path

import numpy as np

from clex import io
from clex.errors import ConfigError

SEPARATOR = "<|endoftext|>"
FORMAT = 1  # bump when the trainer's settings change: the cache key includes it
log = logging.getLogger("clex")


def valid_utf8(text: str) -> str:
    """Undecodable bytes (read with surrogateescape) become U+FFFD: the BPE library takes valid text only."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def train_bpe(texts, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SEPARATOR],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(map(valid_utf8, texts), trainer=trainer)
    return tokenizer


class BPETokenizer:
    """``encode`` / ``encode_batch`` to int32 ids; ``tokenizer`` is the transformers wrapper saved with
    every run's model, so ``model=hf model.path=runs/X/model`` reloads it."""

    prefix = []  # no BOS: documents are separated by SEPARATOR

    def __init__(self, tokenizer, path: Path):
        from transformers import PreTrainedTokenizerFast

        self.backend = tokenizer
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=SEPARATOR)
        self.vocab_size = tokenizer.get_vocab_size()
        self.separator = tokenizer.token_to_id(SEPARATOR)
        self.name = f"bpe-{self.vocab_size}"
        self.path = str(path)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.backend.encode(valid_utf8(text)).ids, dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.int32) for e in self.backend.encode_batch([valid_utf8(t) for t in texts])]

    def decode(self, ids) -> str:
        return self.backend.decode(list(map(int, ids)))

    def describe(self) -> dict:
        return {"kind": "bpe", "vocab_size": self.vocab_size, "path": self.path}


def bpe_tokenizer(corpus, vocab_size: int, cache_root: Path) -> BPETokenizer:
    """The cached tokenizer of this corpus and vocabulary size, trained on its train split if new."""
    from tokenizers import Tokenizer

    train = hashlib.sha256("\0".join(key for key, _ in corpus.documents["train"]).encode()).hexdigest()[:8]
    root = (
        Path(cache_root) / f"{corpus.fingerprint['sha256']}-train{train}-v{vocab_size}-f{FORMAT}"
    )  # the split's train part
    path = root / "tokenizer.json"
    if path.is_file():
        return BPETokenizer(Tokenizer.from_file(str(path)), path)
    log.info("training a byte-level BPE tokenizer (vocabulary %d) on the train split", vocab_size)
    tokenizer = train_bpe((text for _, text in corpus.documents["train"]), vocab_size)
    if tokenizer.get_vocab_size() < vocab_size:
        raise ConfigError(
            f"data.vocab_size {vocab_size}: the train split supports only {tokenizer.get_vocab_size()} "
            "tokens (no pair left to merge); choose a smaller vocabulary or a larger corpus"
        )
    io.write_text(path, tokenizer.to_str())
    return BPETokenizer(tokenizer, path)
