"""Pictures of a comparison (matplotlib, Agg backend: no display) and one static HTML page.

Each function writes one PNG and returns its path; :func:`html_report` gathers the PNGs
(inlined as base64, so the page is one self-contained file) with the tables beside them.
"""

from __future__ import annotations

import base64
import html
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_text

# lazy: matplotlib (heavy; imported where used); matplotlib.ticker (optional dependency)

__all__ = ["curves", "curves_figure", "heatmap", "heatmap_figure", "html_report"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, path: Path,
            vmin: float | None = None, vmax: float | None = None, xlabel: str = "", ylabel: str = "",
            annotate: bool | None = None) -> Path:
    """A labelled heatmap (:func:`heatmap_figure`) written to ``path``."""
    return _save(heatmap_figure(matrix, rows, cols, title, vmin, vmax, xlabel, ylabel, annotate), path)


def heatmap_figure(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
                   vmin: float | None = None, vmax: float | None = None, xlabel: str = "", ylabel: str = "",
                   annotate: bool | None = None) -> Any:
    """A labelled heatmap; cells annotated with their value (two decimals, readable size) when
    the matrix is small; the title wrapped to the figure's width."""
    plt = _plt()
    m = np.asarray(matrix, dtype=np.float64)
    annotate = m.size <= 144 if annotate is None else annotate
    width = max(5.0, (0.75 if annotate else 0.5) * len(cols) + 3.0)
    fig, ax = plt.subplots(figsize=(width, max(4.0, (0.55 if annotate else 0.4) * len(rows) + 2.2)))
    try:
        im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax)
        step_c, step_r = max(1, len(cols) // 24), max(1, len(rows) // 24)
        ax.set_xticks(range(0, len(cols), step_c), [str(c) for c in cols][::step_c], rotation=60, ha="right",
                      fontsize=8)
        ax.set_yticks(range(0, len(rows), step_r), [str(r) for r in rows][::step_r], fontsize=8)
        if annotate:
            lo, hi = im.get_clim()
            cell_font = max(8, min(12, int(90 / max(len(cols), len(rows), 1))))
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if np.isfinite(m[i, j]):   # dark text on the light (high) end of viridis
                        light = (m[i, j] - lo) / ((hi - lo) or 1.0) > 0.6
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=cell_font,
                                color="k" if light else "w")
        # wrapped to the figure's width: a long title used to run past the edge ("column: sco")
        ax.set_title(textwrap.fill(title, max(30, int(width * 10))), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, path: Path,
           xlabel: str = "step", ylabel: str = "", logx: bool = False, scatter: bool = False,
           band: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
           integer_x: bool = False) -> Path:
    """Lines or points (:func:`curves_figure`) written to ``path``."""
    return _save(curves_figure(series, title, xlabel, ylabel, logx, scatter, band, integer_x), path)


def curves_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str,
                  xlabel: str = "step", ylabel: str = "", logx: bool = False, scatter: bool = False,
                  band: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                  integer_x: bool = False) -> Any:
    """Lines (or points, ``scatter``) of ``{name: (x, y)}``; ``band`` shades ``{name: (lo, hi)}``
    around a line (the spread across seeds). ``logx`` is a symmetric log axis (step 0 stays
    on it) ticked at the steps themselves, in plain numbers; ``integer_x`` ticks integers only
    (layers)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    try:
        for name, (x, y) in series.items():
            if scatter:
                ax.scatter(x, y, label=name, s=18)
            else:
                (line,) = ax.plot(x, y, marker="o", ms=3, label=name)
                if band and name in band:
                    ax.fill_between(x, band[name][0], band[name][1], color=line.get_color(), alpha=0.2, lw=0)
        if logx:
            xs = sorted({float(v) for x, _y in series.values() for v in x})
            ax.set_xscale("symlog", linthresh=1.0)
            if xs and len(xs) <= 12:
                ax.set_xticks(xs, [f"{v:g}" for v in xs])
                ax.minorticks_off()
        if integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _save(fig: Any, path: Path) -> Path:
    plt = _plt()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _table(rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else html.escape(str(x))

    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{body}</table>"


def html_report(title: str, sections: Sequence[tuple[str, Sequence[Path], Sequence[Sequence[Any]]]],
                path: Path) -> Path:
    """One self-contained page: per section a heading, its PNGs (inlined) and a table."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td{padding:2px 6px;"
              "border:1px solid #ccc;font-size:12px}img{max-width:100%}</style>"),
             f"<h1>{html.escape(title)}</h1>"]
    for heading, pngs, rows in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for p in pngs:
            data = base64.b64encode(Path(p).read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(Path(p).name)}' src='data:image/png;base64,{data}'></p>")
        if rows:
            parts.append(_table(rows))

    return write_text(path, "\n".join(parts))
