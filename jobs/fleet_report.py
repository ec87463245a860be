"""The pictures and the HTML page of a fleet comparison or drift report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare_figures", "drift_figures"]


def compare_figures(out: dict[str, Any], d: Path) -> list[Path]:
    """PNGs (cosine and transfer heatmaps at each group's best layer, min cosine and
    accuracy by layer, emergence curves, CKA and projection-correlation heatmaps) and
    ``report.html``; returns every file written."""
    from pipeline.fleet_compare.figures import curves, heatmap, html_report

    sections: list[tuple[str, list[Path], list[list[Any]]]] = []
    for g in out["groups"]:
        w, b = g["width"], g["best_layer"]
        vs = g["versions"]
        pngs = [heatmap(np.array(g["cosine"][b]), vs, vs, f"{out['concept']}: cosine of directions, layer {b}",
                        d / f"cosine-w{w}-L{b}.png", vmin=min(0.0, float(np.min(g["cosine"][b]))), vmax=1.0),
                heatmap(np.array(g["transfer"][b]["accuracy"]), vs, vs,
                        f"transfer accuracy, layer {b} (row: fitted on, column: scored)",
                        d / f"transfer-w{w}-L{b}.png", vmin=0.5, vmax=1.0, xlabel="scored", ylabel="fitted on"),
                curves({"min off-diagonal cosine": (g["layers"], g["min_cosine"]),
                        "mean val accuracy": (g["layers"], g["mean_val_accuracy"])},
                       f"width {w}: agreement and accuracy by layer", d / f"by-layer-w{w}.png", xlabel="layer")]
        rows = [["fitted on \\ scored", *vs]] + [[v, *[float(x) for x in row]]
                                                 for v, row in zip(vs, g["transfer"][b]["accuracy"])]
        cos_rows = [["cosine", *vs]] + [[v, *[float(x) for x in row]] for v, row in zip(vs, g["cosine"][b])]
        sections.append((f"width {w}: {len(vs)} versions, best layer {b}", pngs, cos_rows + rows))
    for name, e in out["emergence"].items():
        png = curves({"test accuracy": (e["steps"], e["accuracy"]), "test AUROC": (e["steps"], e["auroc"])},
                     f"emergence of {out['concept']} in {name}", d / f"emergence-{name}.png", logx=True)
        png2 = curves({"d'": (e["steps"], e["dprime"])}, f"separation in {name}", d / f"emergence-dprime-{name}.png",
                      logx=True)
        rows = [["step", "best layer", "test accuracy", "AUROC", "d'"]] + [
            [s, la, a, u, p] for s, la, a, u, p in zip(e["steps"], e["layers"], e["accuracy"], e["auroc"], e["dprime"])]
        sections.append((f"emergence: {name}", [png, png2], rows))
    for c in out["cross_width"]:
        a, b = c["model_a"], c["model_b"]
        pngs = [heatmap(np.array(c["cka"]), c["layers_a"], c["layers_b"], f"linear CKA {a} vs {b}",
                        d / f"cka-{a}-{b}.png", vmin=0.0, vmax=1.0, xlabel=b, ylabel=a, annotate=False),
                heatmap(np.array(c["projection_corr"]), c["layers_a"], c["layers_b"],
                        f"projection-score correlation {a} vs {b}", d / f"projcorr-{a}-{b}.png", vmin=-1.0, vmax=1.0,
                        xlabel=b, ylabel=a, annotate=False)]
        rows = [[f"layer of {a}", f"closest layer of {b}", "CKA"]] + [
            [r["layer_a"], r["layer_b"], r["cka"]] for r in c["correspondence"]]
        rows += [["best layer / test accuracy", f"{a}: L{c['best_layer_a']} {c['best_test_a']['accuracy']:.3f}",
                  f"{b}: L{c['best_layer_b']} {c['best_test_b']['accuracy']:.3f}"]]
        sections.append((f"across widths: {a} vs {b} ({c['n_examples']} shared examples)", pngs, rows))
    page = html_report(f"{out['concept']} across fleet {out['fleet']}", sections, d / "report.html")
    return [p for _, ps, _ in sections for p in ps] + [page]


def drift_figures(out: dict[str, Any], d: Path) -> list[Path]:
    """Drift curves per series, the activation-vs-behaviour scatter, and ``report.html``."""
    from pipeline.fleet_compare.figures import curves, html_report

    s = out["drift"]["series"]
    act = curves({k: (v["step"], v["activation_shift"]) for k, v in s.items()},
                 f"activation shift along the base {out['concept']} direction (layer {out['layer']})",
                 d / "drift-activation.png", ylabel="mean projection - base")
    beh = curves({k: (v["step"], v["behaviour_shift"]) for k, v in s.items()},
                 f"behaviour shift ({out['behaviour_score']})", d / "drift-behaviour.png", ylabel="score - base")
    sc = curves({k: (v["activation_shift"], v["behaviour_shift"]) for k, v in s.items()},
                f"activation vs behaviour shift, Pearson r = {out['drift']['pearson_r']:.3f}",
                d / "drift-scatter.png", xlabel="activation shift", ylabel="behaviour shift", scatter=True)
    rows: list[list[Any]] = [["version", "series", "step", "activation shift", "behaviour shift"]]
    rows += [[p["version"], p["series"], p["step"], p["activation_shift"], p["behaviour_shift"]]
             for p in out["drift"]["points"]]
    sections: list[tuple[str, list[Path], list[list[Any]]]] = [
        (f"drift: Pearson r = {out['drift']['pearson_r']:.3f} over {out['drift']['n_points']} checkpoints",
         [act, beh, sc], rows)]
    if out.get("screening"):
        sc_rows: list[list[Any]] = [["position", "AUROC (skewed ranked above control)", "skewed n", "control n"]]
        sc_rows += [[k, v["auroc"], v["n_skewed"], v["n_control"]] for k, v in out["screening"].items()]
        sections.append(("data screening", [], sc_rows))
    page = html_report(f"{out['concept']} drift in fleet {out['fleet']}", sections, d / "report.html")
    return [act, beh, sc, page]
