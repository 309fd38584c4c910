"""Key-token perplexity: the key tokens are those a direct computation finds (one short-context forward per
target), their NLL is scored beside every token's, and every method of a comparison scores the same ones."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama

from clex.eval.key_tokens import key_token_mask, short_context_logprobs, target_logprobs
from clex.eval.perplexity import sequence_nll

WINDOW, LENGTH = 8, 24


def direct_gains(model, sequence):
    """For each input position i >= WINDOW: log p(x_{i+1} | x_0..x_i) - log p(x_{i+1} | x_{i-WINDOW+1}..x_i)."""
    gains = []
    with torch.no_grad():
        for i in range(WINDOW, LENGTH):
            full = F.log_softmax(model(input_ids=sequence[None, : i + 1]).logits[0, -1], -1)[sequence[i + 1]]
            short = F.log_softmax(model(input_ids=sequence[None, i - WINDOW + 1 : i + 1]).logits[0, -1], -1)
            gains.append(float(full - short[sequence[i + 1]]))
    return torch.tensor(gains)


@pytest.fixture(scope="module")
def model_and_sequences():
    model = tiny_llama(L0=64)
    with torch.no_grad():  # sharper attention than at initialisation, so context moves the log-probabilities
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
    return model, torch.randint(0, 97, (3, LENGTH + 1), generator=torch.Generator().manual_seed(0))


def test_short_context_logprobs_match_one_forward_per_target(model_and_sequences):
    model, sequences = model_and_sequences
    full = target_logprobs(model, sequences, tokens_per_batch=50)
    short = short_context_logprobs(model, sequences, WINDOW, tokens_per_batch=20)
    for sequence, full_row, short_row in zip(sequences, full, short, strict=True):
        assert torch.allclose(full_row[WINDOW:] - short_row, direct_gains(model, sequence), atol=1e-5)


def test_the_mask_marks_the_targets_whose_gain_passes_the_threshold(model_and_sequences):
    model, sequences = model_and_sequences
    gains = torch.stack([direct_gains(model, s) for s in sequences])
    threshold = float(gains.quantile(0.7))  # some tokens in, most out
    mask = key_token_mask(model, sequences, WINDOW, threshold, tokens_per_batch=40)
    assert not mask[:, :WINDOW].any()  # the same context both ways: never key tokens
    assert torch.equal(mask[:, WINDOW:], gains > threshold) and 0 < int(mask.sum()) < mask[:, WINDOW:].numel()


def test_sequence_nll_scores_the_key_tokens_beside_every_token(model_and_sequences):
    model, sequences = model_and_sequences
    mask = torch.rand(3, LENGTH, generator=torch.Generator().manual_seed(1)) < 0.3
    total, count, key_total, key_count = sequence_nll(model, sequences, tokens_per_batch=50, key_mask=mask)
    nll = -target_logprobs(model, sequences, 1000)
    assert count == nll.numel() and total == pytest.approx(float(nll.sum()), rel=1e-5)
    assert key_count == int(mask.sum()) and key_total == pytest.approx(float(nll[mask].sum()), rel=1e-5)


@pytest.mark.slow
def test_every_method_of_a_comparison_scores_the_same_key_tokens(tmp_path):
    from test_run import tiny_args

    from clex.commands import run

    evaluator = tmp_path / "evaluator"
    assert run.main(tiny_args(tmp_path, "strategy=rope", "name=evaluator", "eval.multipliers=[1]")) == 0
    keys = f"eval.key_tokens={{evaluator: {evaluator / 'model'}, threshold: 0.001}}"
    common = ["base.steps=4", "eval.multipliers=[1,2,4]", "eval.same_tokens=true", keys]
    assert run.main(tiny_args(tmp_path, "strategy=pi,yarn", "strategy.factor=4", *common)) == 0
    results = [json.loads(p.read_text()) for p in tmp_path.glob("*/results.json") if p.parent.name != "evaluator"]
    assert len(results) == 2 and all(r["key_tokens"]["threshold"] == 0.001 for r in results)
    counts = [[row["key_tokens"] for row in r["eval"]] for r in results]
    assert counts[0] == counts[1] and counts[0][0] == 0 and counts[0][-1] > 0  # none within L0 = L = 32
    for r in results:
        scored = [row for row in r["eval"] if row["key_tokens"]]
        assert all(row["key_ppl"] > 0 and row["key_ppl"] != row["ppl"] for row in scored)
    assert len(list((tmp_path / ".key_tokens").glob("gains-*.pt"))) == 3  # one per length, computed once
    comparison = next(tmp_path.glob("comparison-*/comparison.md")).read_text()
    assert "## Key-token perplexity" in comparison and "key-token PPL(variant) - key-token PPL(reference)" in comparison
