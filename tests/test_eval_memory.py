"""Evaluation that fits: the batch shrinks with the length, the KV chunk appears where one sequence would not fit,
the logits are materialised a slice at a time, and slice-wise scoring equals one whole forward."""

import pytest
import torch
from conftest import tiny_llama, tiny_neox

from clex.eval import memory
from clex.eval.perplexity import _token_nll, sequence_nll, sliced_nll

SHAPE = {"hidden": 576, "intermediate": 1536, "heads": 9, "kv_heads": 3, "layers": 30}  # SmolLM2-135M


def test_the_batch_shrinks_with_the_length_and_a_chunk_appears_where_one_sequence_would_not_fit():
    budget = memory.CPU_BUDGET
    plans = {n: memory.plan(SHAPE, n, budget) for n in (512, 2048, 8192, 32768)}
    sequences = [plans[n][0] for n in sorted(plans)]
    assert sequences == sorted(sequences, reverse=True) and sequences[0] > sequences[1]
    assert all(plans[n][0] * n * memory.token_bytes(SHAPE, n) <= budget for n in (512, 2048))
    assert plans[512][1] is None and plans[32768][1] is not None  # whole forwards, then KV chunks
    chunk = plans[32768][1]
    assert chunk < 32768 and memory.chunked_bytes(SHAPE, 32768, chunk) > memory.kv_bytes(SHAPE) * 32768


def test_the_logit_slice_shrinks_with_the_vocabulary():
    slices = [memory.logit_slice(v) for v in (257, 2048, 49152, 256000)]
    assert slices == sorted(slices, reverse=True) and all(
        12 * v * s <= memory.LOGIT_SLICE_BYTES for v, s in zip((257, 2048, 49152, 256000), slices, strict=True)
    )


@pytest.mark.parametrize("build", [tiny_llama, tiny_neox])
def test_slice_wise_scoring_equals_one_whole_forward(build, monkeypatch):
    model = build()
    ids = torch.randint(0, 97, (3, 41), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = _token_nll(model(input_ids=ids[:, :-1]).logits, ids[:, 1:])
        monkeypatch.setattr(memory, "LOGIT_SLICE_BYTES", 12 * 97 * 7)  # slices of 7 tokens: 18 of them
        sliced = sliced_nll(model, ids[:, :-1], ids[:, 1:])
    assert memory.logit_slice(97) == 7 and torch.allclose(sliced, whole, atol=1e-5)
    total, count = sequence_nll(model, ids, tokens_per_batch=82)  # two sequences per forward, sliced
    assert count == whole.numel() and total == pytest.approx(float(whole.sum()), rel=1e-5)


def test_evaluation_progress_says_sequences_speed_and_time_left(capsys):
    from clex.train.evaluation import Progress

    progress = Progress(2048, every=0.0)
    progress(2, 8, 4096)
    progress(8, 8, 16384)  # the last forward: the table follows, no line
    err = capsys.readouterr().err
    assert err.startswith("evaluation at 2048: 2/8 sequences,") and "tokens/s, about" in err and err.count("\n") == 1
