"""Fit the extrapolation length as a power law of model size and training length, E = a N^alpha L^beta,
with bootstrap confidence intervals over runs; draw the data and fit, and the per-strategy view.

    python analysis/scaling_law.py TABLE [--strategy clex] [--bootstrap 1000] [--out DIR]
"""

import argparse
import sys
from pathlib import Path

from clex.commands.cli import fail
from clex.errors import ConfigError

REQUIRED = ("run", "strategy", "variant_id", "seed", "parameters", "train_length", "extrapolation_length", "censored")


def plot_per_strategy(runs, out: Path):
    import matplotlib.pyplot as plt

    from clex.analysis.stats import mean_ci
    from clex.plots import STYLE, colour, plain_ticks, save

    sizes = sorted({r["parameters"] for r in runs})
    strategies = sorted({r["strategy"] for r in runs})
    lengths = sorted({r["train_length"] for r in runs})
    with plt.rc_context(STYLE):  # one panel per model size: sizes are never pooled into one interval
        fig, axes = plt.subplots(1, len(sizes), figsize=(3.6 * len(sizes) + 0.9, 3.2), squeeze=False, sharey=True)
        for ax, size in zip(axes[0], sizes, strict=False):
            for index, strategy in enumerate(strategies):
                by_length = {}
                for r in runs:
                    if r["strategy"] == strategy and r["parameters"] == size:
                        by_length.setdefault(r["train_length"], []).append(r["extrapolation_length"])
                shown = sorted(by_length)
                intervals = [mean_ci(by_length[n]) for n in shown]
                dodge = 2 ** (0.04 * (index - (len(strategies) - 1) / 2))  # strategies side by side, not on top
                ax.errorbar(
                    [n * dodge for n in shown],
                    [i.mean for i in intervals],
                    yerr=[i.half_width or 0 for i in intervals],
                    marker="o",
                    ms=3.5,
                    capsize=2,
                    label=strategy,
                    color=colour(strategy, index),
                )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_xticks(lengths, [str(n) for n in lengths])
            plain_ticks(ax.yaxis)
            ax.set_xlabel("training length L (tokens)")
            ax.set_title(f"{size / 1e6:.3g}M parameters")
        axes[0][0].set_ylabel("extrapolation length (tokens)")
        axes[0][-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1))
        fig.suptitle("mean ± 95% CI over seeds, per model size (censored runs at their lower bound)", fontsize=9)
        save(fig, out / "extrapolation_vs_train_length", formats=("png", "pdf"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--strategy", default="clex", help="the strategy whose runs are fitted")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("analysis/out"))
    args = parser.parse_args(argv)
    from clex.analysis.tables import finite, fit_power_law, per_run, read_table

    try:
        runs = [r for r in per_run(read_table(args.table, REQUIRED)) if finite([r["extrapolation_length"]])]
        chosen = [r for r in runs if r["strategy"] == args.strategy]
        if not chosen:
            raise ConfigError(
                f"--strategy {args.strategy!r}: no runs; the table has "
                f"{', '.join(sorted({r['strategy'] for r in runs}))}"
            )
        fit = fit_power_law(
            [r["parameters"] for r in chosen],
            [r["train_length"] for r in chosen],
            [r["extrapolation_length"] for r in chosen],
            censored=[bool(r["censored"]) for r in chosen],
            groups=[r["variant_id"] for r in chosen],
            bootstrap=args.bootstrap,
        )
    except ConfigError as error:
        return fail(error)
    names = ("log a", "alpha (model size)", "beta (training length)")
    print(
        f"{args.strategy}: log E = log a + alpha log N + beta log L, {fit['samples']} runs of "
        f"{fit['configurations']} configurations, {int(fit['level'] * 100)}% bootstrap intervals "
        f"({fit['bootstrap']} resamples of configurations, seeds kept together"
        + (
            f"; {fit['bootstrap_asked'] - fit['bootstrap']} of the {fit['bootstrap_asked']} asked drew too few model "
            "sizes or training lengths to fit and were dropped"
            if fit.get("bootstrap_asked", fit["bootstrap"]) > fit["bootstrap"]
            else ""
        )
        + ")"
    )
    for name, value, (low, high) in zip(names, fit["coef"], fit["ci"], strict=False):
        print(f"  {name:<24} {value:8.3f}   [{low:.3f}, {high:.3f}]")
    if fit["censored"]:
        print(
            f"  {fit['censored']} run(s) stayed within eps at every evaluated length: their E is a lower bound, "
            "fitted as one (Tobit likelihood), not as a value"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    from clex import io
    from clex.plots import plot_fit

    io.write_json(args.out / f"scaling_law_{args.strategy}.json", {**fit, "strategy": args.strategy})
    plot_fit(chosen, fit, args.strategy, args.out)
    plot_per_strategy(runs, args.out)
    print(f"wrote {args.out}/scaling_law_{args.strategy}.{{json,png,pdf}}, extrapolation_vs_train_length.{{png,pdf}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
