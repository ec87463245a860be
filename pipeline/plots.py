"""Figures of a layer sweep: what a reader needs to see which layer a direction lives at.

Accuracy/AUROC (bounded in [0.5, 1]) and d' (unbounded) never share an axis: each figure
has one panel for AUROC, one for accuracy and one for d', each with its y label, the
train/val/test splits as separate lines (validation chose, test reports), the selected
layer marked, and the position in the title. matplotlib's Agg backend: no display needed.

>>> curve_figure({"layer": [0, 1, 2], "val_auroc": [0.5, 0.9, 0.8]}, "sentiment", 1, out)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# lazy: matplotlib, numpy (heavy; imported where used)

__all__ = ["PANELS", "curve_figure", "sweep_figure", "sweep_plot"]

PANELS = (("auroc", "AUROC", (0.4, 1.02)), ("accuracy", "accuracy", (0.4, 1.02)), ("dprime", "d′ (separation / spread)", None))
_SPLIT_STYLE: dict[str, dict[str, Any]] = {"train": {"ls": ":", "alpha": 0.7, "color": "C0"},
                                        "val": {"ls": "-", "lw": 2.0, "color": "C1"}, "test": {"ls": "--", "color": "C2"}}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite(ys: Sequence[float]) -> list[float]:
    return [y if y is not None and math.isfinite(y) else math.nan for y in ys]


def curve_figure(curve: Mapping[str, Sequence[float]], title: str, selected_layer: int | None,
                 path: Path) -> Path:
    """One method's sweep (``layer`` plus ``{split}_{metric}`` series): three panels."""
    plt = _plt()
    x = [float(v) for v in curve.get("layer", range(len(next(iter(curve.values()), []))))]
    panels = [p for p in PANELS if any(k.endswith(f"_{p[0]}") for k in curve)]
    others = [k for k in curve if k != "layer" and not any(k.endswith(f"_{p[0]}") for p in PANELS)]
    n = max(len(panels) + (1 if others else 0), 1)
    fig, axes = plt.subplots(n, 1, figsize=(6.4, 2.3 * n + 0.6), sharex=True, squeeze=False)
    try:
        for ax, (metric, ylabel, ylim) in zip(axes[:, 0], panels):
            for split in ("train", "val", "test"):
                ys = curve.get(f"{split}_{metric}")
                if ys is not None:
                    ax.plot(x, _finite(ys), marker="o", ms=3, label=split, **_SPLIT_STYLE[split])
            ax.set_ylabel(ylabel)
            if ylim:
                ax.set_ylim(*ylim)
                ax.axhline(0.5, color="grey", lw=0.8, ls=(0, (1, 3)))
            _mark(ax, selected_layer)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right", frameon=False)
        if others:
            ax = axes[len(panels), 0]
            for k in others:
                ax.plot(x, _finite(curve[k]), marker="o", ms=3, label=k)
            ax.set_ylabel("value")
            _mark(ax, selected_layer)
            ax.legend(fontsize=7, frameon=False)
        axes[-1, 0].set_xlabel("layer (0 = embedding output)")
        _integer_ticks(axes[-1, 0])
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path


def sweep_figure(sweep: Mapping[str, Mapping[str, Any]], position: str, title: str, path: Path,
                 split: str = "val") -> Path:
    """:func:`sweep_plot` written to ``path``."""
    plt = _plt()
    fig = sweep_plot(sweep, position, title, split)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150)
    finally:
        plt.close(fig)
    return path


def sweep_plot(sweep: Mapping[str, Mapping[str, Any]], position: str, title: str, split: str = "val") -> Any:
    """Every method at one position (a sweep file's ``method/position`` entries): AUROC and
    d' panels, one line per method, each method's selected layer marked on its line; a method
    whose curve equals an earlier one's (LEACE's written vector is mean_diff's) is drawn
    dashed with hollow marks and its legend entry says so."""
    plt = _plt()
    entries = {k.split("/", 1)[0]: v for k, v in sweep.items() if k.split("/", 1)[1] == position}
    fig, axes = plt.subplots(2, 1, figsize=(7.0, 5.6), sharex=True)
    try:
        for ax, (metric, ylabel, ylim) in zip(axes, (PANELS[0], PANELS[2])):
            drawn: dict[str, list[float]] = {}
            for i, (method, e) in enumerate(sorted(entries.items())):
                c = e["curve"]
                ys = _finite(c.get(f"{split}_{metric}", []))
                if not ys:
                    continue
                color = f"C{i}"
                # LEACE's written vector is mean_diff's: their curves coincide, and the later
                # line would hide the earlier one; say so and draw it dashed with hollow marks
                same = next((m for m, prev in drawn.items() if _same(prev, ys)), None)
                drawn[method] = ys
                style = {"ls": (0, (4, 3)), "mfc": "none", "ms": 5} if same else {"ms": 2.5}
                ax.plot(c["layer"], ys, marker="o", color=color, label=f"{method} (= {same}: lines coincide)"
                        if same else method, **style)
                if e.get("best_layer") in c["layer"]:
                    j = c["layer"].index(e["best_layer"])
                    ax.plot([e["best_layer"]], [ys[j]], marker="*", ms=13, color=color, mec="black", mew=0.6,
                            zorder=5, ls="none")
            ax.set_ylabel(f"{split} {ylabel}")
            if ylim:
                ax.set_ylim(*ylim)
                ax.axhline(0.5, color="grey", lw=0.8, ls=(0, (1, 3)))
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, ncol=6, frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0),
                       title="★ = selected layer", title_fontsize=8, alignment="left")
        axes[1].set_xlabel("layer (0 = embedding output)")
        _integer_ticks(axes[1])
        fig.suptitle(f"{title} — position: {position}", fontsize=11)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two curves equal at every layer (NaN matching NaN), to plotting precision."""
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(1.0, abs(x))
                                    for x, y in zip(a, b))


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _mark(ax: Any, layer: int | None) -> None:
    if layer is not None:
        ax.axvline(layer, color="black", lw=1.0, ls="-.", alpha=0.8)
        ax.annotate(f"selected: layer {layer}", xy=(layer, 1.0), xycoords=("data", "axes fraction"),
                    xytext=(3, -10), textcoords="offset points", fontsize=7)
