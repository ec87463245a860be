"""Verdicts: a class per layer and one line per concept and model, from named thresholds.

Layer classes (test accuracies; chance is 0.5 on balanced contrasts):

- ``linear``: the linear probe reaches ``decodable``, the MLP beats it by at most
  ``mlp_gap``, and after LEACE erasure the MLP falls within ``chance_margin`` of chance
  (the concept was secretly linear: nothing a small non-linear reader used survives
  removing one direction);
- ``partly-linear``: linearly decodable, but the MLP finds clearly more, or still
  recovers the concept after erasure;
- ``non-linear``: only the MLP decodes it;
- ``absent``: neither probe reaches ``decodable``.

The concept verdict combines the layers with the control figures (dose-response R^2 in
the fluent range and its effect size, interpolation R^2), method agreement and the
additivity error, all against :class:`~pipeline.linearity.thresholds.Thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.linearity.thresholds import DEFAULT, Thresholds

__all__ = ["LAYER_CLASSES", "concept_verdict", "layer_class", "layer_ranges"]

LAYER_CLASSES = ("linear", "partly-linear", "non-linear", "absent")


def layer_class(layer: Mapping[str, Any], th: Thresholds = DEFAULT) -> str:
    """Class of one layer entry of the report (``probes`` and ``erasure`` blocks)."""
    lin = layer["probes"]["linear"]["test_accuracy"]
    mlp = layer["probes"]["mlp"]["test_accuracy"]
    erased_mlp = layer["erasure"]["mlp"]["test_accuracy"]
    if max(lin, mlp) < th.decodable:
        return "absent"
    if lin < th.decodable:
        return "non-linear"
    if mlp - lin <= th.mlp_gap and erased_mlp <= 0.5 + th.chance_margin:
        return "linear"
    return "partly-linear"


def layer_ranges(chosen: Sequence[int], analysed: Sequence[int]) -> str:
    """``3-9, 15`` : runs of ``chosen`` that are consecutive among the ``analysed`` layers."""
    order = sorted(analysed)
    idx = {layer: i for i, layer in enumerate(order)}
    runs: list[list[int]] = []
    for layer in sorted(chosen):
        if runs and idx[layer] == idx[runs[-1][-1]] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def _ok(x: float | None, bound: float) -> bool | None:
    return None if x is None or not math.isfinite(x) else x >= bound


def concept_verdict(concept: str, model: str, layers: Sequence[Mapping[str, Any]],
                    control: Mapping[str, Any] | None = None, interpolation: Mapping[str, Any] | None = None,
                    additivity: float | None = None, th: Thresholds = DEFAULT,
                    not_measured: str | None = None) -> dict[str, Any]:
    """The verdict block: ``word``, ``line`` and the figures it quotes.

    ``layers``: the report's layer entries (with ``class`` set); the figures are quoted at
    the *focus* layer: among the layers of the verdict's class, the best by linear test
    accuracy (by MLP accuracy when the concept is non-linear or absent). ``not_measured``:
    why control was not measured (said in the line, never left to a missing figure).
    "Partly linear" says which test made it so (the MLP's lead, or what survives LEACE).
    """
    analysed = [entry["layer"] for entry in layers]
    by_class = {c: [e["layer"] for e in layers if e["class"] == c] for c in LAYER_CLASSES}
    if by_class["linear"]:
        rep, where = "linear", by_class["linear"]
    elif by_class["partly-linear"]:
        rep, where = "partly linear", by_class["partly-linear"]
    elif by_class["non-linear"]:
        rep, where = "non-linear", by_class["non-linear"]
    else:
        rep, where = "not decodable", []
    pool = [e for e in layers if e["layer"] in where] or list(layers)
    key = "linear" if rep in ("linear", "partly linear") else "mlp"
    focus = max(pool, key=lambda e: (e["probes"][key]["test_accuracy"], e["probes"][key]["test_auroc"], -e["layer"]))
    figures: dict[str, Any] = {
        "focus_layer": focus["layer"], "linear": focus["probes"]["linear"]["test_accuracy"],
        "mlp": focus["probes"]["mlp"]["test_accuracy"], "erased_linear": focus["erasure"]["linear"]["test_accuracy"],
        "erased_mlp": focus["erasure"]["mlp"]["test_accuracy"],
        "agreement": focus.get("agreement", {}).get("mean_cosine")}
    parts = [(f"linear {figures['linear']:.2f} vs MLP {figures['mlp']:.2f}, "
              f"erased MLP {figures['erased_mlp']:.2f} (layer {focus['layer']})")]
    if figures["agreement"] is not None:
        parts.append(f"methods cos {figures['agreement']:.2f}")
    control_ok = _control(control, th, figures, parts) if control is not None else None
    interp_ok = None
    if interpolation is not None:
        r2 = interpolation["fit"]["r2"]
        interp_ok = _ok(r2, th.interp_r2)
        figures["interp_r2"] = r2
        parts.append(f"interpolation R² {r2:.2f}" if r2 is not None and math.isfinite(r2) else "interpolation flat")
    additive_ok = None
    if additivity is not None and math.isfinite(additivity):
        additive_ok = additivity <= th.additivity
        figures["additivity_error"] = additivity
        parts.append(f"additive within {100 * additivity:.0f}%")
    if not_measured:
        parts.append("control, interpolation and composition not measured (no behavioural readout declared)"
                     if "declares no behavioural readout" in not_measured else f"control not measured ({not_measured})")
    word = _word(rep, focus, figures, th, {"controllable": control_ok, "interpolable": interp_ok,
                                            "additive": additive_ok})
    head = f"{concept} on {model}: {word}" + (f" at layers {layer_ranges(where, analysed)}" if where else "")
    return {"word": word, "representation": rep, "layers": by_class, "figures": figures,
            "line": head + ": " + ", ".join(parts)}


def _control(control: Mapping[str, Any], th: Thresholds, figures: dict[str, Any], parts: list[str]) -> bool:
    """The dose-response's figures and its part of the line; whether it passes (R² and effect)."""
    fit = control["fit"]
    moves = control["effect"] >= th.min_effect
    lo, hi = control["fluent_range"]
    sat = [f"{v:+g}" for v in control["saturation"].values() if v is not None]
    figures.update(control_r2=fit["r2"], control_slope=fit["slope"], fluent_range=[lo, hi],
                   control_effect=control["effect"])
    r2 = "n/a" if fit["r2"] is None or not math.isfinite(fit["r2"]) else f"{fit['r2']:.2f}"
    parts.append(f"control R² {r2} ({control['score']}, slope {fit['slope']:+.3g}/unit, KL<{th.kl_bound:g} "
                 f"for {lo:+g}..{hi:+g}{', saturates at ' + '/'.join(sat) if sat else ''}"
                 f"{'' if moves else ', barely moves'})")
    return bool(_ok(fit["r2"], th.control_r2)) and moves


def _word(rep: str, focus: Mapping[str, Any], figures: Mapping[str, Any], th: Thresholds,
          checks: Mapping[str, bool | None]) -> str:
    """The verdict's word: the representation, with why "partly linear", or which live check
    a linear concept failed (a check not run is not a failure)."""
    if rep == "partly linear":
        why = []
        if focus["probes"]["mlp"]["test_accuracy"] - focus["probes"]["linear"]["test_accuracy"] > th.mlp_gap:
            why.append("the MLP reads more than the linear probe")
        if figures["erased_mlp"] > 0.5 + th.chance_margin:
            why.append(f"an MLP still reads it after LEACE ({figures['erased_mlp']:.2f})")
        return f"partly linear ({'; '.join(why)})" if why else rep
    failed = [name for name, ok in checks.items() if ok is False] if rep == "linear" else []
    return "linearly readable, not " + "/".join(failed) if failed else rep
