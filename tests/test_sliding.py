"""Sliding-window perplexity: every token scored once with the stated context, the same numbers as an
independent per-window computation, and the protocol named in results.json and the table header."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import said

from clex.commands import run
from clex.data.windows import encode_documents
from clex.eval.perplexity import sequence_nll, sliding_windows
from tests.conftest import FAST, tiny_llama


class Positions:
    """A tokenizer whose token ids are the positions in the text: windows show where they were cut."""

    def encode(self, text):
        return np.arange(len(text), dtype=np.int32)


@pytest.mark.parametrize("length, window, stride", [(101, 32, 8), (64, 32, 32), (33, 32, 5), (200, 48, 17)])
def test_every_prediction_is_scored_once_with_at_least_window_minus_stride_context(length, window, stride):
    windows, scored, used, skipped = sliding_windows(
        encode_documents(Positions(), [("d", "x" * length)]), window, stride, 10**9, 0
    )
    assert used == 1 and skipped == 0 and windows.shape[1] == window + 1
    targets = []
    for ids, k in zip(windows.tolist(), scored.tolist(), strict=False):
        assert ids == list(range(ids[0], ids[0] + window + 1))  # consecutive tokens of the document
        for target in ids[-k:]:
            assert ids[0] == 0 or target - ids[0] >= window - stride + 1  # its context: the tokens before it
        targets += ids[-k:]
    assert sorted(targets) == list(range(1, length))  # every prediction once


def test_short_documents_are_skipped_and_max_tokens_bounds_the_scored_count():
    docs = [("short", "x" * 20), ("a", "x" * 500), ("b", "x" * 500)]
    windows, scored, used, skipped = sliding_windows(encode_documents(Positions(), docs), 32, 16, 100, 0)
    assert 100 <= int(scored.sum()) < 100 + 32 and used == 1
    _, scored, used, skipped = sliding_windows(encode_documents(Positions(), docs), 32, 16, 10**9, 0)
    assert used == 2 and skipped == 1 and int(scored.sum()) == 2 * 499


@torch.no_grad()
def test_the_nll_of_scored_windows_equals_a_per_window_reference():
    model = tiny_llama(L0=64)
    torch.manual_seed(0)
    windows = torch.randint(0, 97, (3, 41))
    scored = torch.tensor([40, 7, 13])
    total, count = sequence_nll(model, windows, tokens_per_batch=80, scored=scored)  # two batches
    reference = 0.0
    for ids, k in zip(windows, scored.tolist(), strict=False):
        logits = model(input_ids=ids[None, :-1]).logits[0]
        reference += F.cross_entropy(logits[-k:], ids[1:][-k:], reduction="sum").item()
    assert count == 60 and total == pytest.approx(reference, rel=1e-5)
    chunked, chunked_count = sequence_nll(model, windows, tokens_per_batch=80, scored=scored, chunk_size=16)
    assert chunked_count == 60 and chunked == pytest.approx(reference, rel=1e-4)


@torch.no_grad()
def test_a_stride_of_one_window_scores_like_non_overlapping_sequences():
    model = tiny_llama(L0=64)
    document = [("d", "x" * (3 * 32 + 1))]
    windows, scored, _, _ = sliding_windows(encode_documents(Positions(), document), 32, 32, 10**9, 0)
    assert windows.tolist() == [list(range(i * 32, i * 32 + 33)) for i in range(3)] and scored.tolist() == [32] * 3
    assert sequence_nll(model, windows, 10_000, scored=scored) == pytest.approx(sequence_nll(model, windows, 10_000))


@pytest.mark.parametrize(
    "arg, message",
    [
        ("eval.stride=0", "eval.stride must be an integer >= 1 or null, got 0"),
        ("eval.stride=300", "the shortest evaluation length (128)"),
    ],
)
def test_a_bad_stride_is_one_line_and_exit_2(tmp_path, capsys, arg, message):
    assert run.main([f"out_dir={tmp_path}", arg]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.slow
def test_a_sliding_window_run_records_its_protocol(tmp_path, capsys):
    args = [
        f"out_dir={tmp_path}",
        "eval.stride=32",
        *FAST,
        "eval.multipliers=[1,2]",
        "eval.max_tokens=512",
    ]
    assert run.main(args) == 0
    assert "perplexity: sliding window (window = the evaluation length, stride 32" in capsys.readouterr().out
    [results] = [json.loads(p.read_text()) for p in tmp_path.glob("clex-*/results.json")]
    assert results["eval_protocol"] == {
        "name": "sliding_window",
        "window": "the evaluation length",
        "stride": 32,
        "chunk_size": None,
    }
    assert all(512 <= row["tokens"] < 512 + 256 and math.isfinite(row["ppl"]) for row in results["eval"])


def test_longest_documents_keeps_only_those_long_enough_for_every_length(tmp_path, capsys):
    from clex.eval.perplexity import long_enough

    docs = [("a", "x" * 50), ("b", "x" * 150), ("c", "x" * 300), ("d", "x" * 257)]
    assert [len(t) for t in long_enough(encode_documents(Positions(), docs), 256)] == [
        300,
        257,
    ]  # more than 256 tokens: 257 and up
    assert run.main([f"out_dir={tmp_path}", "eval.documents=all"]) == 2
    assert "eval.documents must be null" in capsys.readouterr().err


def test_longest_documents_with_none_long_enough_is_refused_before_training(tmp_path, capsys):
    # chunked through the KV cache (4 GB of it), 1M tokens fit in memory; no stdlib test file is that long
    args = [f"out_dir={tmp_path}", "eval.documents=longest", "eval.lengths=[128,1000000]", "eval.chunk_size=1024"]
    assert run.main(args) == 2
    _, errors = said(capsys.readouterr().err)
    err = errors[0]
    assert len(errors) == 1 and "eval.documents =longest needs test documents of more than 1000000" in err
    assert not any(tmp_path.iterdir())
