"""The miniature report's text: Table 1, the CLEX ablations, the scaling law and the paper's claims,
each from the runs of its sweeps, with 95% intervals over seeds (docs/design.md, section 6)."""

from pathlib import Path

from clex.analysis.comparison import STRATEGY_ORDER, ordered_variants
from clex.analysis.sections import difference_cell, interval_curves, lengths_of, variant_table
from clex.analysis.stats import (
    INTERVAL_NOTE,
    paired_difference,
    ppl_by_seed,
    variant_id,
)
from clex.eval.protocol import describe_protocol, protocols_line
from clex.reports.claims import claims
from clex.reports.miniature_scaling import scaling_section

TITLES = {
    "clex_dynamics": "Continuous against discrete dynamics",
    "clex_positions": "Position sampler",
    "clex_max_scale": "t_max",
    "clex_amplification": "Amplification factor lambda (projection width lambda d)",
    "clex_log_scale": "Log-scaled attention",
    "clex_eval_rule": "CLEX's evaluation rule for t",
    "baseline_eval_rule": "FBS and YaRN, static (factor 4) or dynamic (t = len / L0)",
}
NOTES = {
    "clex_eval_rule": "Every evaluation length here is a multiple of L0, where ceil(len / L0) = len / L0: the two "
    "rules give the same t and the same numbers; they differ only between multiples.",
    "clex_positions": "The reference is the paper's recipe (extrapolated-random positions).",
}


def compute_minutes(results: list[dict]) -> float:
    """Wall minutes of the part's runs, each once (a run's time includes training its base model when it
    was the first to need it; a shared run counts in the part that lists it first)."""
    return sum({r["name"]: r["wall_seconds"] for r in results}.values()) / 60


def paired_rows(variants, labels, target, others, lengths) -> list[str]:
    rows = []
    for other in others:
        cells = [
            difference_cell(paired_difference(ppl_by_seed(variants[target], n), ppl_by_seed(variants[other], n)))
            for n in lengths
        ]
        rows.append(f"| {labels[target]} - {labels[other]} | " + " | ".join(cells) + " |")
    return rows


def figure(results, path: Path, title: str):
    from clex.plots import plot_ppl_intervals

    plot_ppl_intervals(interval_curves(*ordered_variants(results)), sorted({r["train_length"] for r in results}), path)
    return f"![{title}]({path.name})"


def study_section(name: str, results: list[dict], out: Path) -> list[str]:
    """A study's table, its paired table against its first choice (results[0]), and its figure."""
    variants, labels = ordered_variants(results)
    lengths = lengths_of(results)
    lines = variant_table(variants, labels, lengths)
    if len(variants) > 1:
        ref = variant_id(results[0]["config"])
        lines += [
            "",
            f"Paired against **{labels[ref]}** (PPL difference per seed, mean ± 95% CI; * resolved):",
            "",
            "| variant - reference | " + " | ".join(map(str, lengths)) + " |",
            "|---" * (len(lengths) + 1) + "|",
            *[row for v in variants if v != ref for row in paired_rows(variants, labels, v, [ref], lengths)],
        ]
    lines += ["", figure(results, out / f"{name}.png", name)]
    return lines


NOT_RERUN = (
    "`python analysis/miniature_report.py --parts ablations,scaling` runs it; the last report that did, "
    "made at commit 6117271 with each length on its own documents, is `git show 0bb2731:docs/miniature/README.md`"
)
OFFICIAL_POINTER = (
    "Why section 1 finds no CLEX variant ahead of YaRN x16 is taken apart in [official.md](official.md) "
    "(`python analysis/official_report.py`): the official recipe (`recipe=official`), log-scaled attention at "
    "evaluation only, a frozen ODE, and 4x the fine-tuning steps, each paired per seed against YaRN x16 and the "
    "default CLEX, in PPL and in key-token PPL."
)
TABLE1_4X = (
    "miniature_table1_4x",
    "miniature_table1_4x_yarn16",
    "miniature_table1_4x_clex",
    "miniature_table1_4x_clex_scale",
)


def official_readings(studies: dict) -> list[str]:
    """official.md's readings of perplexity at 2L and 4L (every CLEX variant against YaRN x16 and the default CLEX
    of its budget, paired per seed), from this report's runs of the same sweeps."""
    from clex.reports.official import SWEEPS_200, SWEEPS_800, group, verdicts

    results = [r for name in (*SWEEPS_200, *SWEEPS_800) for r in studies.get(name, [])]
    if not results:
        return ["Not run with these runs (`python analysis/miniature_report.py --parts official`)."]
    lines = [line for line in verdicts(group(results), lengths_of(results), [1024, 2048]) if "key-token" not in line]
    return ["Readings at 1024 and 2048 tokens (2L and 4L), paired per seed:", "", *lines, ""]


def provenance_line(results: list[dict]) -> str:
    """The commits, CPUs, torch versions and thread counts the report's runs came from (more than one is said)."""

    def values(get):
        return ", ".join(sorted({str(get(r)) for r in results})) or "-"

    return (
        f"Provenance of the runs: commit {values(lambda r: (r.get('git_commit') or '?')[:7])}; CPU "
        f"{values(lambda r: r.get('numerics', {}).get('cpu', '?'))}; torch "
        f"{values(lambda r: r.get('packages', {}).get('torch', '?'))}; "
        f"{values(lambda r: r.get('numerics', {}).get('torch_threads', '?'))} threads."
    )


def header(everything: list[dict]) -> list[str]:
    """The page's title, how to regenerate it, the setup, provenance and the protocol's caveat."""
    lines = [
        "# The miniature: CLEX and its baselines on a subword model, with intervals",
        "",
        "Regenerate with `python analysis/miniature_report.py` (resumable: a rerun skips finished trials and "
        "reuses finished runs; `--analyse-only` rewrites this page from what is finished). On a GPU cluster the "
        "same command takes `trainer=gpu` (or `trainer=ddp trainer.devices=N`) and runs its sweeps there.",
        "",
        "Setup: a tiny Llama (4 layers, 128 wide, 1.04M parameters) on the Python standard library's own source, "
        "byte-level BPE with 2,048 tokens trained on the train split only; stage 1 pre-trains with plain RoPE at "
        "L0 = 128 tokens (600 steps of 16 x 128); stage 2 fine-tunes that base with each strategy for 200 steps "
        "at L = 4 x L0 = 512 (section 1, the paper's comparison) or at L = L0 = 128 (section 2, the paper's "
        "CLEX-4K row); PPL on the test split, 16,384 scored tokens per length. "
        f"Seeds 0, 1, 2. {protocols_line(describe_protocol(r.get('eval_protocol')) for r in everything)} "
        f"Cells: {INTERVAL_NOTE}. Lengths are in BPE tokens (about 3.5 bytes each).",
        "",
        provenance_line(everything) if everything else "No runs yet.",
        "",
    ]
    if any(not (r.get("eval_protocol") or {}).get("same_tokens") for r in everything):
        lines += [
            "Runs without `eval.same_tokens` score, at each length, the test documents long enough for it: "
            "their columns differ in documents as well as length; compare them within a column only.",
            "",
        ]
    return lines


def compute_line(studies: dict) -> str:
    """Wall minutes per part of the page, each run counted once."""
    parts = (
        ("Table 1 at L = 4 x L0", list(TABLE1_4X)),
        ("Table 1 at L = L0", ["miniature_table1"]),
        ("ablations", list(TITLES)),
        ("scaling law", ["miniature_scaling"]),
    )
    seen, compute = set(), {}
    for part, names in parts:
        runs = [r for n in names for r in studies.get(n, []) if r["name"] not in seen]
        seen |= {r["name"] for r in runs}
        compute[part] = compute_minutes(runs)
    return (
        "Compute on 2 CPU cores (the runs' wall times, each run once, base models included): "
        + ", ".join(f"{k} {v:.0f} min" for k, v in compute.items())
        + "."
    )


def table1_l0_section(table1: list[dict], out: Path) -> list[str]:
    """Section 2: Table 1 at L = L0, CLEX paired against each baseline, its figure and the position section."""
    from clex.reports.table1 import position_section

    if not table1:
        return ["Not run yet (`python analysis/miniature_report.py --parts table1`).", ""]
    variants, labels = ordered_variants(table1)
    lengths = lengths_of(table1)
    by_strategy = {v[0]["strategy"]: vid for vid, v in variants.items()}
    baselines = [by_strategy[s] for s in STRATEGY_ORDER if s in by_strategy and s != "clex"]
    return [
        *variant_table(variants, labels, lengths),
        "",
        "CLEX against each baseline, paired per seed (mean ± 95% CI of PPL(clex) - PPL(baseline); * resolved; "
        "negative: CLEX better):",
        "",
        "| difference | " + " | ".join(map(str, lengths)) + " |",
        "|---" * (len(lengths) + 1) + "|",
        *(paired_rows(variants, labels, by_strategy["clex"], baselines, lengths) if "clex" in by_strategy else []),
        "",
        figure(table1, out / "table1.png", "Table 1"),
        "",
        *position_section(variants, labels, table1[0]["original_length"], out, "position_nll"),
        "",
    ]


def ablations_section(studies: dict, out: Path) -> list[str]:
    """Section 3: one subsection per CLEX ablation study."""
    lines = [
        "## 3. CLEX ablations and evaluation rules (L = L0)",
        "",
        "Each study runs its choices with seeds 0-2; its first choice is the reference of the paired table. "
        "The default CLEX (t_max 8, lambda 1, `pose` positions, t = ceil(len / L0) clamped at t_max) is shared "
        "between studies.",
        "",
    ]
    for name, title in TITLES.items():
        if studies.get(name):
            section = study_section(name, studies[name], out)
            lines += [f"### {title}", "", *([NOTES[name], ""] if name in NOTES else []), *section, ""]
        else:
            lines += [f"### {title}", "", f"Not run with these runs ({NOT_RERUN}).", ""]
    return lines


def write_report(studies: dict, out: Path) -> str:
    from clex.reports.table1 import table1_4x_section

    out.mkdir(parents=True, exist_ok=True)
    table1_4x = [r for name in TABLE1_4X for r in studies.get(name, [])]
    everything = [r for rs in studies.values() for r in rs]
    scaling, fits = (
        scaling_section(studies.get("miniature_scaling", []), out)
        if studies.get("miniature_scaling")
        else ([f"Not run with these runs ({NOT_RERUN}).", ""], {})
    )
    return "\n".join(
        [
            *header(everything),
            compute_line(studies),
            "",
            "## 1. Table 1 at L = 4 x L0: the paper's comparison",
            "",
            *(
                table1_4x_section(table1_4x, out)
                if table1_4x
                else ["Not run yet (`python analysis/miniature_report.py --parts table1_4x`)."]
            ),
            "",
            "## 2. Table 1 at L = L0 (the CLEX-4K row)",
            "",
            *table1_l0_section(studies.get("miniature_table1", []), out),
            *ablations_section(studies, out),
            "## 4. The scaling law",
            "",
            "This study sets L0 = L (`model.original_length=${train.length}`): each "
            "training length has a base pre-trained at it, unlike the paper, whose scaling law keeps LLaMA-2's "
            "4k and varies the fine-tuning length. Its beta reads how extrapolation grows with a model's own "
            "context, not with fine-tuning length.",
            "",
            *scaling,
            "",
            "## 5. The paper's claims, side by side",
            "",
            *claims(studies, fits),
            "",
            "## 6. CLEX as its authors trained it",
            "",
            OFFICIAL_POINTER,
            "",
            *official_readings(studies),
        ]
    )
