"""The miniature report's Table 1 at L = 4 x L0, the paper's comparison: every method fine-tuned at 4 x L0 from
one plain-RoPE base, PPL at 1-16 x L0 on the same tokens, CLEX against each baseline paired per seed, the
CLEX variant chosen on the validation split, and the loss by position at the longest length."""

from pathlib import Path

from clex.analysis.comparison import ordered_variants
from clex.analysis.sections import difference_cell, interval_curves, lengths_of, variant_table
from clex.analysis.stats import mean_ci, paired_difference, ppl_by_seed


def validation_loss(runs: list[dict]):
    """Mean final validation loss (at L, on the validation split) over a variant's seeds."""
    values = [r["train"].get("final_val_loss") for r in runs]
    values = [v for v in values if v is not None and v == v]
    return mean_ci(values) if values else None


def chosen_clex(variants: dict) -> str | None:
    """The CLEX variant with the lowest validation loss: chosen on validation, never on test."""
    clex = {vid: validation_loss(runs) for vid, runs in variants.items() if runs[0]["strategy"] == "clex"}
    clex = {vid: loss for vid, loss in clex.items() if loss is not None}
    return min(clex, key=lambda vid: clex[vid].mean) if clex else None


def position_curves(variants: dict, labels: dict) -> dict:
    """label -> {bin end: Interval of the bin's mean NLL over seeds}, for runs with eval.position_bins."""
    curves = {}
    for vid, runs in variants.items():
        by_end = {}
        for r in runs:
            for b in r.get("position_nll") or []:
                if b["nll"] is not None:
                    by_end.setdefault(b["end"], []).append(b["nll"])
        if by_end:
            curves[labels[vid]] = {end: mean_ci(values) for end, values in sorted(by_end.items())}
    return curves


def position_section(variants: dict, labels: dict, original_length: int, out: Path, name: str) -> list[str]:
    from clex.plots import plot_position_nll

    curves = position_curves(variants, labels)
    if not curves:
        return []
    ends = sorted({end for curve in curves.values() for end in curve})
    starts = [0] + ends[:-1]
    lines = [
        "Loss by position at the longest length: mean NLL of the predictions made at positions [start, end) "
        "(mean ± 95% CI over seeds; lower is better; a bin past L0 that does no better than [0, L0) is context "
        "the model no longer uses):",
        "",
        "| variant | " + " | ".join(f"{a}-{b}" for a, b in zip(starts, ends, strict=False)) + " |",
        "|---" * (len(ends) + 1) + "|",
    ]
    for label, curve in curves.items():
        lines.append(f"| {label} | " + " | ".join(curve[e].format(3) if e in curve else "-" for e in ends) + " |")
    plot_position_nll(curves, original_length, out / f"{name}.png")
    return lines + ["", f"![loss by position]({name}.png)"]


def table1_4x_section(results: list[dict], out: Path) -> list[str]:
    from clex.plots import plot_ppl_intervals

    variants, labels = ordered_variants(results)
    lengths = lengths_of(results)
    L, L0 = results[0]["train_length"], results[0]["original_length"]
    clex = [vid for vid in variants if variants[vid][0]["strategy"] == "clex"]
    baselines = [vid for vid in variants if vid not in clex]
    lines = [
        f"L0 = {L0} (the plain-RoPE base), L = {L} (every method fine-tuned here, batch 4 x {L}: the same tokens "
        "per step as the L = L0 table), PPL at 1-16 x L0.",
        "",
        *variant_table(variants, labels, lengths),
        "",
    ]
    chosen = chosen_clex(variants)
    if clex:
        lines += [
            "CLEX variants on the validation split (final validation loss at L, mean ± 95% CI; the report "
            "chooses the lowest, never on test):",
            "",
            "| variant | validation loss |",
            "|---|---|",
        ]
        lines += [
            f"| {labels[vid]}{' (chosen)' if vid == chosen else ''} | "
            f"{validation_loss(variants[vid]).format(4) if validation_loss(variants[vid]) else '-'} |"
            for vid in clex
        ]
        lines.append("")
    for vid in clex:
        lines += [
            f"**{labels[vid]}** against each baseline, paired per seed (PPL(clex) - PPL(baseline), mean ± 95% CI; "
            "* resolved; negative: CLEX better):",
            "",
            "| difference | " + " | ".join(map(str, lengths)) + " |",
            "|---" * (len(lengths) + 1) + "|",
        ]
        for other in baselines:
            cells = [
                difference_cell(paired_difference(ppl_by_seed(variants[vid], n), ppl_by_seed(variants[other], n)))
                for n in lengths
            ]
            lines.append(f"| {labels[vid]} - {labels[other]} | " + " | ".join(cells) + " |")
        lines.append("")
    if chosen and baselines:
        lines += [beats_every_baseline(variants, labels, chosen, baselines, [2 * L, 4 * L]), ""]
    plot_ppl_intervals(interval_curves(variants, labels), [L], out / "table1_4x.png")
    lines += ["![Table 1 at L = 4 x L0](table1_4x.png)", ""]
    return lines + position_section(variants, labels, L0, out, "position_nll_4x")


def beats_every_baseline(variants, labels, chosen: str, baselines: list, lengths: list[int]) -> str:
    """Item 5's reading: is the chosen CLEX ahead of every baseline at these lengths by a paired interval?"""
    verdicts = []
    for n in lengths:
        for other in baselines:
            diff = paired_difference(ppl_by_seed(variants[chosen], n), ppl_by_seed(variants[other], n))
            if diff is None or diff.half_width is None:
                verdicts.append((n, other, "not run"))
            else:
                verdicts.append((n, other, "ahead" if diff.high < 0 else "behind" if diff.low > 0 else "not resolved"))
    ahead = all(v == "ahead" for _, _, v in verdicts)
    detail = "; ".join(f"{labels[o]} at {n}: {v}" for n, o, v in verdicts if v != "ahead")
    if ahead:
        return (
            f"Reading: **{labels[chosen]} is ahead of every baseline at {' and '.join(map(str, lengths))} "
            "tokens**, each by a paired interval that excludes zero."
        )
    return (
        f"Reading: {labels[chosen]} is **not** ahead of every baseline at {' and '.join(map(str, lengths))} tokens "
        f"by a paired interval ({detail})."
    )
