"""RULER-style tasks: prompts built to spec (length, needle at its depth, answers in the text), the
scoring path with a model that knows the answers, and bad options refused in one line."""

import json
import random
import re

import pytest
import torch
from omegaconf import OmegaConf

from clex.commands import run
from clex.data.tokenizers import ByteTokenizer
from clex.eval.ruler import ruler_grid
from clex.eval.ruler_tasks import DEPTH_TASKS, TASKS, Haystack, make_sample, matches

TEXT = (
    "Rivers carry sediment toward the delta, where slower water drops sand and silt. Farmers value "
    "these plains because the soil stays fertile after every flood season. "
) * 40
DOCUMENTS = [(f"doc{i}", TEXT[i * 37 :] + f" Chapter {i} closes with a quiet morning.") for i in range(6)]
OPTS = OmegaConf.create(
    {
        "tasks": list(TASKS),
        "depths": [0.0, 0.5, 1.0],
        "trials": 3,
        "needles": 4,
        "queries": 2,
        "hops": 3,
        "common": 3,
        "common_frequency": 4,
        "digits": 5,
    }
)
TOKENIZER = ByteTokenizer()


def text_of(ids) -> str:
    return TOKENIZER.decode(ids.tolist() if torch.is_tensor(ids) else ids)


@pytest.mark.parametrize("task", DEPTH_TASKS)
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_the_asked_needle_holds_the_answer_at_the_stated_depth(task, depth):
    haystack = Haystack(TOKENIZER, DOCUMENTS, 4000)
    sample = make_sample(task, haystack, 1000, depth, random.Random(7), OPTS)
    prompt = text_of(sample.prompt)
    assert len(sample.prompt) == 1000
    start, end = sample.spans[0]
    needle = text_of(sample.prompt[start:end])
    key = re.fullmatch(r" The magic number for (\w+) is (\d+)\.", needle).group(1)
    assert key in prompt[-120:] and sample.expected[0] in needle  # asked about, and holds (the first) answer
    # the filler before the asked needle, over all the filler, is the stated depth (moved to a word start
    # within 5% of the filler), and the needle starts before a word, never inside one
    before = sum(e - s for s, e in sample.spans[1:] if s < start)
    room = 1000 - sum(e - s for s, e in sample.spans) - len(TOKENIZER.encode(prompt[prompt.rindex("\nWhat") :]))
    assert abs((start - before) / room - depth) <= (round(0.05 * room) + 1) / room
    after = text_of(sample.prompt[end : end + 1])
    assert (
        end == 1000 - len(TOKENIZER.encode(prompt[prompt.rindex("\nWhat") :]))
        or after.isspace()
        or end in (s for s, _ in sample.spans)
    )
    asked = r"\w+" if task == "niah_multiquery" else key
    for value in sample.expected:  # every answer is in the text once
        assert len(re.findall(rf"for {asked} is {value}\.", prompt)) == 1


def test_variable_tracking_chains_in_order_and_asks_for_every_name():
    haystack = Haystack(TOKENIZER, DOCUMENTS, 4000)
    sample = make_sample("variable_tracking", haystack, 800, None, random.Random(3), OPTS)
    prompt = text_of(sample.prompt)
    names = sample.expected
    assert len(names) == OPTS.hops + 1 and len(sample.prompt) == 800
    value = re.search(rf"VAR {names[0]} = (\d+)\.", prompt).group(1)
    positions = [prompt.index(f" VAR {names[0]} = {value}.")]
    positions += [prompt.index(f" VAR {b} = {a}.") for a, b in zip(names, names[1:], strict=False)]
    assert positions == sorted(positions) and prompt.endswith(f"\nWhich variables hold the value {value}? They are")


def test_common_words_are_strictly_the_most_frequent():
    haystack = Haystack(TOKENIZER, DOCUMENTS, 4000)
    sample = make_sample("common_words", haystack, 600, None, random.Random(5), OPTS)
    listed = text_of(sample.prompt).rsplit("\nWhat are", 1)[0].split()
    counts = {w: listed.count(w) for w in set(listed) if w.isalpha()}
    assert all(counts[w] == OPTS.common_frequency for w in sample.expected)
    assert max(c for w, c in counts.items() if w not in sample.expected) < OPTS.common_frequency


def test_samples_are_seeded_and_too_short_cells_are_skipped_with_the_reason():
    haystack = Haystack(TOKENIZER, DOCUMENTS, 4000)
    a, b = (make_sample("niah_multikey", haystack, 500, 0.5, random.Random("s"), OPTS) for _ in range(2))
    assert torch.equal(a.prompt, b.prompt)
    rows = ruler_grid(Parrot(), TOKENIZER, DOCUMENTS, [100], OmegaConf.merge(OPTS, {"tasks": ["niah_multikey"]}), 0)
    assert all(r["accuracy"] is None and "fixed parts need" in r["skipped"] for r in rows)


def test_whole_word_matching_on_the_first_line_in_any_case():
    assert matches(" 12345, 67890", ["12345", "67890"]) == [True, True]
    assert matches(" 123456", ["12345"]) == [False]
    assert matches("\n Apple pie\n12345", ["apple", "12345"]) == [
        True,
        False,
    ]  # what follows the answer line is not read


class Parrot(torch.nn.Module):
    """Reads the prompt and answers the niah questions right (a stub: it proves the scoring path)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        if past_key_values is None:
            prompt = text_of(input_ids[0])
            keys = re.search(r"magic numbers? for ([\w, ]+)\? ", prompt.rsplit("What", 1)[1]).group(1).split(", ")
            values = [v for k in keys for v in re.findall(rf"magic number for {k} is (\d+)\.", prompt)]
            self.answer, self.step = " " + ", ".join(values), 0
        logits = torch.zeros(1, input_ids.shape[1], 257)
        logits[0, -1, ord(self.answer[self.step]) if self.step < len(self.answer) else 32] = 1
        self.step += 1
        return type("Out", (), {"logits": logits, "past_key_values": "cache"})()


def test_a_model_that_knows_the_answers_scores_one_and_the_grid_covers_every_cell():
    opts = OmegaConf.merge(OPTS, {"tasks": list(DEPTH_TASKS), "trials": 2})
    rows = ruler_grid(Parrot(), TOKENIZER, DOCUMENTS, [400, 700], opts, seed=0)
    assert [(r["task"], r["length"], r["depth"]) for r in rows] == [
        (t, n, d) for t in DEPTH_TASKS for n in (400, 700) for d in (0.0, 0.5, 1.0)
    ]
    assert all(r["accuracy"] == 1.0 and r["score"] == 1.0 for r in rows), rows


@pytest.mark.parametrize(
    "arg, message",
    [
        ("eval.ruler.tasks=[niah_single,haystack_poem]", "unknown task 'haystack_poem'; choices: niah_single"),
        ("eval.ruler.depths=[0.5,1.5]", "eval.ruler.depths must be a non-empty list of depths in [0, 1]"),
        ("eval.ruler.trials=0", "eval.ruler.trials must be an integer >= 1"),
    ],
)
def test_bad_ruler_options_are_one_line_and_exit_2(tmp_path, capsys, arg, message):
    assert run.main([f"out_dir={tmp_path}", "eval=ruler", arg]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_a_passkey_depth_outside_zero_one_is_refused(tmp_path, capsys):
    assert run.main([f"out_dir={tmp_path}", "eval=passkey", "eval.passkey.depths=[-0.1]"]) == 2
    assert "eval.passkey.depths must be a non-empty list of depths in [0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_ruler_end_to_end_writes_the_grid_and_its_heat_map(tmp_path):
    args = [
        f"out_dir={tmp_path}",
        "eval=ruler",
        "base.steps=20",
        "train.steps=4",
        "eval.multipliers=[1,2]",
        "eval.max_tokens=512",
        "eval.ruler.trials=1",
        "trainer.enable_progress_bar=false",
    ]
    assert run.main(args) == 0
    [run_dir] = [p for p in tmp_path.iterdir() if p.name.startswith("clex")]
    ruler = json.loads((run_dir / "ruler.json").read_text())
    assert ruler["tasks"] == list(TASKS) and ruler["lengths"] == [128, 256]
    assert {r["task"] for r in ruler["rows"]} == set(TASKS)
    ran = [r for r in ruler["rows"] if r["skipped"] is None]
    assert {r["length"] for r in ran} == {128, 256} and all(0 <= r["accuracy"] <= 1 for r in ran)
    assert (run_dir / "ruler.png").stat().st_size > 1000
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["tasks"]) == {"ruler", *(f"ruler/{task}" for task in TASKS)}
    for task in TASKS:  # each task's score per length: its rows' mean over depths
        for n, score in results["tasks"][f"ruler/{task}"].items():
            mine = [r["accuracy"] for r in ran if r["task"] == task and r["length"] == int(n)]
            assert score == pytest.approx(sum(mine) / len(mine))


class WithBOS(type(TOKENIZER)):
    prefix = [256]  # like a Llama tokenizer's BOS


@pytest.mark.parametrize("task", TASKS)
def test_a_tokenizer_with_a_bos_starts_every_prompt_with_it_at_the_stated_length(task):
    haystack = Haystack(WithBOS(), DOCUMENTS, 4000)
    sample = make_sample(task, haystack, 400, 0.5 if task in DEPTH_TASKS else None, random.Random(2), OPTS)
    assert sample.prompt[0] == 256 and len(sample.prompt) == 400
