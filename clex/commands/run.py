"""Train and evaluate one configuration, or each of a comma list: PPL against length.

python experiments/run.py                       # the default: CLEX on a tiny Llama, CPU, minutes
python experiments/run.py strategy=rope,pi,fbs,yarn,clex seed=0,1,2   # 15 runs, mean ± CI, paired
python experiments/run.py --help | --cfg [overrides]
"""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from clex.cli import fail, quiet_libraries
from clex.commands import CONFIG_DIR
from clex.config import compose, expand, group_options, load_defaults, parse_overrides
from clex.registry import ConfigError


def usage() -> str:
    _, defaults = load_defaults(CONFIG_DIR)
    lines = [__doc__.strip(), "", "groups (group=option; a comma list runs each in turn, also on any key: seed=0,1,2):"]
    for group, default in defaults.items():
        lines.append(f"  {group:<9} {', '.join(group_options(CONFIG_DIR, group))}   (default: {default})")
    lines += ["", "any key: a.b.c=value (--cfg shows them); +a.b=value adds a key the config lacks"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(usage())
        return 0
    show_config = "--cfg" in argv
    args = [a for a in argv if a != "--cfg"]
    try:
        axes, overrides = parse_overrides(CONFIG_DIR, args)
        configs = [compose(CONFIG_DIR, choice, overrides) for choice in expand(axes)]
        if len(configs) > 1 and configs[0].name:
            raise ConfigError(
                f"name={configs[0].name} would give all {len(configs)} runs of the list one folder; "
                "leave name unset (each run is named by its config)"
            )
        strategies = group_options(CONFIG_DIR, "strategy")
        if configs[0].compare.reference not in strategies:
            raise ConfigError(
                f"compare.reference must be one of {', '.join(strategies)}, got {configs[0].compare.reference!r}"
            )
        if show_config:
            print("\n---\n".join(OmegaConf.to_yaml(cfg, resolve=True) for cfg in configs))
            return 0
        quiet_libraries()
        from clex.data.module import LongContextData
        from clex.experiment import TrainingDiverged, prepare, run_experiment
        from clex.report import comparison_dir, write_comparison
        from clex.results import format_table

        data = {}  # the runs of one corpus and tokenizer read and tokenise it once
        for cfg in configs:  # every config is checked before the first run starts
            key = LongContextData.key(cfg)
            data[key] = prepare(cfg, load_weights=False, data=data.get(key)).data
    except ConfigError as error:
        return fail(error)
    results = []
    for cfg in configs:
        try:
            result = run_experiment(cfg, data=data[LongContextData.key(cfg)])
        except ConfigError as error:
            return fail(error)
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
