"""The type of every key of the config, declared in one place: numbers with their ranges (``NUMBERS``) and every
other value (``OTHERS``: true or false, text, a list, a section). Validation reads it (``check_keys``, before
anything runs, one line naming the key and what it takes), a value given on the command line or in a YAML file is
read as its key's kind (``typed``), ``run.py --help`` prints it beside each key, and docs/configuration.md's table
is generated from it. Tests walk it: every key of every shipped option is declared and has a doc line, and each
number refuses a value outside its range. What a key means is the comment beside it in its YAML file, or the
``doc`` given here where the file has none.
"""

import functools
import re
from pathlib import Path

from clex.config.kinds import Either, Flag, Items, Number, Section, Text, above, at_least
from clex.config.values import INTERPOLATION, check_type

COUNT, POSITIVE, SEED = at_least(1), above(0), at_least(0)
RATIO = Number(kind=float, low=0, high=1, nullable=True)

NUMBERS = {
    "seed": SEED,
    "threads": Number(kind=int, low=1, high=1024, nullable=True),
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
    "data.validation_fraction": Number(kind=float, low=0, high=1, open_low=True),
    "data.test_fraction": Number(kind=float, low=0, high=1, open_low=True),
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
    "model.partial_rotary_factor": Number(kind=float, low=0, high=1, open_low=True),
    "model.rope_base": above(1),
    "strategy.factor": at_least(1, float),
    "strategy.max_scale": at_least(1, float),
    "strategy.amplification": Number(kind=float, low=0, high=64, open_low=True),  # the ODE's width: lambda x rotary_dim
    "strategy.projection_width": Number(kind=int, low=1, high=2**16, nullable=True),
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
        kind=int, low=1, doc="uniform-int: the smallest t drawn, t in {low .. t_max} (CLEX's first release: 2)"
    ),
    "trainer.devices": Number(kind=int, low=-1, other=True),  # -1: every device; 0: refused by the trainer check
    "trainer.num_nodes": COUNT,
    "trainer.log_every_n_steps": COUNT,
    "trainer.strategy.stage": Number(kind=int, low=0, high=3),  # DeepSpeed's ZeRO stage
}


FLAG, TEXT, NAME = Flag(), Text(), Text(nullable=True)
LENGTHS = Items(example="[128,256]")
OTHERS = {
    "name": NAME,
    "out_dir": Text(doc="the folder of the run folders (and of the caches .base and .tokenizers)"),
    "deterministic": FLAG,
    "resume": FLAG,
    "compare.reference": TEXT,
    "attention.log_scale": FLAG,
    "attention.log_scale_clamp": FLAG,
    "attention.log_scale_train": Flag(nullable=True),
    "base.betas": Items(nullable=True, example="[0.9,0.95]"),
    "train.betas": Items(example="[0.9,0.95]", doc="AdamW's betas (beta1, beta2)"),
    "train.gradient_checkpointing": FLAG,
    "train.save_best": FLAG,
    "train.keep_optimizer_state": FLAG,
    "strategy.name": Text(doc="the registered strategy this option builds (clex/rope/strategies/)"),
    "strategy.eval_scale": TEXT,
    "strategy.activation": TEXT,
    "strategy.dynamics": TEXT,
    "strategy.method": TEXT,
    "strategy.beyond_max": TEXT,
    "strategy.up_init": NAME,
    "strategy.short_factor": Items(nullable=True, doc="LongRoPE: the rescale factor of each frequency at or below L0"),
    "strategy.long_factor": Items(nullable=True, doc="LongRoPE: the rescale factor of each frequency beyond L0"),
    "sampler.scale": TEXT,
    "sampler.scale_options": Section(doc="the scale sampler's own settings (uniform-int: low)"),
    "sampler.position": TEXT,
    "model.name": Text(doc="the model builder (clex/models/): tiny-llama, tiny-neox or hf"),
    "model.path": NAME,
    "model.attn_implementation": TEXT,
    "data.name": Text(doc="the data reader: stdlib, text or hf"),
    "data.path": Either(shape="a folder, a file, a glob or a list of them, or null"),
    "data.text_field": TEXT,
    "data.id_field": NAME,
    "data.splits": Section(nullable=True),
    "data.split": TEXT,
    "data.tokenizer": TEXT,
    "data.on_bad_file": TEXT,
    "data.paths": Items(example="[corpus/*.txt]", doc="data=text: the corpus files, folders or globs"),
    "data.test_paths": Items(example="[held-out/*.txt]"),
    "data.validation_paths": Items(
        example="[valid/*.txt]", doc="explicit validation files (with data.test_paths: no hash split)"
    ),
    "trainer.accelerator": TEXT,
    "trainer.precision": Text(doc="Lightning's precision: 32-true, bf16-mixed, 16-mixed, ..."),
    "trainer.enable_progress_bar": Flag(doc="Lightning's progress bar (clex prints its own line where it is off)"),
    "trainer.strategy": Either(shape="a name or a section", doc="Lightning's strategy (ddp, fsdp, deepspeed)"),
    "trainer.strategy.name": Text(doc="the Lightning strategy this section configures"),
    "trainer.strategy.offload_optimizer": FLAG,
    "trainer.strategy.reshard_after_forward": FLAG,
    "trainer.strategy.save_distributed_checkpoint": FLAG,
    "eval.multipliers": Items(example="[1,2,4]"),
    "eval.lengths": Items(nullable=True, example="[128,256]"),
    "eval.documents": NAME,
    "eval.same_tokens": FLAG,
    "eval.position_bins": FLAG,
    "eval.key_tokens": Either(shape="a model folder, a section or null"),
    "eval.passkey": Section(nullable=True),
    "eval.passkey.multipliers": LENGTHS,
    "eval.passkey.depths": Items(example="[0.0,0.5,1.0]", doc="where the key sits, as fractions of the filler"),
    "eval.ruler": Section(nullable=True),
    "eval.ruler.tasks": Items(example="[niah_single,vt]", doc="the RULER-style tasks (clex/eval/ruler_tasks.py)"),
    "eval.ruler.lengths": Items(nullable=True, example="[128,256]"),
    "eval.ruler.depths": Items(example="[0.0,0.5,1.0]"),
    "eval.harness": Section(nullable=True),
    "eval.harness.tasks": Items(example="[niah_single_1]"),
    "eval.harness.lengths": Items(nullable=True, example="[128,256]"),
    "eval.harness.include_path": NAME,
    "eval.harness.allow_download": FLAG,
    "eval.harness.options": Section(),
}
KEYS = {**NUMBERS, **OTHERS}


def check_keys(cfg):
    """Every declared key the config has, against its kind (a number: its type and range)."""
    from omegaconf import OmegaConf

    for key, kind in KEYS.items():
        parent, _, leaf = key.rpartition(".")
        section = OmegaConf.select(cfg, parent) if parent else cfg
        if hasattr(section, "keys") and leaf in section:
            kind.check(key, OmegaConf.select(cfg, key))


def typed(key: str, old, new, label: str | None = None):
    """``new``, given for ``key`` on the command line or in a file, read as the key's declared kind (an
    interpolation such as ${train.length} is left to resolve); an undeclared key (one added with +) takes the
    type of the value it replaces. ``label``: how a refusal names it (a file's path and the key)."""
    label = label or key
    if key not in KEYS or (isinstance(new, str) and INTERPOLATION.fullmatch(new)):
        return check_type(label, old, new)
    value = KEYS[key].read(label, new)
    # an integer replacing a float becomes one (strategy.max_scale=4: 4.0); over a null default it stays as given
    # (train.ode_lr=0), as runs were named: their hash tells 0 from 0.0
    return float(value) if type(value) is int and isinstance(old, float) else value


def describe_key(key: str, value) -> str:
    """What ``key`` takes, for --help: its declared kind (a number's type and range); a key the schema does not
    declare (one added with +) by the kind of its value."""
    if key in KEYS:
        return KEYS[key].describe()
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a section"
    return "text" if isinstance(value, str) else "any value"


BEGIN, END = "<!-- keys: generated by python -m clex.config.schema -->", "<!-- end of keys -->"


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>.*?)(?:\s+#\s?(?P<comment>.*))?$")
COMMENT_LINE = re.compile(r"^ +#\s?(?P<comment>.*)$")


def key_comments(path: Path, prefix: str = "") -> dict:
    """Dotted key -> the comment written beside it in a YAML file (and on the indented comment lines below it)."""
    comments, stack, last = {}, [], None
    for line in path.read_text().splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match["key"])]
            last = prefix + ".".join(k for _, k in stack)
            if match["comment"]:
                comments[last] = match["comment"].strip()
        elif COMMENT_LINE.match(line) and last in comments:
            comments[last] += " " + COMMENT_LINE.match(line)["comment"].strip()
        else:
            last = None
    return comments


@functools.cache
def shipped_comments() -> dict:
    """Dotted key -> the comment beside it in the shipped YAML files (the first option that has one)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    comments = key_comments(root / "config.yaml")
    for path in sorted(root.glob("*/*.yaml")):
        comments = {**key_comments(path, f"{path.parent.name}."), **comments}
    return comments


SECTION_ORDER = ("", "compare", "attention", "base", "train", "strategy", "sampler", "model", "data", "trainer", "eval")


def order(key: str) -> tuple:
    """Top-level keys first, then each section in the order of config.yaml, keys in declaration order within."""
    section = key.split(".")[0] if "." in key else ""
    return (SECTION_ORDER.index(section) if section in SECTION_ORDER else len(SECTION_ORDER), section)


def doc_line(key: str, comments: dict) -> str | None:
    """What ``key`` means: the comment beside it in ``comments`` (its own file's), else the schema's doc, else the
    comment beside it in another shipped option (pose.yaml has none for sampler.scale; official.yaml has)."""
    kind = KEYS.get(key)
    return comments.get(key) or (kind.doc if kind else None) or shipped_comments().get(key)


def markdown() -> str:
    """The table of every key's type, range and meaning, for docs/configuration.md (a test keeps it equal)."""
    lines = [BEGIN, "", "| key | takes | meaning (the comment in its YAML file, as --help shows it) |", "|---|---|---|"]
    for key, kind in sorted(KEYS.items(), key=lambda item: order(item[0])):
        meaning = (doc_line(key, shipped_comments()) or "").replace("|", "\\|")
        lines.append(f"| `{key}` | {kind.describe()} | {meaning} |")
    return "\n".join([*lines, "", END])


if __name__ == "__main__":  # rewrite the page's table in place
    from pathlib import Path

    page = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    text = page.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    page.write_text(text[:start] + markdown() + text[stop:])
