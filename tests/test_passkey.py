"""Passkey prompts are built to spec, and eval=passkey writes its grid and figure."""

import json

import pytest
import torch

from clex.commands import run
from clex.data.tokenizers import ByteTokenizer
from clex.eval.passkey import INTRO, QUESTION, passkey_prompt


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_prompt_has_the_length_the_key_at_its_depth_and_ends_with_the_question(depth):
    tokenizer = ByteTokenizer()
    prompt, answer = passkey_prompt(tokenizer, 1000, depth, 12345)
    text = bytes(prompt.tolist()).decode()
    assert len(prompt) == 1000 and text.endswith(QUESTION)
    assert bytes(answer.tolist()).decode() == " 12345"
    key = "The pass key is 12345. Remember it. 12345 is the pass key. "
    room = 1000 - len(INTRO) - len(key) - len(QUESTION)  # filler bytes around the key
    assert text.index(key) == len(INTRO) + round(depth * room) and text.startswith(INTRO)
    with pytest.raises(ValueError, match="shorter than the prompt's fixed parts"):
        passkey_prompt(tokenizer, 100, 0.5, 12345)


@pytest.mark.slow
def test_eval_passkey_writes_grid_results_and_figure(tmp_path):
    args = [
        f"out_dir={tmp_path}",
        "eval=passkey",
        "strategy=clex",
        "strategy.max_scale=4",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "train.length=256",
        "train.steps=2",
        "train.batch_size=1",
        "train.val_every=2",
        "train.val_batches=1",
        "base.steps=0",
        "eval.multipliers=[1]",
        "eval.max_tokens=256",
        "eval.passkey.multipliers=[1,2]",
        "eval.passkey.depths=[0.0,1.0]",
        "eval.passkey.trials=2",
        "data.max_documents=100",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [run_dir] = [p for p in tmp_path.iterdir() if p.name.startswith("clex")]
    grid = json.loads((run_dir / "passkey.json").read_text())["rows"]
    assert [(r["length"], r["depth"]) for r in grid] == [(256, 0.0), (256, 1.0), (512, 0.0), (512, 1.0)]
    assert all(r["trials"] == 2 and 0 <= r["accuracy"] <= 1 for r in grid)
    assert (run_dir / "passkey.png").stat().st_size > 1000
    results = json.loads((run_dir / "results.json").read_text())
    for n, accuracy in results["tasks"]["passkey"].items():  # the mean over depths of the grid's cells
        assert accuracy == sum(r["accuracy"] for r in grid if r["length"] == int(n)) / 2
    assert set(results["tasks"]["passkey"]) == {"256", "512"} and "accuracy" in results["task_metrics"]["passkey"]
    samples = [json.loads(line) for line in (run_dir / "passkey_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and all(set(s) >= {"length", "depth", "expected", "answer", "right"} for s in samples)
    for row in grid:  # every cell's accuracy is the share of its samples that were right
        cell = [s["right"] for s in samples if (s["length"], s["depth"]) == (row["length"], row["depth"])]
        assert row["accuracy"] == sum(cell) / len(cell)


def test_a_model_that_knows_the_answer_scores_one():
    """A stub model that copies the digits after 'pass key is' proves the scoring path, not the model."""
    from clex.eval.passkey import passkey_grid

    tokenizer = ByteTokenizer()

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = torch.nn.Parameter(torch.zeros(1))
            self.prompt = None

        def forward(self, input_ids, past_key_values=None, use_cache=True):
            if past_key_values is None:
                self.prompt, self.step = bytes(input_ids[0].tolist()).decode(), 0
            key = self.prompt.split("The pass key is ")[1][:5]
            target = (" " + key)[self.step]
            self.step += 1
            logits = torch.zeros(1, input_ids.shape[1], 257)
            logits[0, -1, ord(target)] = 1
            return type("Out", (), {"logits": logits, "past_key_values": "cache"})()

    rows = passkey_grid(Oracle(), tokenizer, [400], [0.0, 0.5, 1.0], trials=3, seed=0)
    assert [r["accuracy"] for r in rows] == [1.0, 1.0, 1.0]
