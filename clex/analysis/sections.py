"""The pieces of a comparison page, each from variants (runs grouped by everything but the seed): the PPL table,
the paired differences against a reference, key-token PPL, task scores, extrapolation lengths and the runs list;
comparison.py and the reports assemble them."""

import math

from clex.analysis.collection import tokenizer_of
from clex.analysis.stats import (
    mean_ci,
    paired_difference,
    ppl_by_seed,
    variant_config,
)
from clex.analysis.tables import markdown_cell
from clex.eval.tasks import title as task_title


def extrapolation_cell(runs: list[dict]) -> str:
    values = [r["extrapolation_length"]["value"] for r in runs if r["extrapolation_length"]["value"] is not None]
    if not values:
        return "-"
    bound = "≥ " if any(r["extrapolation_length"]["censored"] for r in runs) else ""
    if len(set(values)) == 1:  # every seed the same value (often the longest length): no "± 0"
        return f"{bound}{values[0]:.0f} (n = {len(values)})" if len(values) > 1 else bound + mean_ci(values).format(0)
    return bound + mean_ci(values).format(0)


def lengths_of(results) -> list[int]:
    return sorted({row["length"] for r in results for row in r["eval"]})


def variant_table(variants: dict, labels: dict, lengths: list[int], metric: str = "ppl") -> list[str]:
    """Mean ± 95% CI of ``metric`` (ppl, or key_ppl: the key tokens', without the extrapolation length)."""
    extra = metric == "ppl"
    lines = [
        "| variant | n | " + " | ".join(map(str, lengths)) + (" | extrapolation length |" if extra else " |"),
        "|---" * (len(lengths) + 2 + extra) + "|",
    ]
    for vid, runs in variants.items():
        cells = []
        for length in lengths:
            values = ppl_by_seed(runs, length, metric)
            cells.append(mean_ci(list(values.values())).format() if values else "-")
        tail = f" | {extrapolation_cell(runs)} |" if extra else " |"
        lines.append(f"| {labels[vid]} | {len(runs)} | " + " | ".join(cells) + tail)
    return lines


def key_token_section(variants: dict, labels: dict, lengths: list[int], reference: str) -> list[str]:
    """eval.key_tokens: the key tokens' PPL per variant and its paired differences (nothing when no run has it)."""
    if not any(row.get("key_ppl") is not None for runs in variants.values() for r in runs for row in r["eval"]):
        return []
    setting = next(r["key_tokens"] for runs in variants.values() for r in runs if r.get("key_tokens"))
    counts = {
        n: sorted(
            {
                row.get("key_tokens")
                for runs in variants.values()
                for r in runs
                for row in r["eval"]
                if row["length"] == n
            }
        )
        for n in lengths
    }
    lines = [
        "",
        "## Key-token perplexity",
        "",
        f"PPL over the key tokens only: the targets whose log-probability under the evaluator "
        f"(`{setting['evaluator']}`) gains more than {setting['threshold']:g} nats from the whole context over the "
        "last L0 tokens (the same tokens for every method of a seed). Key tokens per length: "
        + "; ".join(f"{n}: {'/'.join(str(c) for c in counts[n] if c is not None) or '-'}" for n in lengths)
        + ".",
        "",
        *variant_table(variants, labels, lengths, "key_ppl"),
    ]
    return lines + paired_section(variants, labels, lengths, reference, "key_ppl")


def reference_partners(variants: dict, labels: dict, reference: str) -> tuple[dict, str]:
    """variant id -> the reference variant it is compared with, and how the reference was found: per
    variant, the variant of strategy ``reference`` with the same other settings, when every variant has
    one (``rope,clex`` under two protocols: each protocol against its own rope); else the one variant
    labelled ``reference`` (a label like "clex": CLEX's ablations against the default); else per variant
    where there is one; else the list's first variant."""

    def rest(runs):  # what the run computes, but its strategy (and log-scaled attention, part of it until it moved)
        return {k: v for k, v in variant_config(runs[0]["config"]).items() if k not in ("strategy", "attention")}

    refs = {vid: runs for vid, runs in variants.items() if runs[0]["strategy"] == reference}
    partners = {
        vid: next((rid for rid, ref in refs.items() if rest(ref) == rest(runs)), None)
        for vid, runs in variants.items()
        if vid not in refs
    }
    named = [vid for vid in variants if labels[vid] == reference]
    if partners and all(partners.values()):
        return partners, "strategy"
    if len(named) == 1:
        return {vid: named[0] for vid in variants if vid != named[0]}, "label"
    if not refs:
        first = next(iter(variants))
        return {vid: first for vid in variants if vid != first}, "first"
    return partners, "strategy"


def difference_cell(diff) -> str:
    """A paired difference: "+0.12 ± 0.03*" (* where the interval excludes 0), "+0.12" for one seed."""
    if diff is None:
        return "-"
    if diff.half_width is None:
        return f"{diff.mean:+.2f}"
    digits = 2  # more where two decimals would make a resolved interval look as if it touched zero
    while digits < 4 and diff.excludes_zero and round(abs(diff.mean), digits) == round(diff.half_width, digits):
        digits += 1
    star = "*" if diff.excludes_zero else ""
    return f"{diff.mean:+.{digits}f} ± {diff.half_width:.{digits}f}{star}"


def interval_curves(variants: dict, labels: dict) -> dict:
    """label -> {length: Interval of the per-seed PPL}, for plots.plot_ppl_intervals."""
    return {
        labels[vid]: {n: mean_ci(list(v.values())) for n in lengths_of(runs) if (v := ppl_by_seed(runs, n))}
        for vid, runs in variants.items()
    }


def paired_section(variants: dict, labels: dict, lengths: list[int], reference: str, metric: str = "ppl") -> list[str]:
    partners, mode = reference_partners(variants, labels, reference)
    if not partners:
        return []
    if mode == "first":
        first = next(iter(variants))
        intro = (
            f"No run of the reference `{reference}` here (`compare.reference=NAME` picks one): each variant "
            f"against the first, **{labels[first]}**."
        )
    elif mode == "label":
        intro = f"Each variant against **{reference}** (`compare.reference=NAME` to change)."
    else:
        intro = f"Each variant against `{reference}` with the same settings (`compare.reference=NAME` to change)."
    what = "key-token PPL" if metric == "key_ppl" else "PPL"
    lines = [
        "",
        "## Paired differences" + (" of the key-token perplexity" if metric == "key_ppl" else ""),
        "",
        intro + f" Cells: mean over seeds of {what}(variant) - {what}(reference) "
        "± 95% t-interval of the per-seed differences; * where the interval excludes 0 (resolved), "
        "n = seeds both have.",
        "",
        "| variant - reference | n | " + " | ".join(map(str, lengths)) + " |",
        "|---" * (len(lengths) + 2) + "|",
    ]
    mixed = []
    for vid, rid in partners.items():
        if rid is None:
            lines.append(f"| {labels[vid]} | 0 | " + " | ".join("no reference run" for _ in lengths) + " |")
            continue
        cells, n = [], 0
        for length in lengths:
            diff = paired_difference(
                ppl_by_seed(variants[vid], length, metric), ppl_by_seed(variants[rid], length, metric)
            )
            n = max(n, diff.n if diff else 0)
            cells.append(difference_cell(diff))
        pair = (tokenizer_of(variants[vid][0]), tokenizer_of(variants[rid][0]))
        mark = "" if pair[0] == pair[1] else " (different tokenizers)"
        if mark:
            mixed.append(f"{labels[vid]}: {pair[0]}, {labels[rid]}: {pair[1]}")
        lines.append(f"| {labels[vid]} - {labels[rid]}{mark} | {n} | " + " | ".join(cells) + " |")
    if mixed:
        lines += [
            "",
            f"**Different tokenizers** ({'; '.join(mixed)}): PPL of different tokenizers are not comparable (their "
            "tokens are different units), so those differences say nothing about the strategies.",
        ]
    return lines


def task_by_seed(runs: list[dict], task: str, length: str) -> dict:
    """seed -> the run's score of evaluation ``task`` at ``length`` ("all": a score without a length)."""
    return {r["seed"]: cells[length] for r in runs if (cells := r.get("tasks", {}).get(task)) and length in cells}


def task_sections(variants: dict, labels: dict, reference: str) -> list[str]:
    """Per evaluation task the runs have (results.json's tasks): mean ± 95% CI over seeds at each length, then each
    variant's paired differences against the reference (the same pairing as perplexity's)."""
    names = sorted({task for runs in variants.values() for r in runs for task in r.get("tasks", {})})
    partners, _ = reference_partners(variants, labels, reference)
    pairs = {vid: rid for vid, rid in partners.items() if rid is not None}
    lines = []
    for task in names:
        cells = {n for runs in variants.values() for r in runs for n in r.get("tasks", {}).get(task, {})}
        lengths = sorted(cells, key=lambda n: (n == "all", int(n) if n != "all" else 0))
        metric = next(r["task_metrics"][task] for runs in variants.values() for r in runs if task in r.get("tasks", {}))
        lines += [
            "",
            f"## {markdown_cell(task_title(task))}: {markdown_cell(metric)}",
            "",
            "| variant | n | " + " | ".join(lengths) + " |",
            "|---" * (len(lengths) + 2) + "|",
        ]
        for vid, runs in variants.items():
            scored = [r for r in runs if task in r.get("tasks", {})]
            if scored:
                by_seed = [task_by_seed(scored, task, n) for n in lengths]
                row = [mean_ci(list(v.values())).format() if v else "-" for v in by_seed]
                lines.append(f"| {labels[vid]} | {len(scored)} | " + " | ".join(row) + " |")
        diffs = {
            vid: [
                difference_cell(
                    paired_difference(task_by_seed(variants[vid], task, n), task_by_seed(variants[rid], task, n))
                )
                for n in lengths
            ]
            for vid, rid in pairs.items()
            if any(task_by_seed(variants[vid], task, n) for n in lengths)
        }
        if diffs:
            lines += [
                "",
                "Paired: mean over seeds of score(variant) - score(reference) ± 95% t-interval; * excludes 0.",
                "",
                "| variant - reference | " + " | ".join(lengths) + " |",
                "|---" * (len(lengths) + 1) + "|",
                *(f"| {labels[vid]} - {labels[pairs[vid]]} | " + " | ".join(row) + " |" for vid, row in diffs.items()),
            ]
    return lines


def runs_section(variants: dict, labels: dict, lengths: list[int]) -> list[str]:
    lines = [
        "",
        "## Runs",
        "",
        "| variant | seed | " + " | ".join(map(str, lengths)) + " | extrapolation length | run |",
        "|---" * (len(lengths) + 4) + "|",
    ]
    for vid, runs in variants.items():
        for r in sorted(runs, key=lambda r: r["seed"]):
            ppl = {row["length"]: row["ppl"] for row in r["eval"]}
            cells = [f"{ppl[n]:.3f}" if ppl.get(n) is not None and math.isfinite(ppl[n]) else "-" for n in lengths]
            ext = r["extrapolation_length"]
            ext_cell = "-" if ext["value"] is None else f"{ext['value']:.0f}" + ("+" if ext["censored"] else "")
            name = markdown_cell(r["name"])
            lines.append(f"| {labels[vid]} | {r['seed']} | " + " | ".join(cells) + f" | {ext_cell} | `{name}` |")
    return lines
