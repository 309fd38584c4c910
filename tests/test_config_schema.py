"""The config's keys are declared once (clex/config/schema.py): every key of every shipped option is declared with
its kind and has a doc line, each number refuses a value outside its range (or of the wrong type) and every other
key a value of another kind, in one line naming it, before anything runs, and --help prints each key's kind and
doc from the schema."""

import pytest
from omegaconf import DictConfig, OmegaConf

from clex.commands import CONFIG_DIR, run
from clex.config.compose import compose, group_options, validate
from clex.config.files import as_dirs
from clex.config.schema import KEYS, NUMBERS, OTHERS
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


def leaf_keys(cfg) -> set:
    """The keys --help lists: every value, and every section that is empty or null."""
    return {
        key
        for key, node in flat_keys(cfg).items()
        if not key.startswith("choices") and not (isinstance(node, DictConfig) and len(node))
    }


def test_every_numeric_key_of_every_option_is_declared_as_a_number():
    undeclared = {key for cfg in CONFIGS.values() for key in numeric_keys(cfg)} - set(NUMBERS)
    assert undeclared == set()


def test_every_key_of_every_option_is_declared_and_its_value_is_of_its_kind():
    assert {key for cfg in CONFIGS.values() for key in leaf_keys(cfg)} - set(KEYS) == set()
    for cfg in CONFIGS.values():
        for key in leaf_keys(cfg):
            KEYS[key].check(key, OmegaConf.select(cfg, key))  # the shipped value is accepted


WRONG = {"Flag": "3", "Text": "[1,2]", "Items": "5", "Section": "text"}


@pytest.mark.parametrize("key", sorted(k for k, kind in OTHERS.items() if type(kind).__name__ in WRONG))
def test_each_other_key_refuses_a_value_of_another_kind_naming_the_key(key):
    group, option = next((g, o) for (g, o), cfg in CONFIGS.items() if key in flat_keys(cfg))
    overrides = [("model.path", "/nonexistent")] if (group, option) == ("model", "hf") else []
    with pytest.raises(ConfigError) as error:
        compose(CONFIG_DIR, {group: option}, [*overrides, (key, WRONG[type(OTHERS[key]).__name__])])
    message = str(error.value)
    if isinstance(flat_keys(CONFIGS[group, option])[key], DictConfig):  # a value for a section: refused as that
        assert message.startswith(f"{key} is a section, not a value"), message
    else:
        assert message.startswith(f"{key} must be {OTHERS[key].describe()}, got "), message
    assert "\n" not in message


@pytest.mark.parametrize(("group", "option"), sorted(CONFIGS))
def test_help_gives_every_key_its_kind_and_a_doc_line_from_the_schema(group, option, capsys):
    extra = ["model.path=/nonexistent"] if (group, option) == ("model", "hf") else []
    assert run.main(["--help", f"{group}={option}", *extra]) == 0
    entries = {}  # key -> its line and the comment lines wrapped below it
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("    ") and " = " in line.split("#")[0]:
            key = line.split(" = ")[0].strip()
            entries[key] = line
        elif line.strip().startswith("# ") and entries and line.startswith(" " * 40):
            entries[key] += " " + line.strip()[2:]
    assert entries
    for key, text in entries.items():
        comment = text.split("  # ", 1)[1]
        kind = f"({KEYS[key].describe()})"
        assert comment.startswith(kind) and len(comment) > len(kind) + 3, text  # the kind, then the doc line


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


def test_every_key_has_a_doc_line():
    from clex.config.schema import doc_line

    assert [key for key in KEYS if not doc_line(key, {})] == []
