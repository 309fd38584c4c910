"""The config's numbers are declared once (clex/config/schema.py): every numeric key of every shipped option is
declared, each refuses a value outside its range (or of the wrong type) in one line naming it, before anything
runs, and --help prints each key's type and range."""

import pytest
from omegaconf import OmegaConf

from clex.commands import CONFIG_DIR, run
from clex.config.compose import compose, group_options, validate
from clex.config.files import as_dirs
from clex.config.schema import NUMBERS
from clex.config.values import flat_keys
from clex.errors import ConfigError

GROUPS = ("strategy", "sampler", "model", "data", "trainer", "eval", "recipe")


def compositions() -> dict:
    """(group, option) -> its composed config, for every shipped option of every group."""
    found = {}
    for group in GROUPS:
        for option in group_options(as_dirs(CONFIG_DIR), group):
            overrides = [("model.path", "/nonexistent")] if option == "hf" and group == "model" else []
            found[group, option] = compose(CONFIG_DIR, {group: option}, overrides)
    return found


CONFIGS = compositions()


def numeric_keys(cfg) -> set:
    return {
        key
        for key in flat_keys(cfg)
        if not key.startswith("choices.")
        and isinstance(value := OmegaConf.select(cfg, key), (int, float))
        and not isinstance(value, bool)
    }


def test_every_numeric_key_of_every_option_is_declared():
    undeclared = {key for cfg in CONFIGS.values() for key in numeric_keys(cfg)} - set(NUMBERS)
    assert undeclared == set()


def outside(number) -> list:
    """Values the key must refuse: below its range, above it, of the wrong type, null where it takes none."""
    values = ["text"]
    if number.low is not None:
        values.append(number.low if number.open_low else number.low - 1)
    if number.high is not None:
        values.append(number.high + 1)
    if number.kind is int:
        values.append((number.low or 0) + 1.5)
    if not number.nullable:
        values.append(None)
    return values


@pytest.mark.parametrize("key", sorted(NUMBERS))
def test_each_number_refuses_a_value_outside_its_range_naming_the_key(key):
    number = NUMBERS[key]
    cfg = next(cfg for cfg in CONFIGS.values() if key in flat_keys(cfg))
    number.check(key, OmegaConf.select(cfg, key))  # the shipped value itself is accepted
    for value in outside(number):
        if value == "text" and number.other:
            continue  # trainer.devices also takes "auto": Lightning's to check
        bad = cfg.copy()
        OmegaConf.update(bad, key, value, force_add=True)
        with pytest.raises(ConfigError) as error:
            validate(bad)
        message = str(error.value)
        assert message.startswith(f"{key} must be ") and "\n" not in message, (value, message)


def test_a_negative_learning_rate_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys):
    assert run.main([f"out_dir={tmp_path}", "base.lr=-0.002"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: base.lr must be a number > 0, got -0.002" and not any(tmp_path.iterdir())


def test_help_prints_each_number_with_its_type_and_range(capsys):
    assert run.main(["--help", "strategy=yarn"]) == 0
    out = capsys.readouterr().out
    assert "strategy.beta_fast = 32.0" in out and "(a number > 0)" in out
    assert "train.warmup_ratio = null" in out and "(a number in [0, 1] or null)" in out
    lines = [line for line in out.splitlines() if line.strip().startswith(("train.", "base.", "eval."))]
    assert lines and all("# (" in line for line in lines)


def test_the_configuration_page_has_the_schema_table_as_generated():
    from pathlib import Path

    from clex.config.schema import markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert markdown() in page  # python -m clex.config.schema rewrites it


def test_every_number_has_a_doc_line():
    from clex.config.schema import shipped_comments

    comments = shipped_comments()
    assert [key for key, number in NUMBERS.items() if not (number.doc or comments.get(key))] == []
