"""The LightningDataModule: the windows each fit reads, the resume skip, and one read of the corpus per command."""

import logging

import numpy as np
import torch
from omegaconf import OmegaConf

import clex.data.module as data_module
from clex.commands import run
from clex.data.corpus import Corpus
from clex.data.module import FitWindows, LongContextData
from clex.data.tokenizers import ByteTokenizer
from clex.data.windows import RandomWindows
from tests.conftest import FAST


def small_data():
    docs = {
        "train": [(f"t{i}", "".join(chr(97 + (i * 7 + j) % 26) for j in range(300))) for i in range(5)],
        "validation": [("v", "validation text " * 20)],
        "test": [("a", "x" * 40), ("b", "y" * 300)],
    }
    return LongContextData(Corpus(docs, {}), ByteTokenizer())


def test_the_streams_are_the_documents_bytes_each_followed_by_the_separator():
    data = small_data()
    expected = []
    for _, text in data.corpus.documents["train"]:
        expected += list(text.encode()) + [256]
    assert data.stream("train").tolist() == expected
    assert [t.tolist() for t in data.encoded("test")] == [list(b"x" * 40), list(b"y" * 300)]


def test_a_fit_reads_the_seeded_windows_and_a_resume_skips_the_batches_done():
    data = small_data()
    view = data.for_fit(FitWindows(length=16, batch_size=3, train=12, seed=7, validation=6, start_batch=2))
    reference = RandomWindows(data.stream("train"), 16, 12, 7)
    batches = list(view.train_dataloader())
    assert len(batches) == 2 and all(b.shape == (3, 17) for b in batches)  # batches 2 and 3 of 4: 0 and 1 done
    assert torch.equal(torch.cat(batches), torch.stack([reference[i] for i in range(6, 12)]))
    validation = torch.cat(list(view.val_dataloader()))
    assert torch.equal(validation, torch.stack(list(RandomWindows(data.stream("validation"), 16, 6, 8))))
    assert view.stream("train") is data.stream("train")  # a view shares the streams, it does not re-tokenise
    assert data.for_fit(FitWindows(16, 3, train=3, seed=0)).val_dataloader() == []


def test_a_split_too_short_for_one_window_is_refused_before_the_fit():
    import pytest

    from clex.errors import ConfigError

    with pytest.raises(ConfigError, match="validation split has"):
        small_data().for_fit(FitWindows(length=400, batch_size=1, train=1, seed=0, validation=1))


def test_a_two_run_list_reads_and_tokenises_the_corpus_once(tmp_path, monkeypatch, caplog):
    reads, encodes = [], []
    load, encode = data_module.load_corpus, data_module.encode_documents
    monkeypatch.setattr(data_module, "load_corpus", lambda cfg: reads.append(1) or load(cfg))
    monkeypatch.setattr(data_module, "encode_documents", lambda t, d: encodes.append(len(d)) or encode(t, d))
    with caplog.at_level(logging.INFO, logger="clex"):
        assert run.main([f"out_dir={tmp_path}", "strategy=rope,pi", *FAST]) == 0
    assert len(reads) == 1 and sum(m.startswith("data: train") for m in caplog.messages) == 1
    assert len(encodes) == 3  # train, validation and test, once each for both runs (and every evaluation length)
    for name in ("rope", "pi"):
        assert len(list(tmp_path.glob(f"{name}-*/results.json"))) == 1


def test_the_key_separates_what_changes_the_data():
    base = OmegaConf.create({"data": {"name": "stdlib"}, "model": {"name": "tiny-llama"}, "out_dir": "runs"})
    other = OmegaConf.merge(base, {"data": {"max_documents": 10}})
    assert LongContextData.key(base) == LongContextData.key(OmegaConf.merge(base, {"seed": 3}))
    assert LongContextData.key(base) != LongContextData.key(other)
    assert np.int32 == ByteTokenizer().encode("a").dtype


def test_shared_data_reuses_a_key_drops_the_oldest_and_keeps_its_cache_when_a_config_is_refused(monkeypatch):
    from types import SimpleNamespace

    from clex.errors import ConfigError
    from clex.train import experiment

    given = []

    def fake_prepare(cfg, load_weights=True, data=None):
        given.append(data)
        if cfg.get("refuse"):
            raise ConfigError("refused")
        return SimpleNamespace(data=data or f"read {cfg.data.name}")

    monkeypatch.setattr(experiment, "prepare", fake_prepare)

    def cfg(name, **extra):
        return OmegaConf.create({"data": {"name": name}, "model": {"name": "m"}, "out_dir": "runs", **extra})

    shared = experiment.SharedData(keep=1)
    assert shared.prepare(cfg("a")).data == "read a" and shared.prepare(cfg("a")).data == "read a"
    assert given == [None, "read a"]  # the second run of corpus a did not read it again
    try:
        shared.prepare(cfg("a", refuse=True))
    except ConfigError:
        pass
    assert shared.of(cfg("a")) == "read a"  # a refused config keeps the cache
    shared.prepare(cfg("b"))
    assert shared.of(cfg("a")) is None and shared.of(cfg("b")) == "read b"  # keep=1: the oldest dropped
