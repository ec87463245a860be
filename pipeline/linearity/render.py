"""The report's faces: a terminal table, PNG plots and one static HTML page.

Plots (matplotlib, Agg backend, no display): probe accuracy by layer (linear, MLP and the
erased linear/MLP curves), dose-response with its fit and fluent range (plus the
interpolation curve), and the composition heatmaps (cosines, cross-talk). The HTML page
embeds every PNG as a data URI, so it is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text

# lazy: matplotlib, numpy (heavy; imported where used)

__all__ = ["plot_composition", "plot_control", "plot_probes", "table", "write_html"]


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def table(doc: Mapping[str, Any]) -> str:
    """Per (model, concept): one row per layer, then the verdict line."""
    lines = []
    for r in doc["results"]:
        lines.append(f"\n{r['concept']} ({r['positive']} vs {r['negative']}) on {r['model']}, position "
                     f"{doc['position']}:")
        lines.append(f"  {'layer':>5} {'class':<14} {'linear':>6} {'mlp':>6} {'erased':>7} {'erased':>7} {'methods':>7}")
        lines.append(f"  {'':>5} {'':<14} {'acc':>6} {'acc':>6} {'lin':>7} {'mlp':>7} {'cos':>7}")
        for e in r["layers"]:
            mark = " *" if e["layer"] == r.get("control_layer") else ""
            lines.append(f"  {e['layer']:>5} {e['class']:<14} {_f(e['probes']['linear']['test_accuracy']):>6} "
                         f"{_f(e['probes']['mlp']['test_accuracy']):>6} {_f(e['erasure']['linear']['test_accuracy']):>7} "
                         f"{_f(e['erasure']['mlp']['test_accuracy']):>7} "
                         f"{_f((e.get('agreement') or {}).get('mean_cosine')):>7}{mark}")
        if r.get("not_measured"):
            lines.append(f"  ({r['not_measured']})")
        elif r.get("control_layer") is not None:
            lines.append(f"  (* control layer: {r['control_method']} direction steered/interpolated there)")
        lines.append(f"  verdict: {r['verdict']['line']}")
    for model, comp in (doc.get("composition") or {}).items():
        if not comp:
            continue
        lines.append(f"\ncomposition on {model} (strength {comp['strength']:g} each; worst additivity error per "
                     "concept, behavioural score / monitor):")
        for c in comp["concepts"]:
            lines.append(f"  {c:<10} {_f(comp['additivity'].get('score', {}).get(c), '.0%'):>5} / "
                         f"{_f(comp['additivity'].get('monitor', {}).get(c), '.0%')}")
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def plot_probes(result: Mapping[str, Any], path: Path, decodable: float) -> Path:
    """Test accuracy by layer: linear, MLP, erased linear, erased MLP."""
    plt = _plt()
    layers = [e["layer"] for e in result["layers"]]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    series = (("linear", lambda e: e["probes"]["linear"], "-", "C0"), ("MLP", lambda e: e["probes"]["mlp"], "-", "C1"),
              ("erased linear", lambda e: e["erasure"]["linear"], "--", "C0"),
              ("erased MLP", lambda e: e["erasure"]["mlp"], "--", "C1"))
    for name, get, style, color in series:
        ax.plot(layers, [get(e)["test_accuracy"] for e in result["layers"]], style, color=color, marker="o", ms=3,
                label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    ax.axhline(decodable, color="grey", lw=0.6, ls="-.", label=f"decodable ({decodable:g})")
    if result.get("control_layer") is not None:
        ax.axvline(result["control_layer"], color="C2", lw=0.8, alpha=0.6)
    ax.set_ylim(0.3, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{result['concept']} on {result['model']}: probes", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_control(result: Mapping[str, Any], path: Path) -> Path | None:
    """Dose-response with its fit and fluent range; interpolation beside it."""
    ctl, itp = result.get("control"), result.get("interpolation")
    if not ctl:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if itp else 1, figsize=(9.6 if itp else 5.6, 3.6), squeeze=False)
    ax = axes[0][0]
    s, y = ctl["strengths"], ctl["scores"]
    lo, hi = ctl["fluent_range"]
    ax.axvspan(lo, hi, color="C2", alpha=0.08, label=f"KL < {ctl['kl_bound']:g}")
    ax.plot(s, y, "o-", color="C0", ms=4, label=ctl["score"])
    fit = ctl["fit"]
    if fit["slope"] is not None and math.isfinite(fit["slope"]):
        xs = [lo, hi]
        ax.plot(xs, [fit["slope"] * x + fit["intercept"] for x in xs], "--", color="C3",
                label=f"fit R²={_f(fit['r2'])}")
    ax2 = ax.twinx()
    ax2.plot(s, ctl["kl"], ":", color="grey", lw=1)
    ax2.set_ylabel("next-token KL", fontsize=8, color="grey")
    ax.set_xlabel(f"strength ({ctl['unit']})")
    ax.set_ylabel(ctl["score"])
    ax.set_title(f"{result['concept']}: dose-response (layer {result['control_layer']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if itp:
        bx = axes[0][1]
        bx.plot(itp["t"], itp["scores"], "o-", color="C0", ms=4)
        f2 = itp["fit"]
        if f2["slope"] is not None and math.isfinite(f2["slope"]):
            bx.plot([0, 1], [f2["intercept"], f2["slope"] + f2["intercept"]], "--", color="C3",
                    label=f"fit R²={_f(f2['r2'])}")
            bx.legend(fontsize=7)
        bx.set_xlabel("t (negative mean -> positive mean)")
        bx.set_ylabel(itp["score"])
        bx.set_title("interpolation", fontsize=10)
        bx.grid(alpha=0.3)
    return _save(fig, path)


def plot_composition(model: str, comp: Mapping[str, Any], path: Path) -> Path:
    """Heatmaps: cosine matrix, cross-talk on monitors, cross-talk on behavioural scores."""
    import numpy as np

    plt = _plt()
    names = comp["concepts"]
    mats = [("cosine of directions", comp["cosine"])]
    mats += [(f"cross-talk ({k}): row steered, column read", m) for k, m in comp["crosstalk"].items()]
    fig, axes = plt.subplots(1, len(mats), figsize=(4.2 * len(mats), 3.9), squeeze=False)
    for ax, (title, m) in zip(axes[0], mats):
        a = np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float)
        im = ax.imshow(np.clip(a, -1, 1), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                if np.isfinite(a[i, j]):
                    ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=6)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"composition on {model}", fontsize=10)
    return _save(fig, path)


def write_html(doc: Mapping[str, Any], images: Sequence[Path], path: Path) -> Path:
    """One static page: verdicts, the table, every plot (embedded), the thresholds."""
    def img(p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(p.stem)}"></figure>'

    verdicts = "".join(f"<li>{html.escape(r['verdict']['line'])}</li>" for r in doc["results"])
    th = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in doc["thresholds"].items())
    body = (f"<h1>gnomon linearity report</h1><p>{html.escape(', '.join(doc['concepts']))} on "
            f"{html.escape(', '.join(doc['models']))} &middot; position {html.escape(doc['position'])} &middot; "
            f"{html.escape(doc['created'])}</p><h2>Verdicts</h2><ul>{verdicts}</ul>"
            f"<h2>Plots</h2>{''.join(img(p) for p in images)}"
            f"<h2>Table</h2><pre>{html.escape(table(doc))}</pre>"
            f"<h2>Thresholds</h2><table>{th}</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>gnomon report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "img{max-width:100%}pre{font-size:12px;overflow-x:auto}td{padding:0 1em}</style></head>"
            f"<body>{body}</body></html>")
    return write_text(path, page)
