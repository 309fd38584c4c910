"""The official-recipe page reads its runs right: each variant named from its config, paired per seed against
YaRN x16 and the default CLEX, and its readings computed from those intervals."""

from clex.reports.official import label, write_official


def run(strategy, seed, ppl, steps=200, attention=None, **config):
    section = {"name": strategy, "factor": 16.0} if strategy == "yarn" else {"name": strategy}
    attention = {"log_scale": False, **(attention or {})}
    return {
        "name": "-".join(map(str, (strategy, seed, steps, sorted(config.items()), section, attention))),
        "strategy": strategy,
        "seed": seed,
        "choices": config.pop("choices", {}),
        "config": {
            "seed": seed,
            "strategy": section,
            "attention": attention,
            "sampler": {"scale": config.pop("scale", "uniform-int")},
            "train": {"steps": steps, "ode_lr": config.pop("ode_lr", 3e-4)},
        },
        "eval": [
            {"length": n, "ppl": p, "key_ppl": p + 1, "key_tokens": 10} for n, p in zip((512, 1024), ppl, strict=True)
        ],
        "train": {"final_val_loss": 3.0},
        "wall_seconds": 60.0,
        "extrapolation_length": {"value": 1024.0, "censored": True},
        "key_tokens": {"evaluator": "runs/e-seed${seed}/model", "threshold": 2.0},
    }


def test_labels_name_what_a_run_is():
    assert label(run("yarn", 0, (1, 1))) == "YaRN x16"
    assert label(run("clex", 0, (1, 1), ode_lr=0.0, attention={"log_scale": True})) == (
        "CLEX (t_max 16, pose), ODE frozen + log scale at eval"
    )
    assert label(run("clex", 0, (1, 1), choices={"recipe": "official"})) == "official recipe without log scale"
    assert label(run("clex", 0, (1, 1), steps=800, scale="fixed")) == "CLEX, t fixed at 16, 800 steps"


def test_the_page_pairs_per_seed_and_reads_the_intervals(tmp_path):
    yarn = [run("yarn", s, (30.0 + s, 31.0 + s)) for s in range(3)]
    clex = [run("clex", s, (31.0 + s, 33.0 + s + 0.1 * s)) for s in range(3)]  # behind by 2.0-2.2 at 1024
    frozen = [run("clex", s, (30.0 + s, 31.0 + s + (0.3, -0.3, 0.0)[s]), ode_lr=0.0) for s in range(3)]
    text = write_official({"miniature_table1_4x_yarn16": yarn, "ablation_clex": clex + frozen}, tmp_path)
    assert "| CLEX (t_max 16, pose) - YaRN x16 | +1.00 ± 0.00* | +2.10 ± 0.25* |" in text
    assert "- CLEX (t_max 16, pose) against YaRN x16, PPL: 1024: behind (+2.10 ± 0.25, n = 3)" in text
    assert "ODE frozen against YaRN x16, PPL: 1024: not resolved (+0.00 ± 0.75, n = 3)" in text
    assert "key-token PPL" in text and "YaRN x16 - CLEX" not in text  # no reference against another reference
