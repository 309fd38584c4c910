"""One figure style for runs and papers: Okabe-Ito colours (colour-blind safe), one colour per
strategy everywhere, labelled axes, no interactive window."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clex import io  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
STRATEGY_COLOURS = {"rope": "#000000", "pi": "#E69F00", "fbs": "#009E73", "yarn": "#CC79A7", "clex": "#0072B2"}
STYLE = {"font.size": 10, "axes.labelsize": 10, "axes.titlesize": 10, "legend.fontsize": 8,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
         "figure.dpi": 150, "savefig.bbox": "tight"}


def colour(label: str, index: int = 0) -> str:
    return STRATEGY_COLOURS.get(label.split()[0], OKABE_ITO[index % len(OKABE_ITO)])


def save(fig, path, formats=("png",)):
    """Each format written atomically beside the others: path.png, path.pdf."""
    path = Path(path)
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        io.atomic_write(target, lambda handle, fmt=fmt: fig.savefig(handle, format=fmt))
    plt.close(fig)


def plot_ppl_vs_length(results: list[dict], path, formats=("png",), label_key=None):
    """PPL against evaluation length (log2 x-axis), one line per run, the training length marked."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        lengths = set()
        for index, run in enumerate(results):
            rows = [r for r in run["eval"] if r["ppl"] is not None]
            label = label_key(run) if label_key else run["strategy"]
            ax.plot([r["length"] for r in rows], [r["ppl"] for r in rows], marker="o", ms=3.5, lw=1.5,
                    label=label, color=colour(label, index))
            lengths |= {r["length"] for r in rows}
        train_lengths = {run["train_length"] for run in results}
        for train_length in train_lengths:
            ax.axvline(train_length, color="0.6", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        if lengths:
            ax.set_xticks(sorted(lengths), [str(n) for n in sorted(lengths)])
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"training length {', '.join(str(n) for n in sorted(train_lengths))} (dotted)")
        ax.legend(frameon=False)
        save(fig, path, formats)
