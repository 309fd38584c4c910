"""Stage 1's cache key: one base per setting of what the base model's training reads, shared by every strategy
and L, and never reused by a setting that trains it differently (train's weight decay, betas and clipping are
stage 1's too)."""

import pytest

from clex.commands import CONFIG_DIR
from clex.config.compose import single_config
from clex.config.identity import base_key, stage_one_section

FINGERPRINT = {"files": 3, "bytes": 100, "sha256": "0" * 64}


def key(*args):
    return base_key(single_config(CONFIG_DIR, list(args)), FINGERPRINT)


@pytest.mark.parametrize(
    "args",
    [
        ["strategy=rope"],
        ["strategy=yarn", "strategy.factor=8"],
        ["train.length=512"],
        ["train.lr=1e-4"],
        ["eval=passkey"],
    ],
)
def test_what_stage_1_does_not_read_shares_the_base(args):
    assert key(*args) == key()


@pytest.mark.parametrize(
    "args",
    [
        ["train.weight_decay=0.0"],
        ["train.betas=[0.9,0.99]"],
        ["train.grad_clip=0.5"],
        ["base.steps=10"],
        ["seed=1"],
        ["model.hidden_size=64"],
        ["data.tokenizer=bpe"],
        ["trainer.precision=bf16-mixed"],
    ],
)
def test_what_stage_1_reads_gets_its_own_base(args):
    assert key(*args) != key()


def test_stage_1_takes_its_optimiser_settings_from_train_unless_base_sets_them():
    cfg = single_config(CONFIG_DIR, ["train.weight_decay=0.05", "train.grad_clip=0.5", "base.betas=[0.8,0.9]"])
    section = stage_one_section(cfg)
    assert (section.weight_decay, list(section.betas), section.grad_clip) == (0.05, [0.8, 0.9], 0.5)
    assert (section.steps, section.batch_size, section.lr) == (cfg.base.steps, cfg.base.batch_size, cfg.base.lr)
    assert key("train.weight_decay=0.05") != key("train.weight_decay=0.05", "base.weight_decay=0.2")


def test_an_interpolated_base_key_is_resolved_against_the_whole_config():
    cfg = single_config(CONFIG_DIR, ["train.batch_size=8", "base.batch_size=${train.batch_size}"])
    assert stage_one_section(cfg).batch_size == 8
    assert base_key(cfg, FINGERPRINT) == key("base.batch_size=8", "train.batch_size=8")


def test_the_seeds_own_key_token_evaluator_does_not_split_a_variant():
    from clex.config.identity import variant_id

    def config(seed, threshold=0.5):
        keys = {"evaluator": f"runs/evaluator-seed{seed}/model", "threshold": threshold}
        return {"seed": seed, "strategy": {"name": "rope"}, "eval": {"key_tokens": keys}}

    assert variant_id(config(0)) == variant_id(config(1)) != variant_id(config(1, threshold=2.0))


@pytest.mark.parametrize("args", [[], ["attention.log_scale=true"], ["recipe=official"], ["strategy=yarn"]])
def test_a_run_named_before_the_attention_section_keeps_its_name_and_variant(args, tmp_path):
    """Runs written when log_scale sat in the strategy section: their config, read back, is the same run (same
    identity, same folder name, same variant) as today's config, so finished runs are found and reused."""
    import json

    from omegaconf import OmegaConf

    from clex.config.identity import config_hash, drop_nulls, run_identity, variant_id
    from clex.train.run_folder import run_name

    cfg = single_config(CONFIG_DIR, args)
    today = OmegaConf.to_container(cfg, resolve=True)
    before = json.loads(json.dumps(today))  # the same config in the layout it was written in then
    before["strategy"].update(before.pop("attention"))
    assert run_identity(before) == run_identity(today)
    assert variant_id(before) == variant_id(today)
    # the name then: the hash of the config without its nulls and the keys that say where a run goes
    unread = ("name", "out_dir", "choices", "resume", "compare") + (() if cfg.strategy.name == "clex" else ("sampler",))
    then = config_hash({k: v for k, v in drop_nulls(before).items() if k not in unread})
    assert run_name(cfg).endswith(then)


def composed(*args) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(single_config(CONFIG_DIR, list(args)), resolve=True)


def test_log_scaled_attention_is_a_method_compare_pairs_like_a_strategy_option(tmp_path):
    """rope and clex with attention.log_scale=true are one setting (compared, paired), as when log_scale sat in
    the strategy section; a run read from an old results.json (log_scale in strategy) joins the same group, and
    --where finds it by either name of the key."""
    import json

    from clex.analysis.collection import read_results
    from clex.analysis.comparison import comparable_groups
    from clex.commands.compare import where

    old = composed("strategy=clex", "attention.log_scale=true", "seed=1")
    old["strategy"].update(old.pop("attention"))  # as a run wrote it before the attention section
    (tmp_path / "results.json").write_text(json.dumps({"config": old}))
    runs = [
        {"config": composed("strategy=rope"), "strategy": "rope"},
        {"config": composed("strategy=clex", "attention.log_scale=true"), "strategy": "clex"},
        {"config": read_results(tmp_path / "results.json")["config"], "strategy": "clex"},
    ]
    assert len(comparable_groups(runs)) == 1
    for condition in ("attention.log_scale=true", "strategy.log_scale=true"):
        assert where([(None, r) for r in runs], [condition]) == runs[1:]


def test_an_integer_given_where_the_default_is_null_stays_an_integer():
    """train.ode_lr=0 (null by default) stays the integer 0, as runs given it were named (their hash tells 0 from
    0.0); a float key with a float default still reads 4 as 4.0."""
    cfg = single_config(CONFIG_DIR, ["train.ode_lr=0", "strategy.ntk_base=10000", "strategy.max_scale=4"])
    assert type(cfg.train.ode_lr) is int and type(cfg.strategy.ntk_base) is int
    assert type(cfg.strategy.max_scale) is float and cfg.strategy.max_scale == 4.0


def test_a_user_strategy_file_or_recipe_with_the_old_keys_says_where_they_went(tmp_path):
    from clex.errors import ConfigError

    (tmp_path / "strategy").mkdir()
    (tmp_path / "strategy" / "mine.yaml").write_text("extends: clex\nlog_scale: true\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) log_scale \(attention.log_scale now"):
        single_config([CONFIG_DIR, tmp_path], ["strategy=mine"])
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "mine.yaml").write_text("strategy:\n  log_scale: true\n")
    with pytest.raises(ConfigError, match="recipe=mine: unknown config key 'strategy.log_scale'; it is attention"):
        single_config([CONFIG_DIR, tmp_path], ["recipe=mine"])
