"""The pictures and the HTML page of a fleet comparison or drift report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# lazy: pyarrow (heavy; imported where used)

__all__ = ["compare_figures", "drift_figures"]


def compare_figures(out: dict[str, Any], d: Path) -> list[Path]:
    """PNGs (cosine and transfer heatmaps at each group's best layer, min cosine and
    accuracy by layer, emergence curves, CKA and projection-correlation heatmaps) and
    ``report.html``; returns every file written."""
    from pipeline.fleet_compare.figures import curves, heatmap, html_report

    sections: list[tuple[str, list[Path], list[list[Any]]]] = []
    for i, g in enumerate(out["groups"]):
        # Two groups can share a width (scratch series, another depth): the index keeps their files apart.
        w, b = f"g{i}-w{g['width']}", g["best_layer"]
        vs = g["versions"]
        pngs = [heatmap(np.array(g["cosine"][b]), vs, vs, f"{out['concept']}: cosine of directions, layer {b}",
                        d / f"cosine-{w}-L{b}.png", vmin=min(0.0, float(np.min(g["cosine"][b]))), vmax=1.0),
                heatmap(np.array(g["transfer"][b]["accuracy"]), vs, vs,
                        f"probe transfer accuracy, layer {b}",
                        d / f"transfer-{w}-L{b}.png", vmin=0.5, vmax=1.0, xlabel="scored", ylabel="fitted on"),
                curves({"min off-diagonal cosine": (g["layers"], g["min_cosine"]),
                        "mean val accuracy": (g["layers"], g["mean_val_accuracy"])},
                       f"width {g['width']}: agreement and accuracy by layer", d / f"by-layer-{w}.png",
                       xlabel="layer", ylabel="cosine / accuracy", integer_x=True)]
        rows = [["fitted on \\ scored", *vs]] + [[v, *[float(x) for x in row]]
                                                 for v, row in zip(vs, g["transfer"][b]["accuracy"])]
        cos_rows = [["cosine", *vs]] + [[v, *[float(x) for x in row]] for v, row in zip(vs, g["cosine"][b])]
        sections.append((f"width {g['width']}: {len(vs)} versions, best layer {b}", pngs, cos_rows + rows))
    for name, e in out["emergence"].items():
        png = curves({"test accuracy": (e["steps"], e["accuracy"]), "test AUROC": (e["steps"], e["auroc"])},
                     f"emergence of {out['concept']} in {name}", d / f"emergence-{name}.png", logx=True,
                     xlabel="training step (log scale)", ylabel="test accuracy / AUROC (best layer)")
        png2 = curves({"d'": (e["steps"], e["dprime"])}, f"separation in {name}", d / f"emergence-dprime-{name}.png",
                      logx=True, xlabel="training step (log scale)", ylabel="d' (best layer)")
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


def ci_text(e: dict[str, Any]) -> str:
    """``value [lo, hi]`` of an estimate with a CI."""
    lo, hi = e["ci"]
    return f"{e['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def drift_figures(out: dict[str, Any], d: Path) -> list[Path]:
    """Drift curves per series (mean over seeds, shaded min-max across seeds), every
    checkpoint's activation vs behaviour shift, the statistics beside the pooled r, the
    per-checkpoint paired shifts and copying, the screening with its baselines; ``report.html``."""
    from pipeline.fleet_compare.figures import curves, html_report

    s = out["drift"]["series"]
    st = out["drift"]["statistics"]
    n_seeds = max(len(v) for v in st["seeds"].values())
    seeds = f"mean of {n_seeds} seeds, band: their range" if n_seeds > 1 else "one seed"
    act = curves({k: (v["step"], v["activation_shift"]) for k, v in s.items()},
                 f"activation shift, base {out['concept']} direction, layer {out['layer']} ({seeds})",
                 d / "drift-activation.png", ylabel="mean projection - base",
                 band={k: (v["activation_shift_min"], v["activation_shift_max"]) for k, v in s.items()})
    beh = curves({k: (v["step"], v["behaviour_shift"]) for k, v in s.items()},
                 f"behaviour shift, {out['behaviour_score']} ({seeds})", d / "drift-behaviour.png",
                 ylabel="score - base", band={k: (v["behaviour_shift_min"], v["behaviour_shift_max"]) for k, v in s.items()})
    pts: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in s}   # the curves' colours
    for p in out["drift"]["points"]:
        xy = pts.setdefault(p["series"], ([], []))
        xy[0].append(p["activation_shift"])
        xy[1].append(p["behaviour_shift"])
    sc = curves(pts, f"activation vs behaviour shift (every checkpoint)\npooled r {ci_text(st['pooled_r'])}, "
                f"partial r {ci_text(st['partial_r'])}", d / "drift-scatter.png",
                xlabel="activation shift", ylabel="behaviour shift", scatter=True)
    n_ck = out["drift"]["n_points"]
    srows: list[list[Any]] = [["statistic", f"value [{int(st['bootstrap']['level'] * 100)}% CI, bootstrap over "
                               f"{st['bootstrap']['over']}]"],
                              ["pooled r (activation vs behaviour shift)", ci_text(st["pooled_r"])],
                              *[[f"r within {k}", ci_text(e)] for k, e in st["within_series_r"].items()],
                              ["partial r given step, series, step x series", ci_text(st["partial_r"])],
                              *[[f"baseline r of {k} with behaviour / activation shift",
                                 f"{ci_text(e['r_behaviour'])} / {ci_text(e['r_activation'])}"]
                                for k, e in st["baselines"].items()],
                              ["R^2 of behaviour: covariates / + projection / gain",
                               " / ".join(ci_text(st["r2"][k]) for k in
                                          ("covariates", "covariates_and_projection", "gain_from_projection"))],
                              ["control (paired test)", f"moved: {', '.join(st['control_test']['moved']) or 'none'}; "
                               f"max |z| {st['control_test']['max_abs_z_paired']:.2f}"]]
    checks = {c["version"]: c for c in out.get("behaviour_checks", [])}
    rows: list[list[Any]] = [["version", "series", "seed", "step", "activation shift [CI]", "behaviour shift [CI]",
                              "paired z (unpaired z)", "copied >= 20 chars", "shift without copies", "EOS rate"]]
    for c in st["checkpoints"]:
        ch, bs, a = checks.get(c["version"], {}), c["behaviour_shift"], c["activation_shift"]
        clean = ch.get("behaviour_shift_clean")
        rows.append([c["version"], c["series"], c["seed"], c["step"],
                     ci_text({"value": a["shift"], "ci": a["ci"]}), ci_text({"value": bs["shift"], "ci": bs["ci"]}),
                     f"{bs['z_paired']:+.2f} ({bs['z_unpaired']:+.2f})", ch.get("copied_fraction", "-"),
                     ci_text({"value": clean["shift"], "ci": clean["ci"]}) if clean else "-", ch.get("eos_rate", "-")])
    sections: list[tuple[str, list[Path], list[list[Any]]]] = [
        (f"drift over {n_ck} checkpoints", [act, beh, sc], srows), ("per checkpoint (paired over prompts)", [], rows)]
    if out.get("screening"):
        sc_rows: list[list[Any]] = [["position", "screen", "AUROC (skewed ranked above control) [CI]", "skewed n",
                                     "control n"]]
        for k, v in out["screening"].items():
            for name, e in [("projection", v), *v["baselines"].items()]:
                sc_rows.append([k, name, ci_text({"value": e["auroc"], "ci": e["ci"]}), e["n_skewed"], e["n_control"]])
        sections.append(("data screening, with baselines on the same samples", [], sc_rows))
    page = html_report(f"{out['concept']} drift in fleet {out['fleet']}", sections, d / "report.html")
    return [act, beh, sc, page]
