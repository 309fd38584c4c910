"""Train and evaluate one configuration, or each of a comma list: PPL against length.

python experiments/run.py                       # the default: CLEX on a tiny Llama, CPU, minutes
python experiments/run.py strategy=rope,pi,fbs,yarn,clex seed=0,1,2   # 15 runs, mean ± CI, paired
python experiments/run.py --help [group=option ...] | --cfg [overrides] | --config-dir DIR [overrides]
"""

import signal
import sys
import textwrap
from pathlib import Path

from omegaconf import OmegaConf

from clex.commands import CONFIG_DIR
from clex.commands.cli import fail, quiet_libraries, take_config_dirs
from clex.config.compose import compose, expand, group_options, load_defaults, parse_overrides
from clex.config.files import check_config_dirs, load_option, option_file, shown
from clex.config.schema import describe_key, doc_line, key_comments
from clex.config.values import flat_keys
from clex.errors import ConfigError

OPTIONS = """options:
  --cfg              print the composed config (every run of a list), run nothing
  --help [group=option ...]   this text; the keys below are those of that composition
  --config-dir DIR   a folder of your own config groups, read after the shipped ones (repeatable): DIR/strategy/
                     mine.yaml adds strategy=mine (e.g. 'extends: yarn' and the keys that change), a file named like
                     a shipped option replaces it ('extends: <its name>' keeps the keys it does not give),
                     DIR/config.yaml changes top-level defaults and a group's default option (defaults: [...])"""


def usage(dirs: list[Path], args: list[str]) -> str:
    """The groups and their options, then every key of one composition (the default, or ``args``'s) with its
    value and the comment beside it in its file."""
    _, defaults = load_defaults(dirs)
    axes, overrides = parse_overrides(dirs, args)
    lists = [f"{key}={','.join(values)}" for key, values in axes.items() if len(values) > 1]
    if lists:
        raise ConfigError(
            f"--help {lists[0]}: --help shows one composition; give one option, e.g. --help strategy=yarn"
        )
    cfg = compose(dirs, {key: values[0] for key, values in axes.items()}, overrides)
    lines = [__doc__.strip(), "", "groups (group=option; a comma list runs each in turn, also on any key: seed=0,1,2):"]
    for group, default in defaults.items():
        lines.append(f"  {group:<9} {', '.join(group_options(dirs, group))}   (default: {default})")
    for folder in dirs[1:]:
        lines.append(f"  (with --config-dir {folder})")
    chosen = " ".join(f"{group}={cfg.choices[group]}" for group in defaults)
    lines += ["", f"keys and their values with {chosen}", "(--help group=option ... shows another composition):"]
    lines += key_lines(dirs, cfg, defaults)
    lines += ["", "any key: a.b.c=value; +a.b=value adds a key the config lacks", "", OPTIONS]
    return "\n".join(lines)


def show(value) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def key_lines(dirs: list[Path], cfg, defaults: dict, width: int = 118) -> list[str]:
    """``key = value   # (kind) comment``, by section: the top level, its sections, then each group's option; the
    kind (a number's type and range) from config/schema.py, the comment from its file (else the schema's doc)."""
    comments = {}
    for folder in dirs:
        if (folder / "config.yaml").is_file():
            comments.update(key_comments(folder / "config.yaml"))
    files = {}
    for group in defaults:
        files[group] = []
        load_option(dirs, group, cfg.choices[group], files=files[group])
        for path in files[group]:
            comments.update(key_comments(path, f"{group}."))
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("choices")  # the group lines above
    sections = {"top level": [(k, v) for k, v in plain.items() if not (isinstance(v, dict) and v)]}
    for key, value in plain.items():
        if isinstance(value, dict) and value:
            option = cfg.choices.get(key) if key in defaults else None
            where = f" ({key}={option}: {shown(dirs, option_file(dirs, key, option)[1])})" if option else ""
            flat = flat_keys(value, f"{key}.").items()  # values, and sections that are empty
            sections[f"{key}{where}"] = [(k, v) for k, v in flat if not (isinstance(v, dict) and v)]
    column = min(44, max(len(f"{k} = {show(v)}") for rows in sections.values() for k, v in rows))
    lines = []
    for title, rows in sections.items():
        lines.append(f"  {title}:")
        for key, value in rows:
            text = f"    {key} = {show(value)}".ljust(column + 4)
            comment = " ".join(filter(None, [f"({describe_key(key, value)})", doc_line(key, comments)]))
            if not comment:
                lines.append(text.rstrip())
                continue
            wrapped = textwrap.wrap(comment, max(30, width - len(text) - 4))
            lines.append(f"{text}  # {wrapped[0]}")
            lines += [f"{' ' * len(text)}  # {more}" for more in wrapped[1:]]
    return lines


def main(argv=None) -> int:
    """The command; the signal handlers it installs (train/callbacks.Interruption) are undone when it returns."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run_command(sys.argv[1:] if argv is None else argv)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def run_command(argv: list[str]) -> int:
    show_config = "--cfg" in argv
    try:
        user_dirs, args = take_config_dirs([a for a in argv if a != "--cfg"])
        dirs = [CONFIG_DIR, *user_dirs]
        check_config_dirs(dirs)
        if "--help" in args or "-h" in args:
            print(usage(dirs, [a for a in args if a not in ("--help", "-h")]))
            return 0
        axes, overrides = parse_overrides(dirs, args)
        configs = [compose(dirs, choice, overrides) for choice in expand(axes)]
        if len(configs) > 1 and configs[0].name:
            raise ConfigError(
                f"name={configs[0].name} would give all {len(configs)} runs of the list one folder; "
                "leave name unset (each run is named by its config)"
            )
        strategies = group_options(dirs, "strategy")
        if configs[0].compare.reference not in strategies:
            raise ConfigError(
                f"compare.reference must be one of {', '.join(strategies)}, got {configs[0].compare.reference!r}"
            )
        if show_config:
            print("\n---\n".join(OmegaConf.to_yaml(cfg, resolve=True) for cfg in configs))
            return 0
        quiet_libraries()
        from clex.analysis.comparison import comparison_dir, write_comparison
        from clex.errors import Interrupted
        from clex.train.callbacks import Interruption
        from clex.train.experiment import SharedData, TrainingDiverged, run_experiment
        from clex.train.results import format_table

        Interruption.install()  # SIGINT / SIGTERM: one line, a non-zero status, the run resumable
        shared = SharedData()  # the runs of one corpus and tokenizer read and tokenise it once
        for cfg in configs:  # every config is checked before the first run starts
            shared.prepare(cfg, load_weights=False)
    except ConfigError as error:
        return fail(error)
    except Interrupted as error:
        return fail(f"{error}; nothing was run yet", error.code)
    results = []
    for cfg in configs:
        try:
            result = run_experiment(cfg, data=shared.of(cfg))
        except ConfigError as error:
            return fail(error)
        except Interrupted as error:
            done = f" ({len(results)} of {len(configs)} runs finished before it)" if len(configs) > 1 else ""
            return fail(f"{error}{done}; what finished is kept, and the same command resumes", error.code)
        except TrainingDiverged as error:
            return fail(f"{cfg.choices.strategy}: {error}", 1)
        if result is None:  # a DDP rank other than 0
            continue
        print(format_table(result))
        print(f"saved {Path(cfg.out_dir) / result['name']}")
        results.append(result)
    if len(results) > 1:
        target = comparison_dir(Path(configs[0].out_dir), results)
        print(write_comparison(results, target, configs[0].compare.reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
