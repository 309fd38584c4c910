"""The corpus split is stable across processes, disjoint and complete; evaluation data is fixed."""
import subprocess
import sys

import torch
from omegaconf import OmegaConf

from clex.data import ByteTokenizer, RandomWindows, evaluation_sequences, load_corpus, split_of

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
    code = "from clex.data import split_of; print([split_of(f'pkg/m{i}.py', 0.05, 0.05) for i in range(200)])"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
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
    sequences, documents, skipped = evaluation_sequences(tokenizer, docs, 20, max_tokens=10_000, seed=0)
    assert skipped == 1 and documents == 2 and sequences.shape == (4 + 2, 21)
    again, _, _ = evaluation_sequences(tokenizer, docs, 20, max_tokens=10_000, seed=0)
    assert torch.equal(sequences, again)
    b = torch.tensor(list(docs[1][1].encode()))
    assert any(torch.equal(s, b[21:42]) for s in sequences)  # chunk 2 of document b, no overlap
    few, _, _ = evaluation_sequences(tokenizer, docs, 20, max_tokens=40, seed=0)
    assert len(few) == 2


def test_random_windows_repeat_under_a_seed():
    tokens = torch.arange(1000, dtype=torch.int32)
    a, b = RandomWindows(tokens, 16, 8, seed=0), RandomWindows(tokens, 16, 8, seed=0)
    assert all(torch.equal(a[i], b[i]) and len(a[i]) == 17 for i in range(8))
    assert torch.equal(a[3], torch.arange(int(a[3][0]), int(a[3][0]) + 17))
