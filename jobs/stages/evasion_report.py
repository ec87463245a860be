"""The pictures, the HTML page and the text of an evasion report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# lazy: pyarrow (heavy; imported where used)

__all__ = ["evasion_figures", "evasion_rows", "print_evasion"]

KINDS = (("frozen", "(a) frozen monitor"), ("linear", "(b) linear, retrained"), ("mlp", "(c) MLP, retrained"),
         ("mlp_after_leace", "(d) MLP after LEACE"))


def _cell(e: dict[str, Any] | None) -> str:
    return "-" if not e else f"{e['auroc']:.3f} +- {e['se']:.3f}"


def evasion_rows(out: dict[str, Any]) -> list[list[Any]]:
    """One row per version at the monitor's layer: (a)-(f), the best other layer, the verdict."""
    lay = str(out["monitor_layer"])
    head = ["version", "series", "step", *[k for _, k in KINDS], "flags positive", "(e) behaviour shift [95% CI]",
            "(f) angle", "best linear elsewhere", "verdict"]
    rows: list[list[Any]] = [head]
    entries = [{"version": out["base"], "series": "base", "step": 0, "layers": out["base_figures"], "behaviour": None,
                "verdict": {"headline": "-"}}, *out["checkpoints"]]
    for r in entries:
        f = r["layers"][lay]
        others = [(int(k), v["linear"]["auroc"]) for k, v in r["layers"].items() if k != lay and "linear" in v]
        best = max(others, key=lambda t: t[1]) if others else None
        b = r["behaviour"]
        rows.append([r["version"], r["series"], r["step"], *[_cell(f.get(k)) for k, _ in KINDS],
                     f"{f['frozen'].get('flagged_positive', float('nan')):.2f}",
                     "-" if not b else f"{b['shift']:+.3f} [{b['ci'][0]:+.3f}, {b['ci'][1]:+.3f}]",
                     f"{f['angle']:.1f}", "-" if not best else f"L{best[0]} {best[1]:.3f}", r["verdict"]["headline"]])
    return rows


def evasion_figures(out: dict[str, Any], d: Path) -> list[Path]:
    """Per series: (a)-(d) at the monitor's layer against the step; the linear probe's
    AUROC by layer for every checkpoint (does the concept move?); ``report.html``."""
    from pipeline.fleet_compare.figures import curves, heatmap, html_report

    lay = str(out["monitor_layer"])
    pngs: list[Path] = []
    for series in sorted({r["series"] for r in out["checkpoints"]}):
        mine = [r for r in out["checkpoints"] if r["series"] == series]
        steps = [0, *[r["step"] for r in mine]]
        lines = {}
        for k, name in KINDS:
            ys = [out["base_figures"][lay].get(k, {}).get("auroc", np.nan),
                  *[r["layers"][lay].get(k, {}).get("auroc", np.nan) for r in mine]]
            lines[name] = (steps, ys)
        pngs.append(curves(lines, f"{series}: test AUROC at the monitor's layer {lay}", d / f"auroc-{series}.png",
                           ylabel="test AUROC"))
        layers = [int(k) for k in out["base_figures"]]
        mat = np.array([[f["layers"][str(k)].get("linear", {}).get("auroc", np.nan) for k in layers]
                        for f in [{"layers": out["base_figures"]}, *mine]])
        pngs.append(heatmap(mat, [f"step {s}" for s in steps], [str(k) for k in layers],
                            f"{series}: retrained linear probe AUROC by layer", d / f"by-layer-{series}.png",
                            vmin=0.5, vmax=1.0, xlabel="layer", ylabel="checkpoint", annotate=False))
    s = out["summary"]
    page = html_report(f"{out['concept']}: evasion of its monitor (fleet {out['fleet']})",
                       [(f"monitor at layer {lay} (pre-registered), penalty weight {out['weight']}; "
                         f"evasion: {s['evasion']}; control: {s['control']}", pngs, evasion_rows(out))],
                       d / "report.html")
    return [*pngs, page]


def print_evasion(out: dict[str, Any]) -> None:
    rows = evasion_rows(out)
    print(f"{out['concept']} evasion, fleet {out['fleet']}: monitor layer {out['monitor_layer']} (mean rows), "
          f"{len(out['layers'])} layers, behaviour: {out['behaviour_score']} on {out['n_prompts']} prompts; "
          f"AUROC +- bootstrap SE over test rows")
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    print(f"verdict: evasion series: {out['summary']['evasion']}; control: {out['summary']['control']}")
    print(f"report: {out['html']}")
