"""CLEX as its authors trained it: each difference from the official recipe is a switch that does what the
official code does, and recipe=official sets every one of them."""

import copy
import math

import lightning as L
import pytest
import torch
from conftest import tiny_llama
from omegaconf import OmegaConf

from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.config.identity import SAMPLING_STRATEGIES
from clex.errors import ConfigError
from clex.rope.patch import patch_model, rotary_module, rotary_settings
from clex.rope.samplers import build_scale_sampler
from clex.rope.strategies import STRATEGIES, build_strategy, strategy_names
from clex.train.module import LongContextLM, next_token_loss
from clex.train.run_folder import run_name


def test_recipe_official_sets_every_official_value():
    cfg = single_config(CONFIG_DIR, ["recipe=official"])
    s, sampler, t = cfg.strategy, cfg.sampler, cfg.train
    assert (cfg.choices.strategy, cfg.choices.sampler, cfg.choices.recipe) == ("clex", "official", "official")
    assert (s.name, s.max_scale, s.activation, s.ntk_base, s.up_init, s.amplification) == (
        "clex",
        16.0,
        "silu",
        10000.0,
        "official",
        1.0,
    )
    a = cfg.attention
    assert a.log_scale is True and a.log_scale_clamp is False and a.log_scale_train is False
    assert (sampler.scale, sampler.scale_options.low, sampler.position) == ("uniform-int", 2, "extrapolated-random")
    assert t.ode_lr is None and t.weight_decay == 0.0 and list(t.betas) == [0.9, 0.999]
    assert (t.warmup_ratio, t.min_lr_ratio, t.grad_clip) == (0.03, 0.0, 1.0)
    assert t.lr == single_config(CONFIG_DIR, []).train.lr  # the miniature's own rate, not 7B's 2e-5


def test_the_recipe_shares_the_base_of_every_other_method():
    from clex.config.identity import base_key

    fingerprint = {"files": 1}
    assert base_key(single_config(CONFIG_DIR, ["recipe=official"]), fingerprint) == base_key(
        single_config(CONFIG_DIR, ["strategy=yarn", "strategy.factor=16"]), fingerprint
    )


def test_the_command_line_changes_a_recipe_key_and_may_not_contradict_its_groups():
    cfg = single_config(CONFIG_DIR, ["recipe=official", "sampler.scale_options.low=1"])  # the head's {1 .. 16}
    assert cfg.sampler.scale_options.low == 1
    with pytest.raises(ConfigError, match="recipe=official sets strategy=clex, got strategy=yarn"):
        single_config(CONFIG_DIR, ["recipe=official", "strategy=yarn"])


def test_cfg_prints_the_recipe_whole(capsys):
    from clex.commands import run

    assert run.main(["--cfg", "recipe=official"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.strategy.up_init == "official" and printed.train.min_lr_ratio == 0.0


def test_warmup_ratio_and_min_lr_ratio_shape_the_schedule():
    from clex.train.module import warmup_cosine
    from clex.train.stages import optimiser_settings

    optim = optimiser_settings(single_config(CONFIG_DIR, ["recipe=official", "train.steps=800"]).train)
    assert optim.warmup_steps == 24 and optim.min_lr_ratio == 0.0  # 3% of 800
    assert warmup_cosine(799, 24, 800, 0.0) == pytest.approx(0.0, abs=1e-4)
    assert warmup_cosine(800, 24, 800, 0.0) == 0.0 and warmup_cosine(800, 20, 800) == pytest.approx(0.1)


# --- the scale sampler's lower end, and the sampler outside the identity of strategies that draw no t ----------
def test_low_sets_the_smallest_t():
    generator = torch.Generator().manual_seed(0)
    official = build_scale_sampler("uniform-int", 16, {"low": 2})
    assert {official(generator) for _ in range(2000)} == set(map(float, range(2, 17)))
    continuous = build_scale_sampler("uniform-continuous", 8, {"low": 3})
    assert min(continuous(generator) for _ in range(2000)) >= 3
    with pytest.raises(ConfigError, match=r"low must be in \[1, t_max = 8\]"):
        build_scale_sampler("uniform-int", 8, {"low": 9})
    with pytest.raises(ConfigError, match="unknown option.*lo.*allowed: low"):
        build_scale_sampler("uniform-int", 8, {"lo": 2})


def test_a_sampler_on_a_strategy_that_draws_no_t_names_the_same_run():
    def name(*args):
        return run_name(single_config(CONFIG_DIR, list(args)))

    assert name("strategy=yarn", "strategy.factor=16", "sampler=official") == name(
        "strategy=yarn", "strategy.factor=16", "sampler=pose"
    )
    assert name("strategy=clex", "sampler=official") != name("strategy=clex", "sampler=pose")


def test_the_identity_knows_every_strategy_that_draws_t():
    assert set(SAMPLING_STRATEGIES) == {n for n in strategy_names() if STRATEGIES.get(n).samples_scale}


# --- W_up's initialisation ---------------------------------------------------------------------------------
def test_official_up_init_is_kaiming_uniform_on_the_transposed_tensor():
    torch.manual_seed(0)
    linear = build_strategy("clex", rotary_dim=64, base=1e4, original_length=64)
    official = build_strategy("clex", rotary_dim=64, base=1e4, original_length=64, up_init="official")
    assert linear.up.weight.shape == official.up.weight.shape == (64, 32)  # width = lambda d = 64 by d/2
    # bounds 1/sqrt(fan_in): 1/sqrt(32) on [width, d/2], 1/sqrt(64) on the official [d/2, width]
    assert 0.95 / math.sqrt(64) < official.up.weight.abs().max() <= 1 / math.sqrt(64)
    assert linear.up.weight.abs().max() > 1.2 / math.sqrt(64)
    assert torch.equal(official.down.weight, torch.zeros_like(official.down.weight))
    with pytest.raises(ConfigError, match="up_init must be one of linear, official"):
        build_strategy("clex", rotary_dim=64, base=1e4, original_length=64, up_init="xavier")


# --- one optimiser step: draws per micro-batch, and the frozen ODE -----------------------------------------
def fit(ode_lr=None, accumulate=1, steps=2, L0=16, length=32, dropout=0.0):
    model = tiny_llama(L0=L0)  # in eval mode, as from_pretrained returns a checkpoint
    model.config.attention_dropout = dropout
    strategy = build_strategy("clex", **rotary_settings(model), max_scale=4)
    patch_model(model, strategy)
    optim = OmegaConf.create(
        {"lr": 1e-2, "ode_lr": ode_lr, "weight_decay": 0.0, "betas": [0.9, 0.95], "warmup_steps": 0}
        | {"steps": steps, "min_lr_ratio": 0.1}
    )
    sampling = OmegaConf.create({"scale": "uniform-int", "scale_options": {}, "position": "contiguous"})
    module = LongContextLM(model, optim, sampling, seed=0, max_scale=4)
    draws, modes = [], []
    sample = module.scale_sampler
    module.scale_sampler = lambda generator: draws.append(sample(generator)) or draws[-1]
    step = module.training_step
    module.training_step = lambda batch, *rest: modes.append(model.training) or step(batch, *rest)
    before = copy.deepcopy(strategy.state_dict())
    ids = torch.randint(0, 97, (steps * accumulate * 2, length + 1), generator=torch.Generator().manual_seed(1))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(ids, batch_size=2))
    trainer.modes = modes
    return trainer, draws, before, strategy


def test_each_micro_batch_draws_its_own_t_under_gradient_accumulation():
    trainer, draws, _, _ = fit(accumulate=4, steps=2)
    assert trainer.global_step == 2 and len(draws) == 8  # 4 micro-batches, 4 draws, per optimiser step


def test_ode_lr_zero_freezes_the_ode_and_null_trains_it_at_lr():
    _, draws, before, frozen = fit(ode_lr=0.0, steps=3)
    assert any(t > 1 for t in draws)  # the ODE was in the frequencies of some step
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    assert not frozen.down.weight.any()  # W_down all zeros: z(t) is still log ntk(t)
    _, _, before, trained = fit(ode_lr=None, steps=3)
    assert trained.down.weight.abs().max() > 0 and not torch.equal(before["up.weight"], trained.up.weight)


def test_fine_tuning_a_checkpoint_loaded_in_eval_mode_trains_with_dropout_on():
    from clex.eval.perplexity import sequence_nll

    trainer, _, _, _ = fit(steps=2, dropout=0.5)
    model = trainer.lightning_module.model
    assert trainer.modes == [True, True]  # every training step in train mode: dropout on
    ids = torch.randint(0, 97, (2, 33), generator=torch.Generator().manual_seed(3))
    assert sequence_nll(model, ids, 1000) == sequence_nll(model, ids, 1000)  # evaluation: dropout off, repeatable
    assert not model.training


# --- log-scaled attention at evaluation only ---------------------------------------------------------------
def patched_copies(L0=16, **log_scale):
    model = tiny_llama(L0=L0)
    plain = patch_model(copy.deepcopy(model), build_strategy("rope", **rotary_settings(model)))
    scaled = patch_model(copy.deepcopy(model), build_strategy("rope", **rotary_settings(model)), **log_scale)
    return model, plain, scaled


def test_log_scale_at_evaluation_only_leaves_training_unchanged():
    _, plain, scaled = patched_copies(log_scale=True, log_scale_clamp=False, log_scale_train=False)
    _, _, trained_with = patched_copies(log_scale=True, log_scale_clamp=False)
    ids = torch.randint(0, 97, (2, 49), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(48, dtype=torch.float32)
    losses, logits = [], []
    for model in (plain, scaled, trained_with):
        with rotary_module(model).training_scale(1.0, positions):
            losses.append(next_token_loss(model, ids))
            logits.append(model(input_ids=ids[:, :-1]).logits)
    assert torch.equal(losses[0], losses[1]) and torch.equal(logits[0], logits[1])  # bit for bit: no factor
    assert (logits[0] - logits[2]).abs().max() > 1e-4  # the switch is what removes it (len 48 > L0 = 16)


@pytest.mark.parametrize("length", [8, 48])  # below L0 (factor < 1, unclamped) and past it
def test_log_scale_at_evaluation_multiplies_q_by_log_len_over_log_L0(length):
    L0 = 16
    model, _, scaled = patched_copies(L0, log_scale=True, log_scale_clamp=False, log_scale_train=False)
    factor = math.log(length) / math.log(L0)
    reference = copy.deepcopy(model)  # transformers' own rope, queries multiplied by the official factor
    with torch.no_grad():
        for layer in reference.model.layers:
            layer.self_attn.q_proj.weight.mul_(factor)
    ids = torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(input_ids=ids).logits, scaled(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, model(input_ids=ids).logits, atol=1e-3)
