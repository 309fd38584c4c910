"""The protocol of Table 1 at L = 4 x L0: L0 is the base's own key, every length scores the same tokens, and the
loss by position is what a direct computation gives."""

import math

import pytest
import torch
import torch.nn.functional as F

from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.errors import ConfigError
from clex.eval.perplexity import binned_nll, position_bins, sequence_nll, shared_sequences
from tests.conftest import tiny_llama


def test_train_length_does_not_move_l0():
    cfg = single_config(CONFIG_DIR, ["train.length=512"])
    assert cfg.train.length == 512 and cfg.model.original_length == 128


def test_every_length_predicts_the_same_tokens():
    longest = torch.randint(0, 97, (3, 64 + 1), generator=torch.Generator().manual_seed(0))
    for length in (8, 16, 32, 64):
        pieces = shared_sequences(longest, length)
        assert pieces.shape == (3 * 64 // length, length + 1)
        # piece k of window w predicts tokens k*length+1 .. (k+1)*length of w: together, exactly w[1:]
        order = torch.arange(len(pieces)).reshape(64 // length, 3).T.reshape(-1)
        assert torch.equal(pieces[order, 1:].reshape(3, 64), longest[:, 1:])
        assert torch.equal(pieces[order, :-1].reshape(3, 64), longest[:, :-1])  # and read the same inputs
    with pytest.raises(ValueError, match="does not divide"):
        shared_sequences(longest, 24)


def test_same_tokens_needs_lengths_that_divide_the_longest():
    with pytest.raises(ConfigError, match="every length must divide the longest"):
        from clex.config.compose import validate

        validate(single_config(CONFIG_DIR, ["eval.same_tokens=true", "eval.lengths=[128,192,512]"]))


def test_position_bins_are_the_direct_mean_nll():
    model = tiny_llama(L0=16)
    sequences = torch.randint(0, 97, (5, 64 + 1), generator=torch.Generator().manual_seed(1))
    total, count, per_position = sequence_nll(model, sequences, tokens_per_batch=128, by_position=True)  # 3 batches
    with torch.no_grad():
        logits = model(sequences[:, :-1]).logits
    direct = F.cross_entropy(logits.transpose(1, 2), sequences[:, 1:], reduction="none")  # [5, 64]
    assert position_bins(16, 64) == [(0, 16), (16, 32), (32, 64)]
    bins = binned_nll(per_position, len(sequences), 16)
    for row, (start, end) in zip(bins, position_bins(16, 64), strict=False):
        assert row["tokens"] == 5 * (end - start)
        assert math.isclose(row["nll"], direct[:, start:end].mean().item(), rel_tol=1e-5)
    assert math.isclose(total / count, direct.mean().item(), rel_tol=1e-5) and count == 5 * 64


@pytest.mark.slow
def test_a_run_writes_the_loss_by_position_of_its_longest_length(tmp_path):
    import json

    from omegaconf import OmegaConf

    import clex
    from clex.commands import run
    from clex.data.corpus import load_corpus
    from clex.data.tokenizers import ByteTokenizer
    from clex.data.windows import encode_documents, evaluation_sequences
    from tests.test_run import tiny_args

    args = tiny_args(tmp_path, "model.original_length=16", "eval.same_tokens=true", "eval.position_bins=true")
    assert run.main(args) == 0
    [path] = tmp_path.glob("*/results.json")
    result = json.loads(path.read_text())
    assert result["original_length"] == 16 and result["train_length"] == 32
    assert len({row["tokens"] for row in result["eval"]}) == 1  # the same tokens at 32, 64 and 128
    assert [(b["start"], b["end"]) for b in result["position_nll"]] == [(0, 16), (16, 32), (32, 64), (64, 128)]
    cfg = OmegaConf.create(result["config"])
    model = clex.load_pretrained(path.parent / "model").eval()  # the saved model, scored directly
    sequences, _, _ = evaluation_sequences(
        encode_documents(ByteTokenizer(), load_corpus(cfg.data).documents["test"]),
        128,
        cfg.eval.max_tokens,
        cfg.eval.seed,
    )
    with torch.no_grad():
        nll = F.cross_entropy(model(sequences[:, :-1]).logits.transpose(1, 2), sequences[:, 1:], reduction="none")
    for row in result["position_nll"]:
        assert row["nll"] == pytest.approx(nll[:, row["start"] : row["end"]].mean().item(), rel=1e-4)
