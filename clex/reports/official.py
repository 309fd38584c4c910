"""The miniature's "CLEX as its authors trained it" page (docs/miniature/official.md): the official recipe, log-scaled
attention at evaluation only, a frozen ODE and a 4x budget, each against YaRN x16 and the default CLEX, paired per
seed, in PPL and in key-token PPL."""

from pathlib import Path

from clex.analysis.sections import difference_cell, lengths_of, variant_table
from clex.analysis.stats import INTERVAL_NOTE, paired_difference, ppl_by_seed, variant_id
from clex.reports.table1 import validation_loss

SWEEPS_200 = ("miniature_table1_4x_yarn16", "ablation_clex", "ablation_official")
SWEEPS_800 = ("budget_clex", "budget_yarn16", "budget_rope", "budget_clex_fixed", "budget_clex_frozen")
YARN, CLEX = "YaRN x16", "CLEX (t_max 16, pose)"


def label(run: dict) -> str:
    """What a run is, in the page's words."""
    config, steps = run["config"], run["config"]["train"]["steps"]
    strategy = config["strategy"]
    budget = f", {steps} steps" if steps != 200 else ""
    if run["strategy"] == "yarn":
        return f"YaRN x{strategy['factor']:g}{budget}"
    if run["strategy"] != "clex":
        return f"{run['strategy']}{budget}"
    log = " + log scale at eval" if (config.get("attention") or {}).get("log_scale") else ""
    if (run.get("choices") or {}).get("recipe") == "official":
        return f"official recipe{log or ' without log scale'}{budget}"
    what = CLEX if config["sampler"]["scale"] != "fixed" else "CLEX, t fixed at 16"
    frozen = ", ODE frozen" if config["train"].get("ode_lr") == 0 else ""
    return f"{what}{frozen}{log}{budget}"


def group(results: list[dict]) -> dict:
    """label -> the runs of that variant (one variant per label: two would be named apart by their hash)."""
    by_variant = {}
    for r in results:
        by_variant.setdefault(variant_id(r["config"]), []).append(r)
    labels = {vid: label(runs[0]) for vid, runs in by_variant.items()}
    twice = {name for name in labels.values() if list(labels.values()).count(name) > 1}
    return {(f"{labels[v]} [{v}]" if labels[v] in twice else labels[v]): runs for v, runs in by_variant.items()}


def reading(diff) -> str:
    if diff is None:
        return "not run"
    if diff.half_width is None:
        return f"one seed ({diff.mean:+.2f})"
    word = "ahead" if diff.high < 0 else "behind" if diff.low > 0 else "not resolved"
    return f"{word} ({diff.mean:+.2f} ± {diff.half_width:.2f}, n = {diff.n})"


def paired_table(variants: dict, references: list[str], lengths: list[int], metric: str) -> list[str]:
    what = "key-token PPL" if metric == "key_ppl" else "PPL"
    lines = [
        f"Paired per seed ({what}(variant) - {what}(reference), mean ± 95% CI; * resolved; negative: the variant "
        "better):",
        "",
        "| variant - reference | " + " | ".join(map(str, lengths)) + " |",
        "|---" * (len(lengths) + 1) + "|",
    ]
    for ref in references:
        for name, runs in variants.items():
            if name in references[: references.index(ref) + 1] or ref not in variants:
                continue
            cells = [
                difference_cell(paired_difference(ppl_by_seed(runs, n, metric), ppl_by_seed(variants[ref], n, metric)))
                for n in lengths
            ]
            lines.append(f"| {name} - {ref} | " + " | ".join(cells) + " |")
    return lines


def tables(variants: dict, labels: dict, lengths: list[int], references: list[str]) -> list[str]:
    lines = [*variant_table(variants, labels, lengths), "", *paired_table(variants, references, lengths, "ppl"), ""]
    if any(row.get("key_ppl") is not None for runs in variants.values() for r in runs for row in r["eval"]):
        lines += [
            "Key-token perplexity:",
            "",
            *variant_table(variants, labels, lengths, "key_ppl"),
            "",
            *paired_table(variants, references, lengths, "key_ppl"),
            "",
        ]
    return lines


def verdicts(variants: dict, lengths: list[int], long: list[int]) -> list[str]:
    """Each variant against YaRN x16 and the default CLEX of its own budget at the long lengths, in words."""
    lines = []
    for name, runs in variants.items():
        budget = ", 800 steps" if name.endswith(", 800 steps") else ""
        references = (YARN + budget, CLEX + budget)
        for ref in references:
            if name in references[: references.index(ref) + 1] or ref not in variants:
                continue
            for metric, what in (("ppl", "PPL"), ("key_ppl", "key-token PPL")):
                pairs = {n: (ppl_by_seed(runs, n, metric), ppl_by_seed(variants[ref], n, metric)) for n in long}
                cells = [f"{n}: {reading(paired_difference(*pairs[n]))}" for n in long if n in lengths]
                if any("not run" not in c for c in cells):
                    lines.append(f"- {name} against {ref}, {what}: " + "; ".join(cells))
    return lines


def key_token_note(results: list[dict]) -> str:
    setting = next((r["key_tokens"] for r in results if r.get("key_tokens")), None)
    if setting is None:
        return "Key-token perplexity: not computed yet (the evaluators run last)."
    counts = {}
    for r in results:
        for row in r["eval"]:
            if row.get("key_tokens") is not None:
                counts.setdefault(row["length"], set()).add(row["key_tokens"])
    return (
        f"Key tokens (Fang et al. 2024): targets whose log-probability under the evaluator `{setting['evaluator']}` "
        f"gains more than {setting['threshold']:g} nats from the whole context over the last L0 = 128 tokens; the "
        "evaluator is plain RoPE fine-tuned at 2048 = 16 L0 (200 steps of 1 x 2048) from the seed's own base: none of "
        "the compared methods, trained at every evaluated length. Key tokens per length (over the seeds): "
        + "; ".join(f"{n}: {min(c)}-{max(c)}" for n, c in sorted(counts.items()))
        + " of 16,384."
    )


def run_minutes(results: list[dict]) -> float:
    """Minutes of the runs, each once: a key-token run reused its twin's fine-tuning, so its time is its evaluation
    plus the twin's training."""
    seconds = {
        r["name"]: r["wall_seconds"] + (r["train"].get("wall_seconds", 0.0) if r["train"].get("reused_from") else 0.0)
        for r in results
    }
    return sum(seconds.values()) / 60


def budget_section(title: str, results: list[dict], refs: list[str]) -> list[str]:
    """One budget's tables against its references, and each variant's final validation loss."""
    if not results:
        return [f"## {title}", "", "Not run yet.", ""]
    variants = group(results)
    losses = {name: validation_loss(runs) for name, runs in variants.items()}
    return [
        f"## {title}",
        "",
        f"Compute: {run_minutes(results):.0f} min of run time for these {len(results)} runs.",
        "",
        *tables(variants, {k: k for k in variants}, lengths_of(results), refs),
        "Final validation loss at L (mean ± 95% CI; the split variants are chosen on, never test):",
        "",
        "| variant | validation loss |",
        "|---|---|",
        *[f"| {name} | {loss.format(4) if loss else '-'} |" for name, loss in losses.items()],
        "",
    ]


def more_steps_lines(every: dict, lengths: list[int]) -> list[str]:
    """Each method at 800 steps against itself at 200, paired per seed."""
    lines = []
    for name in [n for n in every if n.endswith(", 800 steps")]:
        before = name.removesuffix(", 800 steps")
        if before in every:
            cells = [
                f"{n}: {reading(paired_difference(ppl_by_seed(every[name], n), ppl_by_seed(every[before], n)))}"
                for n in lengths
            ]
            lines.append(f"- {name} - {before}: " + "; ".join(cells))
    return lines


def write_official(studies: dict, out: Path) -> str:
    short = [r for name in SWEEPS_200 for r in studies.get(name, [])]
    budget = [r for name in SWEEPS_800 for r in studies.get(name, [])]
    everything = short + budget
    lines = [
        "# CLEX as its authors trained it, in the miniature",
        "",
        "Regenerate with `python analysis/official_report.py` (resumable; `--analyse-only` rewrites this page from "
        "what is finished). The paper's setting in miniature: the L0 = 128 plain-RoPE base (stage 1, shared by "
        "every method of a seed) fine-tuned at L = 512 (batch 4 x 512), PPL on the same 16,384 test tokens at "
        f"128-2048. Cells: {INTERVAL_NOTE}.",
        "",
        "Variants: **official recipe** = `recipe=official` (t in {2 .. 16}, position extrapolation, SiLU, official "
        "W_up init, ntk base 10000, log scale at evaluation only and unclamped, one AdamW group with weight decay 0, "
        "betas (0.9, 0.999), 3% warm-up, cosine to 0) with the batch as 4 micro-batches of 1 x 512 (four draws of t "
        "per optimiser step, as theirs); **log scale at eval** = q x log(len) / log(L0) at evaluation only, "
        "unclamped; **ODE frozen** = `train.ode_lr=0` (z(t) stays the NTK prior, alpha = 2t - 1).",
        "",
        key_token_note(everything),
        "",
    ]
    if not everything:
        return "\n".join(lines + ["No runs yet."]) + "\n"
    lines += budget_section(
        "200 fine-tuning steps: (a) the recipe, (b) log scale at evaluation, (d) the ODE", short, [YARN, CLEX]
    )
    lines += budget_section(
        "(c) The budget: 800 fine-tuning steps", budget, [f"{YARN}, 800 steps", f"{CLEX}, 800 steps"]
    )
    every = group(everything)
    lengths = lengths_of(everything)
    lines += [
        "## Readings at 1024 and 2048 (2L and 4L), paired per seed",
        "",
        *verdicts(every, lengths, [1024, 2048]),
        "",
        "More steps, each method against itself at 200 steps (PPL, paired per seed):",
        "",
        *more_steps_lines(every, lengths),
        "",
        f"Compute: {run_minutes(everything):.0f} min of wall time over {len(everything)} runs, each its fine-tuning "
        "and its evaluations (the base models, trained once per seed, and the evaluators not included; threads and "
        "CPU in each results.json).",
    ]
    return "\n".join(lines) + "\n"
