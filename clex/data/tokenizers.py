"""Tokenizers: bytes, a checkpoint's own (transformers), or a BPE trained on the corpus (clex.data.bpe)."""

from pathlib import Path

import numpy as np

from clex.errors import ConfigError


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
        except Exception as error:  # transformers and tokenizers raise many kinds on a malformed file
            raise ConfigError(
                f"model.path: {path} has no tokenizer transformers can load (tokenizer.json or "
                f"tokenizer_config.json): {type(error).__name__}: {' '.join(str(error).split())[:200]}"
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


def build_tokenizer(data_cfg, model_cfg, cache_root: Path, corpus=None):
    """The model's own tokenizer when it has one (``model=hf``: ``model.path``); else ``data.tokenizer``: bytes,
    or a byte-level BPE trained on the corpus's train split (cached under ``cache_root``)."""
    from clex.data.bpe import bpe_tokenizer
    from clex.models import checkpoint_dir

    if model_cfg.name == "hf":
        return PretrainedTokenizer(checkpoint_dir(model_cfg))
    if data_cfg.get("tokenizer", "byte") == "bpe":
        return bpe_tokenizer(corpus, int(data_cfg.vocab_size), Path(cache_root))
    return ByteTokenizer()
