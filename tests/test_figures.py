"""The fleet and sweep pictures read correctly (issue 28): emergence ticks at the steps with a
y label, integer layer ticks, heatmap titles inside the figure with readable cell numbers,
and coinciding method curves (LEACE = mean_diff) said so in the legend."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.fleet_compare.figures import curves_figure, heatmap_figure
from pipeline.plots import sweep_plot


@pytest.fixture
def plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_emergence_axis_is_ticked_at_the_steps(plt: Any) -> None:
    steps = [0, 10, 30, 100, 300]
    fig = curves_figure({"test accuracy": (steps, [0.5, 0.6, 0.7, 0.8, 0.9])}, "emergence", logx=True,
                        xlabel="training step (log scale)", ylabel="test accuracy / AUROC (best layer)")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "10", "30", "100", "300"]
    assert ax.get_ylabel() == "test accuracy / AUROC (best layer)"


def test_layer_axis_has_integer_ticks(plt: Any) -> None:
    fig = curves_figure({"min cosine": ([1, 2], [0.8, 0.9])}, "by layer", xlabel="layer", integer_x=True)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    locs = [x for x in ax.get_xticks() if lo <= x <= hi]
    assert locs and all(float(x).is_integer() for x in locs), locs   # was 1.2, 1.4, ...


def test_heatmap_title_fits_and_cells_are_readable(plt: Any) -> None:
    vs = ["t-base", "t-copy", "t-edit"]
    long = "transfer accuracy, layer 2 (row: fitted on, column: scored), a title longer than the figure"
    fig = heatmap_figure(np.full((3, 3), 0.75), vs, vs, long, vmin=0.5, vmax=1.0, xlabel="scored",
                         ylabel="fitted on")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    box, page = ax.title.get_window_extent(renderer), fig.bbox
    assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, (box, page)     # not cut off at the edge
    assert ax.title.get_text().replace("\n", " ") == long
    cells = [t for t in ax.texts if t.get_text() == "0.75"]
    assert len(cells) == 9 and min(t.get_fontsize() for t in cells) >= 8


def test_coinciding_method_curves_are_named_in_the_legend(plt: Any) -> None:
    layers = [0, 1, 2, 3]
    same = {"layer": layers, "val_auroc": [0.5, 0.7, 0.9, 0.8], "val_dprime": [0.0, 1.0, 2.0, 1.5]}
    other = {"layer": layers, "val_auroc": [0.5, 0.6, 0.8, 0.85], "val_dprime": [0.0, 0.5, 1.5, 1.8]}
    sweep = {"mean_diff/last": {"curve": same, "best_layer": 2}, "leace/last": {"curve": dict(same), "best_layer": 2},
             "logistic/last": {"curve": other, "best_layer": 3}}
    fig = sweep_plot(sweep, "last", "sentiment")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "mean_diff (= leace: lines coincide)" in labels and "logistic" in labels and "leace" in labels
    dashed = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("mean_diff")]
    assert dashed and dashed[0].get_linestyle() != "-"        # drawn so the line beneath shows
