"""A config that would exhaust the machine is refused in one line before anything runs."""

import time

import pytest
from conftest import said

from clex.commands import run
from clex.errors import ConfigError


@pytest.mark.parametrize(
    "args,message",
    [
        (["train.length=100000"], "train.length=100000: this config needs an estimated "),
        (
            ["strategy=clex", "strategy.step_size=1e-9"],
            "strategy.step_size=1e-09, strategy.max_step_t=1: the ODE solve",
        ),
        (["eval.lengths=[128,8000000]"], "eval.lengths=8000000: this config needs an estimated "),  # a 32 GB KV cache
        (["model.original_length=60000", "train.steps=0"], "model.original_length=60000: this config needs an "),
    ],
)
def test_a_config_that_cannot_fit_is_refused_in_one_line_within_seconds(tmp_path, capsys, args, message):
    start = time.time()
    assert run.main([f"out_dir={tmp_path / 'runs'}", *args]) == 2
    assert time.time() - start < 10
    _, (err, *more) = said(capsys.readouterr().err)  # warnings may come first (eval.max_tokens)
    assert not more and err.startswith(f"error: {message}") and ("lower " in err or "raise " in err), err
    assert not (tmp_path / "runs").exists()


def test_the_default_config_fits_and_its_estimate_is_near_the_measured_peak():
    from clex.commands import CONFIG_DIR
    from clex.config.compose import eval_lengths, single_config
    from clex.config.cost import GiB, check_cost, peak_memory

    cfg = single_config(CONFIG_DIR, [])
    check_cost(cfg, max(eval_lengths(cfg)))
    # measured: 1.66 GiB max RSS for L=1024 x 16 (clex/config/cost.py lists the runs)
    cfg = single_config(CONFIG_DIR, ["train.length=1024", "train.batch_size=16", "eval.multipliers=[1]"])
    assert 1.66 / 1.7 < peak_memory(cfg, 1024)[0] / GiB < 1.66 * 1.7


def test_clex_caps_the_solver_steps_in_the_library():
    import clex

    with pytest.raises(ConfigError, match="would take about 1.72e\\+05 steps, more than the 10000 allowed"):
        clex.build_strategy("clex", rotary_dim=32, base=1e4, original_length=128, max_scale=16, step_size=2e-5)
    clex.build_strategy(
        "clex", rotary_dim=32, base=1e4, original_length=128, max_scale=16, method="dopri5", step_size=1e-9
    )


def test_an_evaluation_only_run_is_not_charged_for_training():
    """train.steps=0 (a checkpoint's evaluation) trains nothing: a long train.length that would not fit in training
    fits, and the estimate is then the evaluation's, with the weights alone (no gradients, no AdamW moments)."""
    from clex.commands import CONFIG_DIR
    from clex.config.compose import single_config
    from clex.config.cost import EVAL_REMEDY, peak_memory

    long = ["train.length=100000", "base.steps=0"]
    trains, _ = peak_memory(single_config(CONFIG_DIR, long), 1024)
    evaluates, remedy = peak_memory(single_config(CONFIG_DIR, [*long, "train.steps=0"]), 1024)
    assert remedy == EVAL_REMEDY and evaluates < trains / 50
    trains_at_1024, _ = peak_memory(single_config(CONFIG_DIR, ["train.length=1024", "base.steps=0"]), 1024)
    assert evaluates < trains_at_1024


def test_stage_one_is_charged_without_checkpointing_and_an_unsharded_evaluation_with_its_whole_weights():
    """Stage 1 never checkpoints its activations (train.gradient_checkpointing is stage 2's), so a stage 1 that is
    the peak costs the same either way; a run that fits nothing shards nothing, so FSDP ranks do not divide it."""
    from clex.commands import CONFIG_DIR
    from clex.config.compose import single_config
    from clex.config.cost import BASE_REMEDY, peak_memory

    base_peak = ["model.original_length=4096", "base.batch_size=8", "train.length=128", "train.batch_size=1"]
    plain, remedy = peak_memory(single_config(CONFIG_DIR, base_peak), 128)
    checkpointed, _ = peak_memory(single_config(CONFIG_DIR, [*base_peak, "train.gradient_checkpointing=true"]), 128)
    assert remedy == BASE_REMEDY and checkpointed == plain

    def fsdp(devices, *extra):
        args = ["trainer=fsdp", f"trainer.devices={devices}", "trainer.accelerator=cpu", "base.steps=0", *extra]
        return peak_memory(single_config(CONFIG_DIR, args), 128)[0]

    assert fsdp(8, "train.steps=0") == fsdp(1, "train.steps=0")
    assert fsdp(8) < fsdp(1)  # training shards the weights, gradients and moments over the ranks
