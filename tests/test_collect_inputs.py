"""collect and compare: one results reader, nothing half-written, a malformed run skipped or refused,
comparison folders named for their runs, tokenizers told apart, and lm-eval scores tabulated.

Every run here is a copy of one real results.json (a one-step run made once for the module), edited."""

import copy
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from clex.analysis import collection
from clex.commands import collect, compare, run
from tests.conftest import FAST


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    assert run.main([f"out_dir={out}", "name=real", *FAST, "eval.multipliers=[1,2]", "eval.max_tokens=64"]) == 0
    return json.loads((out / "real" / "results.json").read_text())


def variant(real, strategy="clex", seed=0, shift=0.0, **fields):
    """The real run as another strategy and seed, its NLL shifted by ``shift`` (PPL = exp(NLL) kept)."""
    results = copy.deepcopy(real)
    results["name"] = f"{strategy}-{seed}"
    results["strategy"], results["seed"] = strategy, seed
    results["config"]["strategy"]["name"], results["config"]["seed"] = strategy, seed
    for row in results["eval"]:
        row["nll"] += shift
        row["ppl"] = math.exp(row["nll"])
    results.update(fields)
    return results


def write(folder, results):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(results if isinstance(results, str) else json.dumps(results))
    return path


def one_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def outputs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_one_reader_for_collect_and_compare_skips_the_caches(real, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    write(runs / "a", variant(real, seed=0))
    write(runs / ".base" / "h" / "inner", variant(real, seed=7))  # a cached base model's folder
    write(runs / ".tokenizers" / "t", variant(real, seed=8))
    assert [p.relative_to(runs).as_posix() for p in collection.find_results([runs])] == ["a/results.json"]
    calls = []
    reader = collection.read_runs
    monkeypatch.setattr(collection, "read_runs", lambda *a, **k: calls.append(a) or reader(*a, **k))
    assert collect.main([str(runs), "--out", str(tmp_path / "t.csv")]) == 0
    assert compare.main([str(runs), "--out", str(tmp_path / "cmp")]) == 0
    assert len(calls) == 2  # both commands read through the one reader
    assert {r["seed"] for r in csv.DictReader((tmp_path / "t.csv").open())} == {"0"}
    assert [r["seed"] for r in json.loads((tmp_path / "cmp" / "runs.json").read_text())["runs"]] == [0]


def bad_cases(real):
    good = variant(real, seed=1)
    huge = variant(real, seed=1)
    huge["eval"][0]["ppl"] = 1e308  # the case: table.csv written, then an OverflowError
    consistent = variant(real, seed=1)
    consistent["eval"][1].update(nll=math.log(1e200), ppl=1e200)
    tasks = {"niah": {"128": "high"}}
    return {
        "bad JSON": ('{"name": ', "JSONDecodeError"),
        "not an object": ("[1, 2]", "a JSON list, not an object"),
        "missing key": (json.dumps({k: v for k, v in good.items() if k != "eval"}), "no key 'eval'"),
        "wrong type": (json.dumps({**good, "seed": "1"}), "seed is '1', not an integer"),
        "ppl 1e308": (json.dumps(huge), "ppl at length 128 is 1e+308, outside [1, 1e+150)"),
        "absurd but consistent": (json.dumps(consistent), "ppl at length 256 is 1e+200, outside"),
        "ppl not exp(nll)": (
            json.dumps(variant(real, seed=1) | {"eval": [{**good["eval"][0], "ppl": 3.0}]}),
            "not exp(nll",
        ),
        "text score": (json.dumps({**good, "tasks": tasks}), "tasks['niah']['128'] is 'high'"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "bad JSON",
        "not an object",
        "missing key",
        "wrong type",
        "ppl 1e308",
        "absurd but consistent",
        "ppl not exp(nll)",
        "text score",
    ],
)
def test_a_malformed_run_is_skipped_with_a_warning_or_refused_when_strict(real, tmp_path, capsys, case):
    content, problem = bad_cases(real)[case]
    runs = tmp_path / "runs"
    write(runs / "good", variant(real, seed=0))
    bad = write(runs / "bad", content)
    out = tmp_path / "out"
    assert collect.main([str(runs), "--out", str(out / "t.csv"), "--strict"]) == 2
    one_line(capsys, str(bad), problem, "--strict")
    assert compare.main([str(runs), "--out", str(out / "cmp"), "--strict"]) == 2
    one_line(capsys, str(bad), problem)
    assert not out.exists()
    assert collect.main([str(runs), "--out", str(out / "t.csv")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if str(bad) in line]
    assert len(warnings) == 1 and problem in warnings[0] and warnings[0].endswith("skipped"), warnings
    assert {r["run"] for r in csv.DictReader((out / "t.csv").open())} == {"clex-0"}
    assert compare.main([str(runs), "--out", str(out / "cmp")]) == 0
    assert f"{bad}" in capsys.readouterr().err
    assert [r["seed"] for r in json.loads((out / "cmp" / "runs.json").read_text())["runs"]] == [0]


def test_strict_leaves_the_previous_outputs_as_they_were(real, tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed in (0, 1):
        write(runs / str(seed), variant(real, seed=seed, shift=0.1 * seed))
    table = tmp_path / "t.csv"
    assert collect.main([str(runs), "--out", str(table)]) == 0
    before = {p: p.read_bytes() for p in tmp_path.glob("t*.csv")}
    assert len(before) == 2
    write(runs / "2", bad_cases(real)["ppl 1e308"][0].replace('"seed": 1', '"seed": 2'))
    assert collect.main([str(runs), "--out", str(table), "--strict"]) == 2
    one_line(capsys, "1e+308")
    assert {p: p.read_bytes() for p in tmp_path.glob("t*.csv")} == before


def test_every_run_skipped_is_one_line_and_nothing_written(real, tmp_path, capsys):
    runs = tmp_path / "runs"
    cases = bad_cases(real)
    for name in ("bad JSON", "ppl 1e308"):
        write(runs / name.replace(" ", "_"), cases[name][0])
    assert collect.main([str(runs), "--out", str(tmp_path / "out" / "t.csv")]) == 2
    one_line(capsys, "no sound results.json among 2", "JSONDecodeError", "1e+308")
    assert compare.main([str(runs), "--out", str(tmp_path / "out" / "cmp")]) == 2
    one_line(capsys, "no sound results.json among 2")
    assert not (tmp_path / "out").exists()


def test_a_failed_write_leaves_every_output_as_it_was(real, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    write(runs / "a", variant(real))
    table = tmp_path / "t.csv"
    assert collect.main([str(runs), "--out", str(table)]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    write(runs / "b", variant(real, seed=1))
    calls = []
    original = collection.io.atomic_write

    def full_disk(path, fill):  # the second file fails, as on a disk that just filled up
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(path, fill)

    monkeypatch.setattr(collection.io, "atomic_write", full_disk)
    assert collect.main([str(runs), "--out", str(table)]) == 2
    one_line(capsys, "No space left on device", "nothing written")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before  # no staged leftovers
    file = tmp_path / "file"
    file.write_text("x")
    monkeypatch.undo()
    assert collect.main([str(runs), "--out", str(file / "t.csv")]) == 2
    one_line(capsys, "cannot write")


def test_compare_writes_a_folder_named_for_its_runs_and_never_over_another(real, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    for seed in (0, 1):
        write(first / f"clex{seed}", variant(real, seed=seed, shift=0.1 * seed))
        write(first / f"rope{seed}", variant(real, "rope", seed, shift=0.5))
    write(second / "clex5", variant(real, seed=5))
    assert compare.main([str(first)]) == 0
    [folder] = (tmp_path / "analysis" / "out").iterdir()
    assert folder.name.startswith("comparison-rope-clex-") or folder.name.startswith("comparison-clex-rope-")
    recorded = json.loads((folder / "runs.json").read_text())["runs"]
    assert sorted((r["name"], r["seed"]) for r in recorded) == [
        ("clex-0", 0),
        ("clex-1", 1),
        ("rope-0", 0),
        ("rope-1", 1),
    ]
    assert compare.main([str(first)]) == 0  # the same runs again: the same comparison, rewritten
    assert compare.main([str(second)]) == 0
    assert len(list((tmp_path / "analysis" / "out").iterdir())) == 2  # other runs, another folder
    capsys.readouterr()
    table = (folder / "comparison.md").read_bytes()
    assert compare.main([str(second), "--out", str(folder)]) == 2
    one_line(capsys, f"{folder} holds the comparison of other runs", "--force")
    assert (folder / "comparison.md").read_bytes() == table
    assert compare.main([str(second), "--out", str(folder), "--force"]) == 0
    assert [r["seed"] for r in json.loads((folder / "runs.json").read_text())["runs"]] == [5]
    (folder / "runs.json").unlink()  # a comparison that does not say which runs it compared
    capsys.readouterr()
    assert compare.main([str(second), "--out", str(folder)]) == 2
    one_line(capsys, "does not say which runs it compared")
    (tmp_path / "a_file").write_text("x")
    assert compare.main([str(second), "--out", str(tmp_path / "a_file")]) == 2
    one_line(capsys, "is a file, not a folder")


def test_runs_of_different_tokenizers_are_flagged_in_collect_compare_and_comparison_md(real, tmp_path, capsys):
    runs = tmp_path / "runs"
    bpe = {"kind": "bpe", "vocab_size": 2048, "path": "/r/.tokenizers/abc-trainx-v2048-f1/tokenizer.json"}
    for seed in (0, 1):
        write(runs / f"rope{seed}", variant(real, "rope", seed))  # byte-level
        clex = variant(real, "clex", seed, shift=-0.5, tokenizer=bpe)
        clex["config"]["data"]["tokenizer"] = "bpe"
        write(runs / f"clex{seed}", clex)
    assert compare.main([str(runs), "--out", str(tmp_path / "cmp"), "--reference", "rope"]) == 0
    err = capsys.readouterr().err
    assert "2 tokenizers" in err and "PPL of different tokenizers are not comparable" in err
    text = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "of 2 different settings (they differ in data.tokenizer" in text and "never paired" in text
    assert "| clex - rope" not in text  # runs of two tokenizers are not paired at all
    assert "PPL of different tokenizers are not comparable" in text and "bpe 2048 abc-trainx-v2048-f1" in text
    assert collect.main([str(runs), "--out", str(tmp_path / "t.csv")]) == 0
    assert "PPL of different tokenizers are not comparable" in capsys.readouterr().err
    tokenizers = {r["strategy"]: r["tokenizer"] for r in csv.DictReader((tmp_path / "t.csv").open())}
    assert tokenizers == {"rope": "byte", "clex": "bpe 2048 abc-trainx-v2048-f1"}
    undescribed = {k: v for k, v in real.items() if k != "tokenizer"}  # a run from before results named it
    assert collection.tokenizer_of(undescribed) == collection.tokenizer_of(real) == "byte"
    one = tmp_path / "one"
    for seed in (0, 1):
        write(one / f"rope{seed}", variant(real, "rope", seed))
        write(one / f"clex{seed}", variant(real, "clex", seed))
    assert compare.main([str(one), "--out", str(tmp_path / "cmp1")]) == 0
    assert "tokenizer" not in capsys.readouterr().err
    assert "tokenizer" not in (tmp_path / "cmp1" / "comparison.md").read_text()


def test_task_scores_are_a_tidy_table_with_intervals_over_seeds(real, tmp_path, capsys):
    rng = np.random.default_rng(0)
    runs, scores = tmp_path / "runs", {}
    for strategy in ("rope", "clex"):
        for seed in range(3):
            cells = {"niah_single_1": {"128": rng.uniform()}, "ruler_vt": {"128": rng.uniform(), "256": rng.uniform()}}
            cells["mmlu_tiny"] = {"all": rng.uniform()}  # a task without lengths
            scores[strategy, seed] = cells
            metrics = {t: f"metric of {t}" for t in cells} if seed < 2 else {}  # the third names none
            folder = runs / f"{strategy}{seed}"
            write(folder, variant(real, strategy, seed, shift=0.01 * seed, tasks=cells, task_metrics=metrics))
    table = tmp_path / "t.csv"
    assert collect.main([str(runs), "--out", str(table)]) == 0
    assert "t_tasks.csv" in capsys.readouterr().out
    tidy = list(csv.DictReader((tmp_path / "t_tasks.csv").open()))
    assert len(tidy) == 6 * 4
    assert list(tidy[0]) == [
        "run",
        "variant",
        "variant_id",
        "strategy",
        "seed",
        "train_length",
        "task",
        "length",
        "score",
        "metric",
    ]
    for row in tidy:
        assert float(row["score"]) == scores[row["strategy"], int(row["seed"])][row["task"]][row["length"]]
        assert row["metric"] == ("" if row["seed"] == "2" else f"metric of {row['task']}")
    summary = list(csv.DictReader((tmp_path / "t_tasks_summary.csv").open()))
    assert len(summary) == 2 * 4
    for s in summary:
        values = np.array([scores[s["strategy"], seed][s["task"]][s["length"]] for seed in range(3)])
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)  # independent of clex.analysis.stats
        low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
        assert s["n"] == "3" and s["seeds"] == "0 1 2" and s["variant"] == s["strategy"]
        assert float(s["mean"]) == pytest.approx(values.mean(), rel=1e-12)
        assert float(s["half_width"]) == pytest.approx(half, rel=1e-9)
        assert float(s["low"]) == pytest.approx(low, rel=1e-9) and float(s["high"]) == pytest.approx(high, rel=1e-9)
    for seed in range(3):  # the same runs without task scores: the old task tables go, not left beside
        write(runs / f"rope{seed}", variant(real, "rope", seed, shift=0.01 * seed))
        write(runs / f"clex{seed}", variant(real, "clex", seed, shift=0.01 * seed))
    assert collect.main([str(runs), "--out", str(table)]) == 0
    assert "removed" in capsys.readouterr().err
    assert not (tmp_path / "t_tasks.csv").exists() and not (tmp_path / "t_tasks_summary.csv").exists()


def test_one_file_reached_by_two_paths_is_read_once_without_a_warning(real, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    write(runs / "rope0", variant(real, "rope", 0))
    monkeypatch.chdir(tmp_path)
    found = collection.read_runs([Path("runs"), (runs / "rope0" / "results.json").resolve()])
    assert len(found) == 1 and "again" not in capsys.readouterr().err


def test_text_that_would_become_code_stays_text_in_the_csv_and_the_markdown(real, tmp_path, capsys):
    runs = tmp_path / "runs"
    formula = "=1+2*cmd|'x'!A0"
    for seed in range(2):
        crafted = variant(real, "rope", seed)
        crafted["name"] = formula
        crafted["config"]["extra"] = "a|b\n## injected"
        write(runs / f"rope{seed}", crafted)
        write(runs / f"clex{seed}", variant(real, "clex", seed, shift=0.01))
    table = tmp_path / "t.csv"
    assert collect.main([str(runs), "--out", str(table)]) == 0
    cells = [row["run"] for row in csv.DictReader(table.open())]
    assert f"'{formula}" in cells and not any(c.startswith(("=", "+", "@")) for c in cells)
    assert compare.main([str(runs), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "\n## injected" not in page and "a\\|b ## injected" in page
    for line in page.splitlines():  # every table row keeps its column count: a pipe in a value is escaped
        if line.startswith("| rope") and "`" in line:
            assert line.replace("\\|", "").count("|") == page.split("## Runs")[1].splitlines()[2].count("|")


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_results_json_that_is_a_device_or_a_fifo_is_skipped_without_reading(real, tmp_path, capsys, kind):
    runs = tmp_path / "runs"
    write(runs / "good", variant(real, "rope", 0))
    (runs / "bad").mkdir()
    if kind == "device":
        (runs / "bad" / "results.json").symlink_to("/dev/zero")  # read whole, it would take the machine
    else:
        os.mkfifo(runs / "bad" / "results.json")  # read, it would hang
    assert collect.main([str(runs), "--out", str(tmp_path / "t.csv")]) == 0
    err = capsys.readouterr().err
    refusal = "a file of the kernel's (/proc, /sys, /dev)" if kind == "device" else "not a regular file (a device"
    assert refusal in err and "bad/results.json" in err and "nothing read" in err
