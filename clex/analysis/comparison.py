"""comparison.md and one figure for a comma list of runs: the shape of the paper's Table 1, with seeds.

Runs that differ only in seed are one variant: its cells are mean ± 95% CI over seeds. The paired
section tests each variant against a reference on per-seed differences (same base model, same tokens).
"""

import hashlib
import json
from pathlib import Path

from clex.analysis.collection import tokenizers_warning, write_together
from clex.analysis.sections import (
    interval_curves,
    key_token_section,
    lengths_of,
    paired_section,
    runs_section,
    task_sections,
    variant_table,
)
from clex.analysis.stats import (
    INTERVAL_NOTE,
    group_variants,
    label_variants,
    variant_config,
)
from clex.analysis.tables import markdown_cell
from clex.config.identity import variant_id
from clex.config.values import flat_keys
from clex.eval.protocol import describe_protocol, protocols_line
from clex.plots import plot_ppl_intervals

RUNS = "runs.json"  # beside comparison.md: the runs it compared
STRATEGY_ORDER = ("rope", "pi", "fbs", "yarn", "clex")  # the paper's table order; others after


def ordered_variants(results: list[dict]) -> tuple[dict, dict]:
    """Variants in the paper's strategy order, a strategy's default before its ablations."""
    labels = {vid: markdown_cell(label) for vid, label in label_variants(results).items()}
    variants = group_variants(results)

    def key(vid):
        strategy = variants[vid][0]["strategy"]
        order = STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else len(STRATEGY_ORDER)
        return order, strategy, len(labels[vid]), labels[vid]

    return {vid: variants[vid] for vid in sorted(variants, key=key)}, labels


# what sets methods apart within a comparison (log-scaled attention is one: it sat in the strategy section until it
# had its own); everything else must be the same
SHARED = ("strategy", "sampler", "attention")


def setting(results: dict) -> dict:
    """What a run's comparison holds fixed: its resolved config but its seed, paths and method (SHARED),
    plus the corpus it read (runs on two Pythons' standard libraries are not alike)."""
    shared = {k: v for k, v in variant_config(results["config"]).items() if k not in SHARED}
    if isinstance(shared.get("train"), dict):  # the ODE's learning rate is CLEX's own, like its strategy section
        shared["train"] = {k: v for k, v in shared["train"].items() if k != "ode_lr"}
    return {**shared, "corpus": results.get("corpus")}


def comparable_groups(results: list[dict]) -> list[list[dict]]:
    """The runs split into groups of one setting each (setting()): only runs of one group are paired."""
    groups = {}
    for r in results:
        groups.setdefault(json.dumps(setting(r), sort_keys=True, default=str), []).append(r)
    return list(groups.values())


def differing_keys(groups: list[list[dict]]) -> list[str]:
    """The dotted keys whose value differs between the groups' settings."""
    flats = [flat_keys(setting(g[0]), sections=False) for g in groups]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


def group_caption(group: list[dict], keys: list[str]) -> str:
    flat = flat_keys(setting(group[0]), sections=False)
    return markdown_cell(
        ", ".join(f"{k}={flat.get(k) if k != 'corpus' else (flat.get(k) or {}).get('sha256', '?')[:8]}" for k in keys)
    )


def comparison_markdown(results: list[dict], reference: str = "rope", runs: bool = True) -> str:
    groups = comparable_groups(results)
    if len(groups) == 1:
        return group_markdown(results, reference, runs)
    keys = differing_keys(groups)
    lines = [
        f"These {len(results)} runs are of {len(groups)} different settings (they differ in {', '.join(keys)}), so "
        "they are compared within each setting only; runs of two settings are never paired.",
        *([] if not (mixed := tokenizers_warning(results)) else ["", f"**Warning:** {mixed}."]),
        "",
    ]
    for number, group in enumerate(groups, 1):
        section = group_markdown(group, reference, runs).replace("\n## ", "\n### ")
        section = section.replace("## ", "### ", 1) if section.startswith("## ") else section
        lines += [f"## Setting {number}: {group_caption(group, keys)}", "", section]
    return "\n".join(lines)


def group_markdown(results: list[dict], reference: str = "rope", runs: bool = True) -> str:
    variants, labels = ordered_variants(results)
    lengths = lengths_of(results)
    first = results[0]
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "## Perplexity by evaluation length",
        "",
        *variant_table(variants, labels, lengths),
        "",
        f"Evaluation lengths in tokens; training length L = {first['train_length']}, L0 = {first['original_length']}; "
        f"{first['eval'][0]['tokens']} tokens scored at L; seeds {', '.join(map(str, seeds))}. "
        f"{protocols_line(describe_protocol(r.get('eval_protocol')) for r in results)} Cells: {INTERVAL_NOTE}. "
        "Extrapolation length: largest length with PPL within (1 + eps) of PPL at L (≥ / +: some run stayed "
        "within at every evaluated length, a lower bound).",
        *([] if not (mixed := tokenizers_warning(results)) else ["", f"**Warning:** {mixed}."]),
        *paired_section(variants, labels, lengths, reference),
        *key_token_section(variants, labels, lengths, reference),
        *task_sections(variants, labels, reference),
        *(runs_section(variants, labels, lengths) if runs else []),
    ]
    return "\n".join(lines) + "\n"


def comparison_dir(out_dir: Path, results: list[dict]) -> Path:
    """out_dir/comparison-<strategies>-<hash of the run names>: one folder per set of runs."""
    strategies = "-".join(dict.fromkeys(r["strategy"] for r in results))
    runs = hashlib.sha1(" ".join(sorted(r["name"] for r in results)).encode()).hexdigest()[:8]
    return Path(out_dir) / f"comparison-{strategies}-{runs}"


def runs_record(results: list[dict]) -> list[dict]:
    """What runs.json lists: each compared run's name, variant, seed and folder."""
    return sorted(
        (
            {"name": r["name"], "variant_id": variant_id(r["config"]), "seed": r["seed"], "run_dir": r.get("run_dir")}
            for r in results
        ),
        key=lambda r: (r["name"], r["variant_id"], r["seed"]),
    )


def write_comparison(results: list[dict], target: Path, reference: str = "rope", runs: bool = True) -> str:
    """comparison.md, ppl_vs_length.png (mean and 95% band per variant) and runs.json (which runs) in ``target``."""
    variants, labels = ordered_variants(results)
    table = comparison_markdown(results, reference, runs)
    plot_ppl_intervals(
        interval_curves(variants, labels),
        sorted({r["train_length"] for r in results}),
        Path(target) / "ppl_vs_length.png",
    )
    record = json.dumps({"runs": runs_record(results)}, indent=2) + "\n"
    write_together({Path(target) / "comparison.md": table, Path(target) / RUNS: record})
    return table + f"saved {target}"
