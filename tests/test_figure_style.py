"""One figure style everywhere: a strategy has one colour in a run's figure, compare's and figures.py's (its
variants share it and differ in line style), Optuna's plots are restyled white with the palette, a single
training length draws no heat map, and the palette has no colour that vanishes on white."""

import matplotlib.colors as mcolors
import optuna
import pytest

import clex.plots as plots
from clex.analysis.stats import mean_ci
from clex.commands import figures


@pytest.fixture
def saved(monkeypatch):
    figs = {}

    def keep(fig, path, formats=("png",)):
        figs[str(path).rsplit("/", 1)[-1]] = fig

    monkeypatch.setattr(plots, "save", keep)
    return figs


def line_colours(fig) -> dict:
    return {line.get_label(): mcolors.to_hex(line.get_color()).upper() for ax in fig.axes for line in ax.get_lines()}


def curve(base):
    return {n: mean_ci([base + n / 100, base + n / 90, base + n / 80]) for n in (128, 256, 512)}


def test_a_strategy_has_one_colour_in_every_figure(saved, tmp_path):
    curves = {"rope": curve(30), "clex": curve(20), "clex lr=0.001": curve(21), "yarn": curve(25)}
    plots.plot_ppl_intervals(curves, [128], tmp_path / "compare")  # a run's figure and compare's
    figures.ppl_figure({(label, 128): c for label, c in curves.items()}, tmp_path)  # figures.py's
    for fig in saved.values():
        colours = line_colours(fig)
        assert colours["clex"] == colours["clex lr=0.001"] == plots.STRATEGY_COLOURS["clex"]
        assert colours["rope"] == plots.STRATEGY_COLOURS["rope"] and colours["yarn"] == plots.STRATEGY_COLOURS["yarn"]
        lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
        assert lines["clex"].get_linestyle() != lines["clex lr=0.001"].get_linestyle()
        low, high = fig.axes[0].get_ylim()  # clipped to the data, not to the widest band
        assert low > 0 and high < 60


def test_the_palette_has_no_colour_that_vanishes_on_white():
    for shade in [*plots.OKABE_ITO, *plots.STRATEGY_COLOURS.values()]:
        red, green, blue = mcolors.to_rgb(shade)
        assert 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.75, shade  # yellow (#F0E442) is 0.86


def test_one_training_length_draws_no_heat_map(saved, tmp_path):
    assert figures.heat_maps({("rope", 128): curve(30), ("clex", 128): curve(20)}, tmp_path) is False
    assert "ppl_heatmap" not in saved


def test_optuna_plots_are_restyled(saved, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: (t.suggest_float("amplification", 1, 4, log=True) - 2) ** 2, n_trials=6)
    figures.study_figures("s", storage, tmp_path)
    history = saved["study_s_history"]
    for ax in history.axes:
        assert mcolors.to_hex(ax.get_facecolor()) == "#ffffff" and not ax.xaxis.get_gridlines()[0].get_visible()
    assert all(c in plots.OKABE_ITO for c in line_colours(history).values())
    [slice_ax] = saved["study_s_slice"].axes[:1]
    labels = [t.get_text() for t in slice_ax.get_xticklabels() if t.get_text()]
    assert labels and not any("^" in label or "times" in label for label in labels), labels
