"""The type and range of every number in the config, declared in one table (``NUMBERS``): validation reads it
(``check_numbers``, before anything runs, one line naming the key and what it allows), ``run.py --help`` prints it
beside each key, and a test walks it (each key refuses a value outside its range) and keeps it complete (every
numeric key of every shipped option is declared here). What a key means is the comment beside it in its YAML file.
"""

import math
from dataclasses import dataclass

from clex.errors import ConfigError


@dataclass(frozen=True)
class Number:
    """An integer or a float in [low, high] (``open_low``: > low), or null where ``nullable``. ``other``: a
    non-numeric value the key also takes (trainer.devices: "auto" or a list), checked by its owner."""

    kind: type = float
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    nullable: bool = False
    other: bool = False
    doc: str = ""  # what the key means, where no YAML file has a comment beside it

    def describe(self) -> str:
        kind = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text = f"{kind} {'>' if self.open_low else '>='} {self.low:g}"
        else:
            text = kind
        return text + (" or null" if self.nullable else "")

    def check(self, key: str, value):
        if value is None:
            if not self.nullable:
                raise ConfigError(f"{key} must be {self.describe()}, got null")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if self.other:
                return
            raise ConfigError(f"{key} must be {self.describe()}, got {value!r}")
        if self.kind is int and not isinstance(value, int):
            raise ConfigError(f"{key} must be {self.describe()}, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        if not math.isfinite(value) or too_low or (self.high is not None and value > self.high):
            raise ConfigError(f"{key} must be {self.describe()}, got {value!r}")


def at_least(low, kind=int, nullable=False):
    return Number(kind, low, nullable=nullable)


def above(low, nullable=False):
    return Number(float, low, open_low=True, nullable=nullable)


COUNT, POSITIVE, SEED = at_least(1), above(0), at_least(0)
RATIO = Number(float, 0, 1, nullable=True)

NUMBERS = {
    "seed": SEED,
    "threads": Number(int, 1, 1024, nullable=True),
    "base.steps": at_least(0),
    "base.batch_size": COUNT,
    "base.lr": POSITIVE,
    "base.warmup_steps": at_least(0),
    "base.weight_decay": at_least(0, float, nullable=True),
    "train.length": at_least(2),
    "train.steps": at_least(0),
    "train.batch_size": COUNT,
    "train.lr": POSITIVE,
    "train.ode_lr": at_least(0, float, nullable=True),  # 0 freezes the ODE
    "train.warmup_steps": at_least(0),
    "train.warmup_ratio": RATIO,
    "train.min_lr_ratio": RATIO,
    "train.weight_decay": at_least(0, float),
    "train.grad_clip": above(0, nullable=True),
    "train.val_every": COUNT,
    "train.val_batches": COUNT,
    "data.validation_fraction": Number(float, 0, 1, open_low=True),
    "data.test_fraction": Number(float, 0, 1, open_low=True),
    "data.vocab_size": at_least(258),  # the 256 bytes, the separator and one merge
    "data.max_documents": at_least(1, nullable=True),
    "data.max_characters": at_least(1, nullable=True),
    "eval.max_tokens": COUNT,
    "eval.chunk_size": at_least(1, nullable=True),
    "eval.tokens_per_batch": at_least(1, nullable=True),
    "eval.stride": at_least(1, nullable=True),
    "eval.eps": POSITIVE,
    "eval.seed": SEED,
    "eval.passkey.trials": COUNT,
    "eval.ruler.trials": COUNT,
    "eval.ruler.needles": COUNT,
    "eval.ruler.queries": COUNT,
    "eval.ruler.digits": COUNT,
    "eval.ruler.hops": COUNT,
    "eval.ruler.common": COUNT,
    "eval.ruler.common_frequency": COUNT,
    "eval.harness.batch_size": COUNT,
    "eval.harness.limit": at_least(1, nullable=True),
    "eval.harness.max_length": at_least(1, nullable=True),
    "model.hidden_size": COUNT,
    "model.intermediate_size": COUNT,
    "model.num_heads": COUNT,
    "model.num_layers": COUNT,
    "model.original_length": at_least(2, nullable=True),
    "model.partial_rotary_factor": Number(float, 0, 1, open_low=True),
    "model.rope_base": above(1),
    "strategy.factor": at_least(1, float),
    "strategy.max_scale": at_least(1, float),
    "strategy.amplification": Number(float, 0, 64, open_low=True),  # the ODE's width: lambda x rotary_dim
    "strategy.projection_width": Number(int, 1, 2**16, nullable=True),
    "strategy.step_size": POSITIVE,
    "strategy.max_step_t": POSITIVE,
    "strategy.rtol": POSITIVE,
    "strategy.atol": POSITIVE,
    "strategy.ntk_base": above(1, nullable=True),
    "strategy.beta_fast": POSITIVE,
    "strategy.beta_slow": POSITIVE,
    "strategy.high_freq_factor": POSITIVE,
    "strategy.low_freq_factor": POSITIVE,
    "strategy.new_base": above(1),
    "strategy.attention_factor": above(0, nullable=True),
    "sampler.scale_options.low": Number(  # and at most strategy.max_scale (the sampler checks)
        int, 1, doc="uniform-int: the smallest t drawn, t in {low .. t_max} (CLEX's first release: 2)"
    ),
    "trainer.devices": Number(int, -1, other=True),  # -1: every device (Lightning); 0 is refused by the trainer check
    "trainer.num_nodes": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.strategy.stage": Number(int, 0, 3),  # DeepSpeed's ZeRO stage
}


def check_numbers(cfg):
    """Every declared number the config has, against its type and range."""
    from omegaconf import OmegaConf

    for key, number in NUMBERS.items():
        parent, _, leaf = key.rpartition(".")
        section = OmegaConf.select(cfg, parent) if parent else cfg
        if hasattr(section, "keys") and leaf in section:
            number.check(key, OmegaConf.select(cfg, key))


def describe_key(key: str, value) -> str:
    """What ``key`` takes, for --help: a number's type and range, else the kind of its default."""
    if key in NUMBERS:
        return NUMBERS[key].describe()
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a section"
    return "text" if isinstance(value, str) else "any value"


BEGIN, END = "<!-- numbers: generated by python -m clex.config.schema -->", "<!-- end of numbers -->"


def shipped_comments() -> dict:
    """Dotted key -> the comment beside it in the shipped YAML files (the first option that has one)."""
    from pathlib import Path

    from clex.config.files import key_comments

    root = Path(__file__).resolve().parents[1] / "configs"
    comments = key_comments(root / "config.yaml")
    for path in sorted(root.glob("*/*.yaml")):
        comments = {**key_comments(path, f"{path.parent.name}."), **comments}
    return comments


def markdown() -> str:
    """The table of every number's type, range and meaning, for docs/configuration.md (a test keeps it equal)."""
    comments = shipped_comments()
    lines = [BEGIN, "", "| key | takes | meaning (the comment in its YAML file) |", "|---|---|---|"]
    for key, number in NUMBERS.items():
        meaning = (number.doc or comments.get(key, "")).replace("|", "\\|")
        lines.append(f"| `{key}` | {number.describe()} | {meaning} |")
    return "\n".join([*lines, "", END])


if __name__ == "__main__":  # rewrite the page's table in place
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = page.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    page.write_text(text[:start] + markdown() + text[stop:])
