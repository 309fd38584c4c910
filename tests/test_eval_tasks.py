"""Evaluation tasks behind a registry: a task registered from this file (no other file touched) runs in a real
run, and its scores reach results.json, the printed table, collect's task table, compare's comparison.md and a
sweep's objective."""

import csv
import json

import pytest
import torch

from clex.commands import collect, compare, run
from clex.eval.tasks import TASKS, EvalTask
from clex.sweeps.schema import metric_value

TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "train.length=128",
    "base.steps=2",
    "train.steps=2",
    "train.batch_size=2",
    "train.val_every=2",
    "train.val_batches=1",
    "eval.multipliers=[1,2]",
    "eval.max_tokens=256",
    "data.max_documents=60",
    "trainer.enable_progress_bar=false",
]


class NextToken(EvalTask):
    """Top-1 next-token accuracy over the first ``tokens`` test tokens at each evaluation length."""

    title = "Next-token accuracy"
    metric = "top-1 accuracy"

    def check(self, options, lengths):
        from clex.errors import require

        require(options.get("tokens", 0) >= 2, "eval.next_token.tokens", "must be >= 2", options.get("tokens"))

    def run(self, cfg, prepared, run_dir):
        ids = torch.tensor(prepared.data.encoded("test")[0][: cfg.eval.next_token.tokens])[None]
        with torch.no_grad():
            guess = prepared.model(input_ids=ids).logits.argmax(-1)
        right = (guess[0, :-1] == ids[0, 1:]).float().mean().item()
        (run_dir / "next_token.json").write_text(json.dumps({"right": right}))
        return {"next_token": {n: right for n in prepared.eval_lengths}}


@pytest.fixture
def next_token():
    TASKS.register("next_token")(NextToken)
    yield
    TASKS._classes.pop("next_token")


def test_a_task_registered_here_reaches_results_collect_compare_and_sweeps(next_token, tmp_path, capsys):
    runs = tmp_path / "runs"
    for strategy in ("rope", "clex"):
        args = [f"out_dir={runs}", f"strategy={strategy}", "+eval.next_token.tokens=64", *TINY]
        assert run.main(args) == 0
    printed = capsys.readouterr().out
    assert "next_token" in printed and "top-1 accuracy" in printed
    [rope] = [json.loads(p.read_text()) for p in runs.glob("rope*/results.json")]
    right = json.loads(next(runs.glob("rope*/next_token.json")).read_text())["right"]
    assert rope["tasks"] == {"next_token": {"128": right, "256": right}}
    assert rope["task_metrics"] == {"next_token": "top-1 accuracy"}
    assert metric_value(rope, "next_token@2") == right  # a sweep objective

    assert collect.main([str(runs), "--out", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "t_tasks.csv").open()))
    assert {(r["strategy"], r["task"], r["length"]) for r in rows} == {
        (s, "next_token", n) for s in ("rope", "clex") for n in ("128", "256")
    }
    assert compare.main([str(runs), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "comparison.md").read_text()
    section = page.split("## Next-token accuracy: top-1 accuracy")[1]
    assert f"| rope | 1 | {right:.2f}" in section


def test_a_task_checks_its_options_before_anything_runs(next_token, tmp_path, capsys):
    assert run.main([f"out_dir={tmp_path}", "+eval.next_token.tokens=1", *TINY]) == 2
    err = capsys.readouterr().err
    assert "eval.next_token.tokens must be >= 2" in err and not list(tmp_path.glob("*/results.json"))
