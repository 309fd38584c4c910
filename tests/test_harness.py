"""eval=harness: lm-eval tasks on the run's patched model. A local loglikelihood task scored exactly by hand
proves the patched model is what the harness evaluates; a spy proves t holds at the prompt's length while it
generates; what cannot run offline is refused before training in one line."""

import copy
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import clex
from clex.commands import run

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

DATA = Path(__file__).parent / "data" / "harness"
L0 = 16
OPTS = {
    "tasks": ["clex_local_short", "clex_local_long"],
    "lengths": None,
    "limit": None,
    "batch_size": 1,
    "max_length": None,
    "include_path": str(DATA),
    "allow_download": False,
    "options": {"bootstrap_iters": 0},
}


def byte_llama():
    """A tiny random Llama over bytes (vocabulary 257: 256 bytes and the separator), L0 = 16."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=257,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=L0,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    return LlamaForCausalLM(config).eval()


def patched(model):
    strategy = clex.build_strategy("clex", rotary_dim=16, base=10000.0, original_length=L0, max_scale=8)
    return clex.patch_model(copy.deepcopy(model), strategy)


@torch.no_grad()
def perplexity_by_hand(model, name: str) -> float:
    """exp(-mean over items of log p(target | context)): the harness's loglikelihood perplexity (lm-eval 0.4.13
    puts no delimiter between them for this output type), bytes as ids."""
    lls = []
    for line in (DATA / f"{name}.jsonl").read_text().splitlines():
        item = json.loads(line)
        context, target = item["context"].encode(), item["target"].encode()
        ids = torch.tensor([list(context + target)])
        logp = torch.log_softmax(model(input_ids=ids[:, :-1]).logits.float(), -1)[0]
        lls.append(sum(float(logp[len(context) - 1 + i, b]) for i, b in enumerate(target)))
    return math.exp(-sum(lls) / len(lls))


def scores(model, monkeypatch) -> dict:
    from clex.data.tokenizers import ByteTokenizer
    from clex.eval.harness import run_tasks

    monkeypatch.chdir(DATA)  # the task YAMLs name their data files relative to here
    rows, raw = run_tasks(model, ByteTokenizer(), OPTS, [L0])
    assert set(raw) == set(OPTS["tasks"]) and all(r["length"] is None and r["metric"] == "perplexity" for r in rows)
    return {r["task"]: r["score"] for r in rows}


@pytest.mark.slow  # the harness builds its task index: about 45 s on 2 cores
def test_the_harness_scores_the_patched_model_exactly_t_one_within_L0(monkeypatch):
    plain = byte_llama()
    clexed = patched(plain)
    got_plain, got_clex = scores(plain, monkeypatch), scores(clexed, monkeypatch)
    for name, model, got in (("plain", plain, got_plain), ("clex", clexed, got_clex)):
        for task in OPTS["tasks"]:
            assert got[task] == pytest.approx(perplexity_by_hand(model, task.removeprefix("clex_local_")), rel=1e-5), (
                name,
                task,
            )
    assert got_clex["clex_local_short"] == pytest.approx(got_plain["clex_local_short"], rel=1e-6)  # <= L0: t = 1
    # 4 x L0: t = 4 moves the score (by 2.6e-5 relative on this seeded random model; float noise is under 1e-6)
    assert abs(got_clex["clex_local_long"] / got_plain["clex_local_long"] - 1) > 1e-5


def test_generation_holds_t_at_the_prompt_length(monkeypatch):
    """A prompt of 3 x L0 + 5 tokens: t = ceil(53 / 16) = 4 for the prompt and every generated token, though
    16 new tokens take the positions past 4 x L0 (plain HFLM: t follows them to 5)."""
    from lm_eval.models.huggingface import HFLM

    from clex.eval.harness import byte_tokenizer, patched_lm_class

    model = patched(byte_llama())
    strategy = clex.rotary_module(model).strategy
    seen = []
    original = strategy.inv_freq
    monkeypatch.setattr(strategy, "inv_freq", lambda t: seen.append(t) or original(t))
    prompt = torch.randint(0, 256, (1, 3 * L0 + 5))
    for cls, expected in ((patched_lm_class(), {4.0}), (HFLM, {4.0, 5.0})):
        seen.clear()
        lm = cls(pretrained=model, tokenizer=byte_tokenizer(), max_length=256, batch_size=1)
        out = lm._model_generate(prompt, max_length=prompt.shape[1] + 16, stop=[], do_sample=False)
        assert out.shape[1] == prompt.shape[1] + 16 and len(seen) == 16  # one forward per generated token
        assert set(seen) == expected, (cls.__name__, seen)


def refusal(tmp_path, capsys, *args) -> str:
    assert run.main([f"out_dir={tmp_path}", "eval=harness", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # refused before anything is written
    return err


@pytest.mark.slow  # the harness builds its task index first: 6-8 s
def test_an_unknown_task_is_one_line_saying_how_to_list_them(tmp_path, capsys):
    err = refusal(tmp_path, capsys, "eval.harness.tasks=[niah_single_1,no_such_task]")
    assert "unknown task 'no_such_task'" in err and "lm-eval ls tasks" in err


@pytest.mark.slow  # the task index too
def test_a_task_needing_a_download_is_refused_offline(tmp_path, capsys):
    err = refusal(tmp_path, capsys, "eval.harness.tasks=[niah_single_2]")
    assert "niah_single_2 needs the Hugging Face dataset baber/paul_graham_essays" in err
    assert "~/.cache/huggingface" in err and "allow_download=true" in err


def test_without_the_extra_eval_harness_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    err = refusal(tmp_path, capsys)
    assert 'pip install -e ".[harness]"' in err


@pytest.mark.slow
def test_eval_harness_end_to_end_writes_a_score_per_task_and_length(tmp_path):
    """RULER's niah_single_1 and ruler_vt at 2048 tokens on a tiny Llama with a BPE tokenizer, 2 samples,
    offline (ruler_vt's generator needs about 2048 tokens)."""
    args = [
        f"out_dir={tmp_path}",
        "eval=harness",
        "data.tokenizer=bpe",
        "base.steps=0",
        "train.steps=1",
        "train.batch_size=1",
        "train.val_every=1",
        "train.val_batches=1",
        "model.hidden_size=32",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "eval.multipliers=[1]",
        "eval.max_tokens=256",
        "data.max_documents=300",  # the BPE trained on less: the harness is what is tested
        "eval.harness.tasks=[niah_single_1,ruler_vt]",
        "eval.harness.lengths=[2048]",
        "eval.harness.limit=2",
        "+eval.harness.options.bootstrap_iters=0",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [run_dir] = [p for p in tmp_path.iterdir() if p.name.startswith("clex")]
    harness = json.loads((run_dir / "harness.json").read_text())
    assert [(r["task"], r["length"]) for r in harness["rows"]] == [("niah_single_1", 2048), ("ruler_vt", 2048)]
    assert all(r["skipped"] is None and 0 <= r["score"] <= 1 for r in harness["rows"]), harness["rows"]
    assert harness["harness"]["niah_single_1@2048"]["n-samples"]["niah_single_1"]["effective"] == 2
    assert (run_dir / "harness.png").stat().st_size > 1000
    tasks = json.loads((run_dir / "results.json").read_text())["tasks"]
    assert tasks == {f"harness/{r['task']}": {"2048": r["score"]} for r in harness["rows"]}
