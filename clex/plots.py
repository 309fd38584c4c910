"""One figure style for runs and papers: Okabe-Ito colours (colour-blind safe), one colour per
strategy everywhere, labelled axes, no interactive window."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clex import io  # noqa: E402

# Okabe-Ito without its yellow (#F0E442), which vanishes on white; a grey for the eighth
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999"]
STRATEGY_COLOURS = {  # every shipped strategy: one colour in every figure of a run, a comparison and a report
    "rope": "#000000",
    "pi": "#E69F00",
    "fbs": "#009E73",
    "yarn": "#CC79A7",
    "clex": "#0072B2",
    "abf": "#D55E00",
    "llama3": "#56B4E9",
    "longrope": "#999999",
}
STYLE = {
    "font.size": 10,
    "axes.labelsize": 10,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 150,
    "savefig.bbox": "tight",
}


def colour(label: str, index: int = 0) -> str:
    """A label's strategy colour (its first word); another label's by its index in the palette."""
    return STRATEGY_COLOURS.get(label.split()[0], OKABE_ITO[index % len(OKABE_ITO)]) if label else OKABE_ITO[0]


def plain_ticks(axis):
    """Log-axis tick labels as plain numbers (1024, 0.5), not powers (2^10, 10^-1), and no crowded minor ones."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def save(fig, path, formats=("png",)):
    """Each format written atomically beside the others: path.png, path.pdf."""
    path = Path(path)
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        io.atomic_write(target, lambda handle, fmt=fmt: fig.savefig(handle, format=fmt))
    plt.close(fig)


def draw_curves(ax, curves: dict):
    """curves: label -> {length: Interval}; the mean as a line, the 95% interval as a band where n > 1.
    Variants of one strategy share its colour and differ in line style and marker."""
    seen, means = {}, []
    for index, (label, curve) in enumerate(curves.items()):
        lengths = sorted(curve)
        k = seen[label.split()[0]] = seen.get(label.split()[0], -1) + 1
        colour_ = colour(label, index)
        means += [curve[n].mean for n in lengths]
        ax.plot(
            lengths,
            [curve[n].mean for n in lengths],
            marker="osD^v"[k % 5],
            ms=3.5,
            lw=1.5,
            label=label,
            color=colour_,
            ls=["-", "--", ":", "-."][k % 4],
        )
        banded = [n for n in lengths if curve[n].half_width is not None]
        if banded:
            ax.fill_between(
                banded, [curve[n].low for n in banded], [curve[n].high for n in banded], color=colour_, alpha=0.18, lw=0
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    finite = [m for m in means if m == m and abs(m) != float("inf")]
    if finite:  # bands clipped to the data's range: a wide interval of one cell does not flatten every curve
        low, high = min(finite), max(finite)
        ax.set_ylim(low - 0.15 * (high - low or low), high + 0.15 * (high - low or low))


def plot_ppl_intervals(curves: dict, train_lengths: list[int], path, formats=("png",)):
    """curves: label -> {length: Interval} (mean over seeds, 95% band where n > 1)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        draw_curves(ax, curves)
        lengths = sorted({n for curve in curves.values() for n in curve})
        for train_length in train_lengths:
            ax.axvline(train_length, color="0.6", ls=":", lw=1)
        if lengths:
            ax.set_xticks(lengths, [str(n) for n in lengths])
        bands = any(i.half_width is not None for curve in curves.values() for i in curve.values())
        ax.set_title(
            f"training length {', '.join(map(str, train_lengths))} (dotted)"
            + ("; bands: 95% CI over seeds" if bands else "")
        )
        ax.legend(frameon=False)
        save(fig, path, formats)


def accuracy_map(grid, columns: list, rows: list, xlabel: str, ylabel: str, title: str, path):
    """A heat map of accuracies in [0, 1] (rows x columns; NaN: a cell not run, drawn grey), each cell
    annotated with its value."""
    import numpy as np

    grid = np.asarray(grid, dtype=float)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(1.6 + 0.7 * len(columns), 0.9 + 0.45 * len(rows)), constrained_layout=True)
        ax.set_facecolor("0.85")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            ax.text(
                j,
                i,
                "-" if np.isnan(value) else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if np.isnan(value) or value > 0.6 else "white",
            )
        ax.set_xticks(range(len(columns)), [str(c) for c in columns], rotation=45, ha="right")
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.colorbar(image, ax=ax).set_label("accuracy")
        save(fig, path)


def plot_position_nll(curves: dict, original_length: int, path, formats=("png",)):
    """curves: label -> {bin end: Interval of the mean NLL in that bin}; L0 multiples on the x axis."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        draw_curves(ax, curves)
        ends = sorted({n for curve in curves.values() for n in curve})
        ax.set_xticks(ends, [f"{n // original_length}" for n in ends])
        ax.set_xlabel(f"position bin end (x L0 = {original_length}; bins [0, L0), [L0, 2 L0), [2 L0, 4 L0), ...)")
        ax.set_ylabel("mean NLL in the bin")
        ax.set_title("loss by position at the longest length; bands: 95% CI over seeds")
        ax.legend(frameon=False)
        save(fig, path, formats)


def plot_fit(runs, fit, strategy, out):
    """A fitted scaling law E = a N^alpha L^beta over its runs: one colour per training length, lower bounds open."""
    import numpy as np

    lengths = sorted({r["train_length"] for r in runs})
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for index, length in enumerate(lengths):
            group = [r for r in runs if r["train_length"] == length]
            colour = plt.cm.viridis(0.85 * index / max(1, len(lengths) - 1))  # lengths, not strategies: a ramp
            measured = [r for r in group if not r["censored"]]
            bounds = [r for r in group if r["censored"]]
            ax.scatter(
                [r["parameters"] for r in measured],
                [r["extrapolation_length"] for r in measured],
                color=colour,
                s=16,
                label=f"L = {length}",
                marker="o",
            )
            ax.scatter(
                [r["parameters"] for r in bounds],
                [r["extrapolation_length"] for r in bounds],
                s=22,
                marker="^",
                facecolors="none",
                edgecolors=colour,
            )  # lower bounds
            sizes = np.geomspace(min(r["parameters"] for r in runs), max(r["parameters"] for r in runs), 50)
            log_a, alpha, beta = fit["coef"]
            ax.plot(sizes, np.exp(log_a) * sizes**alpha * length**beta, color=colour, lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        from matplotlib.ticker import FuncFormatter

        plain_ticks(ax.xaxis)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value / 1e6:g}"))
        plain_ticks(ax.yaxis)
        ax.set_xlabel("model size (millions of parameters)")
        ax.set_ylabel("extrapolation length (tokens)")
        ax.set_title(
            f"{strategy} (open triangles: lower bounds): "
            f"$E \\propto N^{{{fit['coef'][1]:.2f}}} L^{{{fit['coef'][2]:.2f}}}$"
        )
        ax.legend(frameon=False)
        save(fig, out / f"scaling_law_{strategy}", formats=("png", "pdf"))
