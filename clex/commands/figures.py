"""Paper figures from a collected table (and optionally a study): PPL against length per strategy, the
paper's Table 1 as Markdown and LaTeX, a heat map of PPL over training x evaluation length, and from a
study its parameter importances, slices and optimisation history. PNG and PDF, nothing shown.

    python analysis/figures.py TABLE [--study NAME --storage URL] [--out DIR]
"""

import argparse
import sys
from pathlib import Path

from clex.commands.cli import fail
from clex.errors import ConfigError

REQUIRED = ("run", "strategy", "variant", "variant_id", "seed", "train_length", "length", "ppl")


def interval_table(rows):
    """{(variant, train_length): {length: Interval over the seeds of that variant}}."""
    from clex.analysis.tables import aggregate

    table = {}
    for s in aggregate(rows):
        table.setdefault((s["variant"], s["train_length"]), {})[s["length"]] = s["interval"]
    return {k: dict(sorted(v.items())) for k, v in table.items()}


def panel_labels(labels: list[str], width: int = 60) -> dict:
    """Each variant label without the key=value words every label of its panel shares, wrapped for a legend."""
    import textwrap

    words = [label.split() for label in labels]
    shared = set.intersection(*(set(w[1:]) for w in words)) if words else set()
    pairs = zip(labels, words, strict=True)
    short = {label: " ".join([w[0], *(x for x in w[1:] if x not in shared)]) for label, w in pairs}
    return {label: textwrap.fill(text, width, subsequent_indent="  ") for label, text in short.items()}


def ppl_figure(table, out):
    """PPL against length, one panel per training length, one legend below them all (labels shortened to what
    differs within a panel)."""
    import matplotlib.pyplot as plt

    from clex.plots import STYLE, draw_curves, save

    train_lengths = sorted({k[1] for k in table})
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, len(train_lengths), figsize=(4.2 * len(train_lengths), 3.4), squeeze=False, constrained_layout=True
        )
        legend = {}
        for ax, train_length in zip(axes[0], train_lengths, strict=False):
            curves = {variant: curve for (variant, length), curve in sorted(table.items()) if length == train_length}
            names = panel_labels(list(curves))
            draw_curves(ax, {names[v]: c for v, c in curves.items()})
            ax.axvline(train_length, color="0.6", ls=":", lw=1)
            lengths = sorted({n for c in curves.values() for n in c})
            ax.set_xticks(lengths, [str(n) for n in lengths])
            ax.set_title(f"training length L = {train_length} (dotted)")
            legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=False))
        fig.legend(  # below the panels (saved with a tight box): no panel's legend covers another's curves
            legend.values(), legend.keys(), loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, frameon=False
        )
        fig.suptitle("perplexity against evaluation length; bands: 95% CI over seeds", fontsize=9)
        save(fig, out / "ppl_vs_length", formats=("png", "pdf"))


def table_one(table, out, protocols):
    from clex import io
    from clex.analysis.stats import INTERVAL_NOTE
    from clex.eval.protocol import protocols_line

    lengths = sorted({n for curve in table.values() for n in curve})
    md = ["| run | L | n | " + " | ".join(map(str, lengths)) + " |", "|---" * (len(lengths) + 3) + "|"]
    tex = [
        r"\begin{tabular}{llr" + "r" * len(lengths) + "}",
        r"\toprule",
        "Run & $L$ & $n$ & " + " & ".join(map(str, lengths)) + r" \\",
        r"\midrule",
    ]
    for (variant, train_length), curve in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        n = max(i.n for i in curve.values())
        cells = [curve[k].format().replace(" (1 seed, no interval)", "") if k in curve else "-" for k in lengths]
        md.append(f"| {variant} | {train_length} | {n} | " + " | ".join(cells) + " |")
        tex.append(
            f"{variant.replace('_', chr(92) + '_')} & {train_length} & {n} & "
            + " & ".join(c.replace("±", r"$\pm$") for c in cells)
            + r" \\"
        )
    md += ["", f"PPL by evaluation length (tokens). {protocols_line(protocols)} Cells: {INTERVAL_NOTE}."]
    tex += [r"\bottomrule", r"\end{tabular}"]
    io.write_text(out / "table1.md", "\n".join(md) + "\n")
    io.write_text(out / "table1.tex", "\n".join(tex) + "\n")


def heat_maps(table, out):
    import matplotlib.pyplot as plt
    import numpy as np

    from clex.plots import STYLE, save

    strategies = sorted({k[0] for k in table})
    train_lengths = sorted({k[1] for k in table})
    lengths = sorted({n for curve in table.values() for n in curve})
    if not any(len({L for v, L in table if v == s}) > 1 for s in strategies):
        return False  # one training length per variant: one row each says what ppl_vs_length's lines say, worse
    columns = min(4, len(strategies))  # panels wrap into rows: 28 variants in one row could not be read
    rows = -(-len(strategies) // columns)
    titles = panel_labels(strategies, width=45)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            rows,
            columns,
            figsize=(3.0 * columns + 0.8, rows * (0.5 * len(train_lengths) + 1.9)),
            squeeze=False,
            constrained_layout=True,
        )
        grids = {
            s: np.array(
                [[getattr(table.get((s, L), {}).get(n), "mean", np.nan) for n in lengths] for L in train_lengths]
            )
            for s in strategies
        }
        finite = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
        vmin, vmax = (finite.min(), finite.max()) if finite.size else (1, 2)
        for ax in axes.ravel()[len(strategies) :]:
            ax.axis("off")
        for ax, strategy in zip(axes.ravel(), strategies, strict=False):
            image = ax.imshow(
                np.log(grids[strategy]), cmap="viridis", vmin=np.log(vmin), vmax=np.log(vmax), aspect="auto"
            )
            ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], rotation=45, ha="right")
            ax.set_yticks(range(len(train_lengths)), [str(n) for n in train_lengths])
            ax.set_xlabel("evaluation length (tokens)")
            ax.set_ylabel("training length L (tokens)")
            ax.set_title(titles[strategy], fontsize=7)
            for (i, j), value in np.ndenumerate(grids[strategy]):
                if np.isfinite(value):
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="white")
        bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
        bar.set_label("log perplexity")
        save(fig, out / "ppl_heatmap", formats=("png", "pdf"))
    return True


def restyle(axes):
    """Optuna's matplotlib plots in the project's style: white, no grid, the palette's colours, plain log ticks."""
    import numpy as np

    from clex.plots import OKABE_ITO, plain_ticks

    for ax in np.atleast_1d(axes).ravel():
        ax.set_facecolor("white")
        ax.grid(False)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
        for line, shade in zip(ax.get_lines(), OKABE_ITO, strict=False):
            line.set_color(shade)
        plain = [c for c in ax.collections if c.get_array() is None]  # not colour-mapped (by trial number)
        for points, shade in zip(plain, OKABE_ITO[1:], strict=False):
            points.set_color(shade)
        for bars in ax.containers:
            for bar in bars:
                bar.set_color(OKABE_ITO[0])
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            label.set_color("black")
        ax.tick_params(colors="black")
        if ax.get_legend() is not None:  # drawn again, so its keys take the new colours; one key says nothing
            if len(ax.get_legend_handles_labels()[0]) > 1:
                ax.legend(frameon=False, loc="upper right")
            else:
                ax.get_legend().remove()
        if ax.get_xscale() == "log":  # a few ticks over the searched range, as plain numbers
            low, high = ax.get_xlim()
            plain_ticks(ax.xaxis)
            ax.set_xticks([float(f"{t:.2g}") for t in np.geomspace(low * 1.05, high / 1.05, 4)])


def study_figures(name, storage, out):
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ov

    from clex.analysis.tables import load_study
    from clex.plots import STYLE, save

    study = load_study(name, storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        raise ConfigError(f"--study {name!r}: needs >= 2 complete trials for its figures, has {len(complete)}")
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    with plt.rc_context(STYLE):
        for figure, plot in (
            ("history", ov.plot_optimization_history),
            ("slice", ov.plot_slice),
            ("importances", ov.plot_param_importances),
        ):
            if figure == "importances" and len(study.best_trials[0].params) < 2:
                continue  # importances need two parameters or more
            metric = study.user_attrs.get("objectives", ["objective"])[0]
            kwargs = {"target": target} if target else {}
            if figure != "importances":
                kwargs["target_name"] = metric
            ax = plot(study, **kwargs)
            restyle(ax)
            fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
            fig.set_size_inches(max(4.5, 3.2 * len(study.best_trials[0].params)), 3.4)
            save(fig, out / f"study_{name}_{figure}", formats=("png", "pdf"))


def main(argv=None) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=Warning, module="optuna")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", type=Path)
    parser.add_argument("--study")
    parser.add_argument("--storage")
    parser.add_argument("--out", type=Path, default=Path("analysis/out"))
    args = parser.parse_args(argv)
    from clex.analysis.tables import read_table

    try:
        rows = read_table(args.table, REQUIRED)
        table = interval_table(rows)
        if args.study and not args.storage:
            raise ConfigError("--study needs --storage")
        args.out.mkdir(parents=True, exist_ok=True)
        if args.study:
            study_figures(args.study, args.storage, args.out)
    except ConfigError as error:
        return fail(error)
    ppl_figure(table, args.out)
    table_one(table, args.out, [row.get("protocol", "full") for row in rows])
    heat = heat_maps(table, args.out)
    print(
        f"wrote {args.out}: ppl_vs_length, {'ppl_heatmap, ' if heat else ''}(.png, .pdf), table1.md, table1.tex"
        + ("" if heat else " (no heat map: no variant has two training lengths; ppl_vs_length shows each as lines)")
        + (f", study_{args.study}_* figures" if args.study else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
