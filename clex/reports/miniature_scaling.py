"""The miniature report's scaling-law section: the extrapolation length per model size and training length, and
the fit E = a N^alpha L^beta per strategy, censored runs as lower bounds (docs/design.md, section 6)."""

from pathlib import Path

from clex.analysis.sections import extrapolation_cell
from clex.analysis.stats import variant_id

BOOTSTRAP = 10_000  # resamples: at 1,000 the ends of the intervals moved by up to 0.12 with the order of the draws


def fits_of(results: list[dict]) -> tuple[dict, list[str]]:
    """The power-law fit per strategy, and a line for each strategy that has none (too few runs, say)."""
    from clex.analysis.tables import fit_power_law
    from clex.errors import ConfigError

    fits, errors = {}, []
    for strategy in ("clex", "yarn"):
        runs = [r for r in results if r["strategy"] == strategy and r["extrapolation_length"]["value"]]
        try:
            fits[strategy] = fit_power_law(
                [r["parameters"] for r in runs],
                [r["train_length"] for r in runs],
                [r["extrapolation_length"]["value"] for r in runs],
                censored=[r["extrapolation_length"]["censored"] for r in runs],
                groups=[variant_id(r["config"]) for r in runs],
                bootstrap=BOOTSTRAP,
            )
        except ConfigError as error:
            errors.append(f"- {strategy}: no fit ({error})")
    return fits, errors


def extrapolation_tables(results: list[dict]) -> list[str]:
    """Per strategy, the extrapolation length of each model size (rows) and training length (columns)."""
    lengths = sorted({r["train_length"] for r in results})
    lines = []
    for strategy in ("clex", "yarn"):
        sizes = sorted({r["parameters"] for r in results if r["strategy"] == strategy})  # CLEX counts its ODE too
        lines += [
            f"{strategy}: extrapolation length (tokens), mean ± 95% CI over seeds (≥: some seed is a lower bound)",
            "",
            "| parameters | " + " | ".join(f"L = {L}" for L in lengths) + " |",
            "|---" * (len(lengths) + 1) + "|",
        ]
        for n in sizes:
            row = [
                extrapolation_cell(
                    [
                        r
                        for r in results
                        if r["strategy"] == strategy and r["parameters"] == n and r["train_length"] == L
                    ]
                )
                for L in lengths
            ]
            lines.append(f"| {n / 1e6:.2f}M | " + " | ".join(row) + " |")
        lines.append("")
    return lines


def fit_lines(results: list[dict], fits: dict, out: Path) -> list[str]:
    """The fits' table, the model's formula and one figure per strategy (drawn into ``out``)."""
    from clex.plots import plot_fit

    for strategy, fit in fits.items():
        rows = [
            {
                "parameters": r["parameters"],
                "train_length": r["train_length"],
                "censored": r["extrapolation_length"]["censored"],
                "extrapolation_length": r["extrapolation_length"]["value"],
            }
            for r in results
            if r["strategy"] == strategy and r["extrapolation_length"]["value"]
        ]
        plot_fit(rows, fit, strategy, out)
    return [
        "| strategy | runs | censored | alpha (model size) | beta (training length) |",
        "|---|---|---|---|---|",
        *[
            f"| {s} | {f['samples']} | {f['censored']} | "
            f"{f['coef'][1]:.2f} [{f['ci'][1][0]:.2f}, {f['ci'][1][1]:.2f}] | "
            f"{f['coef'][2]:.2f} [{f['ci'][2][0]:.2f}, {f['ci'][2][1]:.2f}] |"
            for s, f in fits.items()
        ],
        "",
    ]


def scaling_section(results: list[dict], out: Path) -> tuple[list[str], dict]:
    """The section's lines and the fits (the claims table reads them)."""
    fits, errors = fits_of(results)
    lines = extrapolation_tables(results)
    if not fits:
        return lines + errors, fits
    return [
        *lines,
        *fit_lines(results, fits, out),
        *errors,
        "",
        "log E = log a + alpha log N + beta log L, E the extrapolation length (eps 0.1); censored runs enter as "
        "lower bounds (Tobit likelihood); 95% bootstrap intervals over configurations, seeds kept together.",
        "",
        *[f"![scaling law, {s}](scaling_law_{s}.png)" for s in fits],
    ], fits
