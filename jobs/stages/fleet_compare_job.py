"""``gnomon compare CONCEPT --fleet NAME``: how one concept's direction moves across a fleet.

For every group of versions of one width (SmolLM2 and its fine-tunes, numeric and edited
versions; the from-scratch series; MiniLM): per layer, the cosine matrix of the versions'
mean-difference directions and the probe transfer matrix (direction of version A scoring
version B's test split); the emergence curve of each from-scratch series (test accuracy
and separation of its own direction by step); across widths, linear CKA and projection
correlations per layer pair through the same examples. Missing activations are collected
first (the collect job, one model load per version). Writes JSON, PNGs and one HTML page
under ``<home>/reports/compare/``, and logs them as one MLflow run.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.runtime.engine import make_executor
from jobs.runtime.output import step
from jobs.stages.fleet_common import concept_labels, ensure_collected, read_versions, report_dir, write_json
from jobs.stages.fleet_report import compare_figures
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: pyarrow, torch (heavy; imported where used)


@dataclass(frozen=True)
class FleetCompareSpec:
    concept: str
    fleet: str
    position: str | None = None
    """Token position read on every version; default ``last``, or ``mean`` when the fleet
    holds an encoder (an encoder's last token is [SEP], which carries no sentence reading)."""
    layers: tuple[int, ...] | None = None
    """Compared layers (default: every stored layer of each version)."""
    collect: bool = True
    """Collect the concept on versions that lack it (else that is an error)."""
    html: str | None = None
    """Also copy the HTML report here."""
    log: bool = True
    """Log the report as an MLflow run."""
    figures: bool = True
    """Draw the PNGs and the HTML page (matplotlib: seconds per figure on a loaded CPU)."""


def _is_encoder(vid: str, home: Path) -> bool:
    """Whether a registered version is an encoder (no causal-LM head), from its config.json
    the way the loader decides which class to load."""
    from pipeline.fleet.registry import version_dir

    cfg_path = version_dir(vid, home) / "config.json"
    if not cfg_path.is_file():
        return False
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or (
        not archs and cfg.get("model_type") not in ("bert",))
    return not causal


def _groups(data: dict[str, dict[int, Any]], kinds: dict[str, str]) -> list[list[str]]:
    """Versions grouped by (width, number of layers), fleet order kept; scratch series apart."""
    groups: dict[tuple[int, int, bool], list[str]] = {}
    for vid, per in data.items():
        if not per:
            continue
        width = next(iter(per.values())).width
        groups.setdefault((width, len(per), kinds.get(vid) == "scratch"), []).append(vid)
    return list(groups.values())


def _width_group(vids: list[str], data: dict[str, dict[int, Any]]) -> dict[str, Any]:
    from pipeline.fleet_compare import cosine_matrix, mean_diff, score, transfer_matrix

    common = sorted(set.intersection(*(set(data[v]) for v in vids)))
    # A layer where some version's class means coincide (layer 0 reads the same last token
    # for every example) has no direction to compare: report it, do not compare it.
    degenerate = [la for la in common if any(not np.any(mean_diff(data[v][la])) for v in vids)]
    layers = [la for la in common if la not in degenerate]
    if not layers:
        raise GnomonError(f"no layer of {', '.join(vids)} has a non-zero direction to compare")
    cos, trans, val = {}, {}, []
    for layer in layers:
        ds = [data[v][layer] for v in vids]
        cos[layer] = cosine_matrix([mean_diff(d) for d in ds])
        trans[layer] = transfer_matrix(ds, vids)
        val.append(np.mean([score(mean_diff(d), d, "val" if (d.split == "val").any() else "test")["accuracy"]
                            for d in ds]))
    best = layers[int(np.argmax(val))]
    off = ~np.eye(len(vids), dtype=bool)
    return {"versions": vids, "width": data[vids[0]][layers[0]].width, "layers": layers, "best_layer": best,
            "degenerate_layers": degenerate,
            "mean_val_accuracy": [float(v) for v in val],
            "min_cosine": [float(cos[la][off].min()) if len(vids) > 1 else 1.0 for la in layers],
            "cosine": {la: np.round(cos[la], 6).tolist() for la in layers},
            "transfer": {la: trans[la].to_json() for la in layers},
            "self_accuracy": {la: np.diag(trans[la].accuracy).tolist() for la in layers}}


def run_fleet_compare(spec: FleetCompareSpec, executor: Any = None, home: Any = None,
                      tracking_uri: str | None = None, log: Any = print) -> dict[str, Any]:
    from pipeline.fleet.registry import load_fleet, read_lineage

    home_p = gnomon_home(home)
    fleet = load_fleet(spec.fleet, home_p)
    pos, neg = concept_labels(spec.concept, home_p)
    if executor is None:
        executor = make_executor("ray")
    encoders = [v for v in fleet.ids if _is_encoder(v, home_p)]
    position = spec.position or ("mean" if encoders else "last")
    if spec.position is None and encoders:
        log(f"position mean: {', '.join(encoders)} is an encoder, whose last token is [SEP] (--position to choose)")

    ensure_collected(fleet.ids, spec.concept, home_p, executor, spec.layers, spec.collect, log)
    data = read_versions(fleet.ids, spec.concept, home_p, pos, neg, position, spec.layers)
    kinds = {m.id: m.kind or read_lineage(m.id, home_p).kind for m in fleet.members}
    t0 = time.perf_counter()
    with step(f"compare {spec.concept} across {len(fleet.ids)} versions: cosines and probe transfer per layer"):
        groups = [_width_group(g, data) for g in _groups(data, kinds)]
    out = {"concept": spec.concept, "fleet": spec.fleet, "position": position, "labels": [pos, neg],
           "groups": groups, "emergence": _emergence(fleet, kinds, data), "cross_width": _cross(groups, kinds, data),
           "seconds": round(time.perf_counter() - t0, 2)}
    return _publish(out, spec, fleet, tracking_uri, home_p)


def _emergence(fleet: Any, kinds: dict[str, str], data: dict[str, Any]) -> dict[str, Any]:
    """Per scratch series with two or more stored steps: when the concept emerges."""
    from pipeline.fleet_compare import emergence

    series: dict[str, list[tuple[int, dict[int, Any]]]] = {}
    for m in fleet.members:
        if kinds[m.id] == "scratch" and m.step is not None and data.get(m.id):
            series.setdefault(m.series or "scratch", []).append((int(m.step), data[m.id]))
    return {name: emergence(pts).to_json() for name, pts in series.items() if len(pts) >= 2}


def _cross(groups: list[dict[str, Any]], kinds: dict[str, str], data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pair of widths, each by one representative (its base when it has one; no scratch)."""
    from pipeline.fleet_compare import cross_width

    reps = [next((v for v in g["versions"] if kinds[v] == "base"), g["versions"][0])
            for g in groups if kinds[g["versions"][0]] != "scratch"]
    rep_list = list({data[v][next(iter(data[v]))].width: v for v in reps}.values())
    return [cross_width(a, data[a], b, data[b]).to_json()
            for i, a in enumerate(rep_list) for b in rep_list[i + 1:]]


def _publish(out: dict[str, Any], spec: FleetCompareSpec, fleet: Any, tracking_uri: str | None,
             home_p: Path) -> dict[str, Any]:
    """``compare.json``, figures and the HTML page when asked (and its copy), the MLflow run."""
    groups, position = out["groups"], out["position"]
    d = report_dir(home_p, "compare", spec.concept, spec.fleet)
    files: list[Path] = []
    out["report_dir"] = str(d)
    out["html"] = None
    if spec.figures or spec.html:
        files = compare_figures(out, d)
        out["html"] = str(d / "report.html")
    write_json(d / "compare.json", out)
    if spec.html:
        shutil.copyfile(d / "report.html", spec.html)
        out["html"] = str(Path(spec.html))
    if spec.log:
        from catalog.fleet_runs import log_fleet_run

        metrics: dict[str, float] = {}
        for g in groups:
            key = f"w{g['width']}"
            bi = g["layers"].index(g["best_layer"])
            metrics |= {f"{key}.best_layer": g["best_layer"], f"{key}.min_cosine_best": g["min_cosine"][bi],
                        f"{key}.min_transfer_accuracy_best":
                        float(np.nanmin(g["transfer"][g["best_layer"]]["accuracy"]))}
        out["run_id"] = log_fleet_run("compare", spec.concept, spec.fleet, metrics=metrics,
                                      params={"position": position, "versions": ",".join(fleet.ids)},
                                      files=[*files, d / "compare.json"], run_name=f"compare-{spec.fleet}",
                                      tracking_uri=tracking_uri, home=home_p)
    return out


def check_same_concept(concepts: list[str]) -> None:
    """Directions of different concepts are not versions of one thing: refuse to compare them."""
    if len(set(concepts)) > 1:
        raise GnomonError(f"directions of different concepts ({', '.join(sorted(set(concepts)))}) cannot be "
                          "compared across versions: give directions of one concept")
