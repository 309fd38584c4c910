"""The run's data as a LightningDataModule, read once: corpus -> splits -> tokenizer -> token streams ->
the windows and loaders of each ``trainer.fit`` (stage 1 at L0, stage 2 at L), and the evaluation's
documents, each tokenised once for every length and protocol."""

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf

from clex.data.corpus import load_corpus
from clex.data.tokenizers import build_tokenizer
from clex.data.windows import RandomWindows, ResumeSampler, encode_documents, packed_tokens
from clex.errors import require


@dataclass(frozen=True)
class FitWindows:
    """What one ``trainer.fit`` reads: ``train`` windows of ``length`` + 1 tokens from the train split (item i
    fixed by ``seed``), the first ``start_batch`` batches skipped on a resume, and ``validation`` windows."""

    length: int
    batch_size: int
    train: int
    seed: int
    validation: int = 0
    start_batch: int = 0


class LongContextData(L.LightningDataModule):
    """``corpus`` and ``tokenizer`` of a run; token streams and test encodings are computed on first use and
    shared by every view ``for_fit`` makes (stage 1 and stage 2 of one run, the runs of one command)."""

    def __init__(self, corpus, tokenizer):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self._streams, self._encoded = {}, {}
        self.windows = self.train_windows = self.validation_windows = None

    @classmethod
    def from_config(cls, data_cfg, model_cfg, cache_root) -> "LongContextData":
        """``cache_root``: where a trained BPE tokenizer is cached (out_dir/.tokenizers)."""
        corpus = load_corpus(data_cfg)
        require(len(corpus.documents["train"]) > 0, "data", "has no training documents", corpus.fingerprint)
        return cls(corpus, build_tokenizer(data_cfg, model_cfg, Path(cache_root), corpus))

    @staticmethod
    def key(cfg) -> str:
        """What decides a run's data: the runs of one command, or a sweep worker's trials, with the same key share
        one LongContextData."""
        tokenizer = {"model": cfg.model.name, "path": cfg.model.get("path"), "cache": str(cfg.out_dir)}
        return json.dumps([OmegaConf.to_container(cfg.data, resolve=True), tokenizer], sort_keys=True, default=str)

    def stream(self, split: str) -> torch.Tensor:
        """The split's documents, each followed by the separator, as one int32 stream."""
        if split not in self._streams:  # the per-document ids are kept for the test split only (evaluation)
            encoded = self._encoded.get(split) or encode_documents(self.tokenizer, self.corpus.documents[split])
            self._streams[split] = packed_tokens(encoded, self.tokenizer.separator)
        return self._streams[split]

    def encoded(self, split: str) -> list:
        """Each document's token ids, in the split's order (tokenised once)."""
        if split not in self._encoded:
            self._encoded[split] = encode_documents(self.tokenizer, self.corpus.documents[split])
        return self._encoded[split]

    def for_fit(self, windows: FitWindows) -> "LongContextData":
        """A view for one ``trainer.fit``, sharing this one's streams; its windows are cut now, so a split too
        short for them is refused before Lightning starts."""
        view = copy.copy(self)
        view.windows = windows
        view.train_windows = RandomWindows(self.stream("train"), windows.length, windows.train, windows.seed)
        view.validation_windows = (
            RandomWindows(
                self.stream("validation"), windows.length, windows.validation, windows.seed + 1, split="validation"
            )
            if windows.validation
            else None
        )
        return view

    def _loader(self, dataset, start_batch: int = 0):
        sampler = ResumeSampler(len(dataset), start_batch * self.windows.batch_size)
        return torch.utils.data.DataLoader(dataset, batch_size=self.windows.batch_size, sampler=sampler)

    def train_dataloader(self):
        return self._loader(self.train_windows, self.windows.start_batch)

    def val_dataloader(self):
        return self._loader(self.validation_windows) if self.validation_windows is not None else []
