"""Seeds and intervals: the arithmetic against hand-computed numbers, grouping by everything but the
seed, paired differences, the censored fit, and the analysis tables' handling of bad and repeated runs."""

import json
import math
import sys

import numpy as np
import pytest

from clex.analysis.comparison import comparison_markdown
from clex.analysis.stats import group_variants, label_variants, mean_ci, paired_difference, variant_id
from clex.analysis.tables import aggregate, collect, fit_power_law


def test_interval_against_a_hand_computed_example():
    # values 4.0, 4.2, 4.4: mean 4.2, sd 0.2, t(0.975, 2) = 4.302653 -> 4.302653 * 0.2 / sqrt(3) = 0.496828
    interval = mean_ci([4.0, 4.2, 4.4])
    assert interval.n == 3 and interval.mean == pytest.approx(4.2)
    assert interval.sd == pytest.approx(0.2) and interval.half_width == pytest.approx(0.496828, abs=1e-6)
    assert interval.format() == "4.20 ± 0.50"
    # n = 10: t(0.975, 9) = 2.262157
    values = list(range(10))
    assert mean_ci(values).half_width == pytest.approx(2.262157 * np.std(values, ddof=1) / math.sqrt(10), rel=1e-6)


def test_one_seed_has_no_interval_and_says_so():
    interval = mean_ci([4.31])
    assert interval.half_width is None and interval.low is None and not interval.excludes_zero
    assert interval.format() == "4.31 (1 seed, no interval)"
    with pytest.raises(ValueError):
        mean_ci([1.0, math.inf])


def test_paired_difference_is_the_mean_of_per_seed_differences():
    a, b = {0: 5.0, 1: 6.1, 2: 4.9, 3: 7.0}, {0: 4.0, 1: 5.0, 2: 4.0, 5: 1.0}  # seed 3 and 5 unpaired
    diff = paired_difference(a, b)
    per_seed = [1.0, 1.1, 0.9]
    assert diff.n == 3 and diff.mean == pytest.approx(np.mean(per_seed))
    assert diff.half_width == pytest.approx(4.302653 * np.std(per_seed, ddof=1) / math.sqrt(3), rel=1e-6)
    assert diff.excludes_zero  # far tighter than the unpaired intervals, which overlap
    assert mean_ci([5.0, 6.1, 4.9]).low < mean_ci([4.0, 5.0, 4.0]).high
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def run(strategy, seed, ppl, **config):
    cfg = {
        "strategy": {"name": strategy},
        "train": {"length": 128, "steps": 200},
        "seed": seed,
        "name": f"{strategy}{seed}",
        "out_dir": f"/somewhere/{seed}",
        "choices": {"strategy": strategy},
        **config,
    }
    return {
        "name": f"{strategy}-{seed}-{json.dumps(config, sort_keys=True)}",
        "strategy": strategy,
        "seed": seed,
        "config": cfg,
        "train_length": 128,
        "original_length": 128,
        "eval": [
            {"length": n, "ppl": p, "nll": math.log(p), "tokens": 512} for n, p in zip((128, 256), ppl, strict=False)
        ],
        "extrapolation_length": {"value": 256.0, "censored": True, "eps": 0.1},
    }


def ablated(results: dict, strategy: dict) -> dict:
    """The run with another strategy section (a method's own option): the same setting as the default's."""
    return {**results, "name": results["name"] + "-ablated", "config": {**results["config"], "strategy": strategy}}


def test_variants_group_everything_but_the_seed_and_never_merge_two():
    runs = [run("clex", s, [4.0 + s, 5.0]) for s in range(3)]
    runs += [run("clex", s, [4.0, 5.0], extra={"ode_lr": 1e-3}) for s in range(2)]  # differs in one key
    runs.append(run("clex", 0, [9.0, 9.0]))  # the same variant and seed again (a copy): counted once
    groups = group_variants(runs)
    assert [len(g) for g in groups.values()] == [3, 2]
    assert variant_id(runs[0]["config"]) == variant_id(runs[1]["config"]) != variant_id(runs[3]["config"])
    assert sorted(label_variants(runs).values()) == ["clex", "clex ode_lr=0.001"]  # the default goes unsaid


def test_comparison_has_intervals_n_and_a_paired_section():
    runs = [
        run(name, s, [base + 0.1 * s, base + 1 + 0.2 * s])
        for s in range(3)
        for name, base in (("rope", 5.0), ("clex", 4.0))
    ]
    text = comparison_markdown(runs, reference="rope")
    assert "| rope | 3 | 5.10 ± 0.25 | 6.20 ± 0.50 |" in text
    assert "| clex - rope | 3 | -1.00 ± 0.00* | -1.00 ± 0.00* |" in text
    single = comparison_markdown([run("rope", 0, [5.0, 6.0]), run("clex", 0, [4.0, 5.0])])
    assert "5.00 (1 seed, no interval)" in single and "| clex - rope | 1 | -1.00 | -1.00 |" in single
    variant = {"name": "clex", "extra": 1}  # a method's own option: same setting, paired
    ablation = comparison_markdown(
        [
            run("clex", 0, [4.0, 5.0]),
            ablated(run("clex", 0, [4.5, 5.0]), variant),
        ]
    )
    assert "No run of the reference `rope`" in ablation and "+0.50" in ablation
    labelled = comparison_markdown(
        [
            run("clex", 0, [4.0, 5.0]),
            ablated(run("clex", 0, [4.5, 5.0]), variant),
        ],
        reference="clex",
    )
    assert "against **clex**" in labelled and "| clex extra=1 - clex | 1 | +0.50 |" in labelled


def test_comparison_has_retrieval_accuracy_with_intervals_over_seeds():
    runs = [run("clex", s, [4.0, 5.0]) for s in range(3)] + [run("rope", 0, [5.0, 6.0])]
    for seed, r in enumerate(runs[:3]):  # results.json keys are strings
        r["tasks"] = {"ruler": {"128": 0.5 + 0.1 * seed, "256": 0.25}}
        r["task_metrics"] = {"ruler": "exact-match accuracy"}
    text = comparison_markdown(runs)
    section = text.split("## RULER-style tasks")[1].split("##")[0]
    assert "| clex | 3 | 0.60 ± 0.25 | 0.25 ± 0.00 |" in section and "| rope" not in section  # rope ran no RULER
    assert "## Passkey" not in text


def write_run(directory, results):
    directory.mkdir(parents=True)
    (directory / "results.json").write_text(json.dumps(results))


def tidy(result, seed):
    return {
        **result,
        "schema_version": 1,
        "choices": {"model": "tiny-llama"},
        "parameters": 1000,
        "corpus": {"sha256": "abc"},
        "config": {**result["config"], "strategy": {"name": result["strategy"]}},
    }


def test_collect_counts_a_run_found_twice_once_and_leaves_out_infinite_ppl(tmp_path, capsys):
    good = [tidy(run("clex", s, [4.0 + s, 5.0]), s) for s in range(2)]
    bad = tidy(run("clex", 2, [math.inf, 5.0]), 2)
    for index, results in enumerate(good + [bad]):
        write_run(tmp_path / "a" / str(index), results)
    write_run(tmp_path / "copy" / "0", good[0])  # the same run again under another path
    rows = collect([tmp_path / "a", tmp_path / "copy"])
    err = capsys.readouterr().err
    assert "counted once" in err and len({(r["variant_id"], r["seed"]) for r in rows}) == 3
    summary = {s["length"]: s for s in aggregate(rows)}
    assert "PPL inf at length 128" in capsys.readouterr().err
    assert summary[128]["n"] == 2 and summary[128]["mean"] == pytest.approx(4.5)
    assert summary[256]["n"] == 3


def synthetic(rng, seeds, cap=None, alpha=0.3, beta=0.8, noise=0.1, seed_noise=0.0):
    rows = []
    for config, (size, length) in enumerate((s, n) for s in (1e5, 3e5, 1e6, 3e6) for n in (64, 128, 256)):
        shared = rng.normal(0, noise)  # the configuration's own deviation, shared by its seeds
        for _ in range(seeds):
            value = 2.0 * size**alpha * length**beta * math.exp(shared + rng.normal(0, seed_noise))
            rows.append(
                (size, length, value if cap is None else min(value, cap), cap is not None and value >= cap, config)
            )
    return [list(column) for column in zip(*rows, strict=False)]


def test_censored_runs_enter_as_lower_bounds_not_values():
    rng = np.random.default_rng(3)
    sizes, lengths, values, censored, groups = synthetic(rng, seeds=4, cap=8000, seed_noise=0.1)
    assert 0.2 < np.mean(censored) < 0.5
    tobit = fit_power_law(sizes, lengths, values, censored=censored, bootstrap=50)
    naive = fit_power_law(sizes, lengths, values, bootstrap=50)  # the bounds read as measurements
    assert abs(tobit["coef"][2] - 0.8) < 0.05 < abs(naive["coef"][2] - 0.8)
    assert tobit["censored"] == sum(censored)


def test_bootstrap_keeps_a_configurations_seeds_together():
    # seeds that barely differ add no information about the exponents: resampled as independent runs
    # they shrink the interval by about sqrt(seeds); resampled with their configuration they do not
    sizes, lengths, values, _, groups = synthetic(np.random.default_rng(0), seeds=8, seed_noise=0.001)
    grouped = fit_power_law(sizes, lengths, values, groups=groups, bootstrap=300)
    independent = fit_power_law(sizes, lengths, values, bootstrap=300)
    one_seed = fit_power_law(sizes[::8], lengths[::8], values[::8], bootstrap=300)

    def width(fit):
        return fit["ci"][1][1] - fit["ci"][1][0]

    assert grouped["configurations"] == 12 and independent["configurations"] == 96
    assert width(grouped) > 2 * width(independent)
    assert 0.6 < width(grouped) / width(one_seed) < 1.6


def test_analysis_imports_no_torch():
    import subprocess

    code = (
        "import sys, clex.analysis.tables, clex.analysis.stats, clex.analysis.comparison; "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_null_options_leave_names_alone_but_a_users_null_in_a_map_counts():
    from clex.config.identity import drop_nulls

    assert drop_nulls({"seed": 0, "threads": None, "eval": {"stride": None, "eps": 0.1}}) == {
        "seed": 0,
        "eval": {"eps": 0.1},
    }
    skip_test = {"data": {"splits": {"test": None, "unsupervised": None}}}
    assert variant_id(skip_test) != variant_id({"data": {"splits": {"unsupervised": None}}})


def test_a_strategy_reference_with_several_variants_pairs_setting_by_setting():
    runs = [
        run(name, s, [p, p + 1], eval={"stride": stride} if stride else {})
        for s in range(2)
        for name, p, stride in (("rope", 5.0, None), ("rope", 7.0, 64), ("clex", 4.0, None), ("clex", 5.0, 64))
    ]
    text = comparison_markdown(runs, reference="rope")
    assert "of 2 different settings (they differ in eval.stride)" in text
    first, second = text.split("## Setting 2: ")
    assert "| clex - rope | 2 | -1.00 ± 0.00* |" in first and "| clex - rope | 2 | -2.00 ± 0.00* |" in second


def test_runs_of_different_budgets_are_never_paired():
    runs = [run("clex", s, [4.0, 5.0]) for s in range(2)]
    runs += [run("rope", s, [5.0, 6.0], train={"length": 128, "steps": 40}) for s in range(2)]
    text = comparison_markdown(runs, reference="rope")
    assert "they differ in train.steps" in text and "| clex - rope" not in text
    assert "## Setting 1: train.steps=200" in text and "## Setting 2: train.steps=40" in text


def test_labels_name_keys_apart_and_round_sampled_floats():
    from clex.analysis.stats import short_keys, shown_value

    assert short_keys(["base.steps", "train.steps", "strategy.amplification"]) == {
        "base.steps": "base.steps",
        "train.steps": "train.steps",
        "strategy.amplification": "amplification",
    }
    assert shown_value(1.6748913598497648) == "1.675" and shown_value(16) == "16"


def test_a_resolved_difference_never_reads_as_touching_zero():
    from clex.analysis.sections import difference_cell
    from clex.analysis.stats import Interval

    assert difference_cell(Interval(0.1112, 3, 0.04, 0.1061)) == "+0.111 ± 0.106*"
    assert difference_cell(Interval(0.50, 3, 0.1, 0.20)) == "+0.50 ± 0.20*"


def test_where_keeps_the_runs_whose_config_has_the_value():
    from clex.commands.compare import where
    from clex.errors import ConfigError

    runs = [(None, run("rope", 0, [5.0, 6.0], data={"name": "text"})), (None, run("rope", 1, [5.0, 6.0]))]
    assert [r["seed"] for r in where(runs, ["data.name=text"])] == [0]
    assert len(where(runs, [])) == 2
    with pytest.raises(ConfigError, match="no run has that"):
        where(runs, ["data.name=stdlib"])
    with pytest.raises(ConfigError, match="write KEY=VALUE"):
        where(runs, ["data.name"])
