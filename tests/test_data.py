"""The corpus split is stable across processes, disjoint and complete; evaluation data is fixed."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from clex.data.corpus import load_corpus, split_of
from clex.data.tokenizers import ByteTokenizer
from clex.data.windows import RandomWindows, encode_documents, evaluation_sequences

STDLIB = OmegaConf.create({"name": "stdlib", "validation_fraction": 0.05, "test_fraction": 0.05, "max_documents": None})


def test_split_is_disjoint_complete_and_proportionate():
    corpus = load_corpus(STDLIB)
    keys = {split: {k for k, _ in docs} for split, docs in corpus.documents.items()}
    assert not (keys["train"] & keys["validation"]) and not (keys["train"] & keys["test"])
    assert not (keys["validation"] & keys["test"])
    assert sum(map(len, keys.values())) == corpus.fingerprint["files"] > 500
    assert all("site-packages" not in k for k in keys["train"])
    assert 0.02 < len(keys["test"]) / corpus.fingerprint["files"] < 0.08
    assert all(text for docs in corpus.documents.values() for _, text in docs)  # no empty files


def test_split_is_stable_across_processes_and_hash_seeds():
    code = "from clex.data.corpus import split_of; print([split_of(f'pkg/m{i}.py', 0.05, 0.05) for i in range(200)])"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": seed, "PATH": ""}
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == str([split_of(f"pkg/m{i}.py", 0.05, 0.05) for i in range(200)])


def test_fingerprint_changes_with_the_corpus():
    full = load_corpus(STDLIB).fingerprint
    part = load_corpus(OmegaConf.merge(STDLIB, {"max_documents": 100})).fingerprint
    assert full["sha256"] != part["sha256"] and part["files"] == 100
    assert load_corpus(STDLIB).fingerprint == full


def test_evaluation_sequences_are_fixed_non_overlapping_and_count_skips():
    tokenizer = ByteTokenizer()
    docs = [("a", "x" * 10), ("b", "".join(chr(65 + i % 26) for i in range(100))), ("c", "y" * 45)]
    sequences, documents, skipped = evaluation_sequences(
        encode_documents(tokenizer, docs), 20, max_tokens=10_000, seed=0
    )
    assert skipped == 1 and documents == 2 and sequences.shape == (4 + 2, 21)
    again, _, _ = evaluation_sequences(encode_documents(tokenizer, docs), 20, max_tokens=10_000, seed=0)
    assert torch.equal(sequences, again)
    b = torch.tensor(list(docs[1][1].encode()))
    assert any(torch.equal(s, b[21:42]) for s in sequences)  # chunk 2 of document b, no overlap
    few, _, _ = evaluation_sequences(encode_documents(tokenizer, docs), 20, max_tokens=40, seed=0)
    assert len(few) == 2


def test_random_windows_repeat_under_a_seed():
    tokens = torch.arange(1000, dtype=torch.int32)
    a, b = RandomWindows(tokens, 16, 8, seed=0), RandomWindows(tokens, 16, 8, seed=0)
    assert all(torch.equal(a[i], b[i]) and len(a[i]) == 17 for i in range(8))
    assert torch.equal(a[3], torch.arange(int(a[3][0]), int(a[3][0]) + 17))


def novels(folder, count=6, size=4000):
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"book{i}.txt").write_text(f"Chapter {i}. " + "It was a dark and stormy night. " * (size // 32))
    return folder


def text_cfg(folder, **extra):
    return OmegaConf.create(
        {
            "name": "text",
            "paths": [f"{folder}/*.txt"],
            "text_field": "text",
            "test_paths": [],
            "validation_paths": [],
            "split": "hash",
            "validation_fraction": 0.05,
            "test_fraction": 0.05,
            "max_documents": None,
            **extra,
        }
    )


def test_an_empty_split_is_refused_naming_it_and_the_fixes(tmp_path):
    from clex.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"the (test|validation) split is empty \(6 documents split by hash.*data.split=position"
    ):
        load_corpus(text_cfg(novels(tmp_path / "books")))


def test_position_split_and_explicit_test_paths_fill_every_split(tmp_path):
    folder = novels(tmp_path / "books")
    by_position = load_corpus(text_cfg(folder, split="position"))
    assert {s: len(d) for s, d in by_position.documents.items()} == {"train": 6, "validation": 6, "test": 6}
    text = (folder / "book0.txt").read_text()
    pieces = [dict(by_position.documents[s])["book0.txt#" + s] for s in ("train", "validation", "test")]
    assert "".join(pieces) == text and abs(len(pieces[2]) / len(text) - 0.05) < 0.01
    explicit = load_corpus(
        text_cfg(folder, test_paths=[str(folder / "book5.txt")], validation_paths=[str(folder / "book4.txt")])
    )
    assert [k for k, _ in explicit.documents["test"]] == ["book5.txt"]
    assert [k for k, _ in explicit.documents["validation"]] == ["book4.txt"]
    assert len(explicit.documents["train"]) == 4


def test_fewer_documents_than_splits_are_split_by_position(tmp_path):
    corpus = load_corpus(text_cfg(novels(tmp_path / "one", count=1)))
    assert corpus.fingerprint["split"] == "position" and all(len(d) == 1 for d in corpus.documents.values())


def test_moving_the_corpus_keeps_its_split(tmp_path):
    folder = novels(tmp_path / "a" / "books", count=200, size=64)
    before = load_corpus(text_cfg(folder))
    moved = folder.rename(tmp_path / "elsewhere")
    after = load_corpus(text_cfg(moved))
    assert before.documents == after.documents and before.fingerprint == after.fingerprint


def test_a_checkpoint_tokenizer_reads_text_with_undecodable_bytes(tmp_path):
    """Files read with surrogateescape (the stdlib has some) used to crash a checkpoint's fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from clex.data.tokenizers import PretrainedTokenizer

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="b").save_pretrained(tmp_path)
    text = b"a \xff b".decode("utf-8", "surrogateescape")
    assert PretrainedTokenizer(str(tmp_path)).encode(text).tolist() == [0, 2, 1]
