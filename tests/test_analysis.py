"""analysis/: the power-law fit against synthetic truth, every script on real tiny runs, bad input."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from clex.analysis.tables import fit_power_law
from clex.commands import collect, figures, run, scaling_law

ROOT = Path(__file__).resolve().parents[1]


def synthetic(seeds, rng, alpha=0.3, beta=0.8, a=2.0, noise=0.1):
    sizes, lengths = np.repeat([1e5, 3e5, 1e6, 3e6], 3 * seeds), np.tile(np.repeat([64, 128, 256], seeds), 4)
    targets = a * sizes**alpha * lengths**beta * np.exp(rng.normal(0, noise, len(sizes)))
    return sizes, lengths, targets


def test_fit_recovers_known_exponents_and_intervals_shrink_with_data():
    rng = np.random.default_rng(0)
    small = fit_power_law(*synthetic(2, rng), bootstrap=500)
    large = fit_power_law(*synthetic(16, rng), bootstrap=500)
    for fit in (small, large):
        (alpha_low, alpha_high), (beta_low, beta_high) = fit["ci"][1], fit["ci"][2]
        assert alpha_low < 0.3 < alpha_high and beta_low < 0.8 < beta_high
    width = [f["ci"][1][1] - f["ci"][1][0] for f in (small, large)]
    assert width[1] < width[0] / 2  # 8x the runs: about sqrt(8) ~ 2.8x narrower
    assert abs(large["coef"][1] - 0.3) < 0.05 and abs(large["coef"][2] - 0.8) < 0.05


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    common = [
        f"out_dir={out}",
        "model.intermediate_size=64",
        "model.num_layers=1",
        "model.num_heads=2",
        "train.steps=3",
        "train.batch_size=2",
        "train.val_every=3",
        "train.val_batches=1",
        "base.steps=3",
        "base.batch_size=2",
        "eval.multipliers=[1,2,4]",
        "eval.max_tokens=128",
        "data.max_documents=150",
        "trainer.enable_progress_bar=false",
    ]
    for hidden in (16, 32):
        for length in (16, 32):
            assert (
                run.main(common + ["strategy=clex,fbs", f"model.hidden_size={hidden}", f"train.length={length}"]) == 0
            )
    return out


@pytest.mark.slow
def test_every_script_writes_every_file_on_real_runs(tiny_runs, tmp_path, capsys):
    table = tmp_path / "table.csv"
    assert collect.main([str(tiny_runs), "--out", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 8 * 3 and {r["strategy"] for r in rows} == {"clex", "fbs"}
    assert {r["parameters"] for r in rows} and all(r["ppl"] for r in rows)
    summary = list(csv.DictReader((tmp_path / "table_summary.csv").open()))
    assert len(summary) == 8 * 3 and {r["n"] for r in summary} == {"1"} and not any(r["half_width"] for r in summary)
    assert figures.main([str(table), "--out", str(tmp_path)]) == 0
    for name in ("ppl_vs_length", "ppl_heatmap"):
        for suffix in (".png", ".pdf"):
            assert (tmp_path / f"{name}{suffix}").stat().st_size > 1000, name + suffix
    table1 = (tmp_path / "table1.md").read_text()
    assert "| clex hidden_size=16 | 16 | 1 |" in table1 and "| fbs hidden_size=32 | 32 | 1 |" in table1
    assert r"\begin{tabular}" in (tmp_path / "table1.tex").read_text()
    # 3-step runs mostly stay within eps at every length: the fit refuses lower bounds as values
    runs = {r["run"]: r for r in rows if r["strategy"] == "clex"}.values()
    if sum(r["censored"] == "False" for r in runs) < 4:
        assert scaling_law.main([str(table), "--out", str(tmp_path), "--bootstrap", "50"]) == 2
        assert "uncensored runs" in capsys.readouterr().err


def test_scaling_law_script_on_a_table_with_seeds_and_censored_runs(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows, cap = [], 8000.0
    for size in (1e5, 3e5, 1e6, 3e6):
        for length in (64, 128, 256):
            for seed in range(3):
                value = 2.0 * size**0.3 * length**0.8 * np.exp(rng.normal(0, 0.1))
                rows.append(
                    {
                        "run": f"r{size:g}-{length}-{seed}",
                        "strategy": "clex",
                        "variant_id": f"v{size:g}-{length}",
                        "seed": seed,
                        "parameters": int(size),
                        "train_length": length,
                        "length": length,
                        "extrapolation_length": min(value, cap),
                        "censored": value >= cap,
                    }
                )
    table = tmp_path / "table.csv"
    with table.open("w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert scaling_law.main([str(table), "--out", str(tmp_path), "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "36 runs of 12 configurations" in out and "lower bound, fitted as one" in out
    fit = json.loads((tmp_path / "scaling_law_clex.json").read_text())
    assert fit["censored"] == sum(r["censored"] for r in rows) > 0
    assert fit["ci"][1][0] < 0.3 < fit["ci"][1][1] and fit["ci"][2][0] < 0.8 < fit["ci"][2][1]
    for name in ("scaling_law_clex", "extrapolation_vs_train_length"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_bad_input_is_one_line_exit_2(tmp_path, tiny_runs, capsys):
    (tmp_path / "empty").mkdir()
    assert collect.main([str(tmp_path / "empty"), "--out", str(tmp_path / "t.csv")]) == 2
    assert "no results.json" in capsys.readouterr().err
    old = tmp_path / "old" / "results.json"
    old.parent.mkdir()
    result = json.loads(next(tiny_runs.glob("*/results.json")).read_text())
    old.write_text(json.dumps({**result, "schema_version": 0}))
    assert collect.main([str(old.parent), "--out", str(tmp_path / "t.csv")]) == 2
    assert "schema_version 0, this code reads 1" in capsys.readouterr().err
    for name, content, message in (
        ("list", b"[1, 2]", "a JSON list, not an object"),
        ("latin", b'{"a": "\xe9"}', "not UTF-8"),
        ("text", json.dumps({**result, "eval": [{**result["eval"][0], "ppl": "4.2"}]}).encode(), "ppl at length"),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_bytes(content)
        assert collect.main([str(tmp_path / name), "--out", str(tmp_path / "t.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    thin = tmp_path / "thin.csv"
    thin.write_text("run,strategy\na,clex\n")
    assert figures.main([str(thin), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks column(s) variant, variant_id, seed, train_length, length, ppl" in err
    assert scaling_law.main([str(thin)]) == 2
    assert "lacks column(s)" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_the_miniature_report_reads_claims_off_paired_intervals(tmp_path):
    from clex.reports.miniature import write_report

    def result(strategy, seed, ppl, **strategy_options):
        config = {"strategy": {"name": strategy, **strategy_options}, "sampler": {"position": "pose"}, "seed": seed}
        return {
            "name": f"{strategy}-{seed}-{strategy_options}",
            "strategy": strategy,
            "seed": seed,
            "config": config,
            "train_length": 128,
            "original_length": 128,
            "wall_seconds": 60.0,
            "base": None,
            "eval": [{"length": n, "ppl": p, "tokens": 512} for n, p in zip((128, 256, 512), ppl, strict=False)],
            "extrapolation_length": {"value": 300.0, "censored": False, "eps": 0.1},
        }

    table1 = [
        result(s, seed, [5 + seed, 5.2 + seed, base + seed])
        for seed in range(3)
        for s, base in (("rope", 9.0), ("yarn", 5.0), ("clex", 5.1))
    ]
    dynamics = [
        result("clex", seed, [5 + seed, 5.2 + seed, base + seed + 0.01 * seed], dynamics=d)
        for seed in range(3)
        for d, base in (("continuous", 5.1), ("discrete", 6.0))
    ]
    text = write_report({"miniature_table1": table1, "clex_dynamics": dynamics}, tmp_path)
    assert "| clex - rope | +0.00 ± 0.00 | +0.00 ± 0.00 | -3.90 ± 0.00* |" in text
    assert "PPL(4L) / PPL(L)" in text and "**holds**" in text  # 5.1/5 .. 7.1/7: within 1.1
    assert "PPL(continuous) - PPL(discrete) at 4L: **holds (-0.90 ± 0.00, n = 3)**" in text
    assert (
        "Position extrapolation is needed | PPL(extrapolated-random) - PPL(contiguous) at 4L: **not run yet**" in text
    )
    assert (tmp_path / "table1.png").stat().st_size > 1000 and (tmp_path / "clex_dynamics.png").is_file()


def test_a_scaling_law_without_two_model_sizes_names_what_is_missing():
    from clex.analysis.tables import fit_power_law
    from clex.errors import ConfigError

    with pytest.raises(ConfigError, match=r"have 1 model size\(s\) and 2 training length\(s\): add model sizes"):
        fit_power_law([1e6] * 4, [128, 128, 256, 256], [300.0, 310.0, 500.0, 520.0])
