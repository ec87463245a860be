"""Real fleet figures for issue 8: numeric versions, SmolLM2 vs MiniLM, drift, evaluation.

Parts (``--parts``, comma list; each resumes: stored activations are reused):

- ``numeric``: the sentiment directions of smollm2-base / -bf16 / -fp16 / -int8 (mean
  difference on train, ``last`` position) compared per layer; the pairwise cosine matrix
  at the best layer (mean val accuracy over the versions), and the transfer matrix.
- ``widths``: SmolLM2 vs MiniLM for all 7 shipped concepts (``mean`` position: MiniLM is
  an encoder, its last token is [SEP]): linear CKA per layer pair through the same
  examples, projection-score correlations, and each model's best-layer test accuracy.
- ``drift``: the ft-negative and ft-control series (every seed): paired activation and
  VADER behaviour shifts per checkpoint with CIs, the pooled, within-series and partial r
  (given step, series, step x series) with CIs beside the schedule baselines, the paired
  control test, copying and EOS per checkpoint, and the data-screening AUROC beside a VADER
  and a bag-of-words baseline (``gnomon drift sentiment --fleet fa-drift`` printed).
- ``evaluate``: a sentiment direction of smollm2-base evaluated on >= 8 versions as Ray
  tasks (one per version), then found again by a catalog query (``gnomon evals ls``).

Fleets ``fa-numeric``, ``fa-widths`` and ``fa-all`` are written under ``<home>/fleets/``
from the registered versions. Run (threads limited; the machine is shared):
``OMP_NUM_THREADS=1 GNOMON_HOME=/work/fleet-home python bench/fleet_figures.py --parts numeric,widths``.
Prints the load average; the last line is ``name = value``. Figures and the HTML reports
land under ``<home>/reports/``; ``--out FILE`` also writes the JSON of every part.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

CONCEPTS = ("sentiment", "truth", "language", "formality", "tense", "honesty", "refusal")


def _fleet(name: str, ids: list[str], home: Path) -> str:
    from pipeline.fleet.registry import Fleet, FleetMember, read_lineage, save_fleet

    members = []
    for vid in ids:
        lin = read_lineage(vid, home)
        members.append(FleetMember(vid, series=lin.series, step=lin.step, kind=lin.kind))
    save_fleet(Fleet(name, tuple(members), "fleet_figures bench"), home)
    return name


def _versions(home: Path) -> dict[str, Any]:
    from pipeline.fleet.registry import list_versions

    return {v.id: v for v in list_versions(home)}


def numeric(home: Path, ex: Any, concept: str = "sentiment") -> dict[str, Any]:
    from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare

    ids = [v for v in ("smollm2-base", "smollm2-bf16", "smollm2-fp16", "smollm2-int8") if v in _versions(home)]
    _fleet("fa-numeric", ids, home)
    out = run_fleet_compare(FleetCompareSpec(concept, "fa-numeric", position="last"), ex, home)
    g = out["groups"][0]
    b = g["best_layer"]
    i = g["layers"].index(b)
    print(f"numeric versions {g['versions']}: best layer {b}; pairwise cosine of sentiment directions:")
    for v, row in zip(g["versions"], g["cosine"][b]):
        print(f"  {v:<14} " + " ".join(f"{x:.4f}" for x in row))
    print(f"  min pairwise cosine at layer {b}: {g['min_cosine'][i]:.4f}; over all layers: {min(g['min_cosine']):.4f}")
    print("  transfer accuracy (row fitted on, column scored): "
          + "; ".join(" ".join(f"{x:.3f}" for x in r) for r in g["transfer"][b]["accuracy"]))
    print(f"  report: {out['html']}")
    return {"best_layer": b, "versions": g["versions"], "cosine": g["cosine"][b], "min_cosine": g["min_cosine"][i],
            "transfer": g["transfer"][b], "html": out["html"]}


def widths(home: Path, ex: Any, concepts: tuple[str, ...] = CONCEPTS) -> dict[str, Any]:
    from jobs.stages.fleet_compare_job import FleetCompareSpec, run_fleet_compare

    _fleet("fa-widths", ["smollm2-base", "minilm"], home)
    res = {}
    for c in concepts:
        out = run_fleet_compare(FleetCompareSpec(c, "fa-widths", position="mean"), ex, home)
        cw = out["cross_width"][0]
        res[c] = {"cka": cw["cka"], "correspondence": cw["correspondence"],
                  "smollm2": (cw["best_layer_a"], cw["best_test_a"]), "minilm": (cw["best_layer_b"], cw["best_test_b"]),
                  "html": out["html"]}
        print(f"{c:<10} SmolLM2 L{cw['best_layer_a']:>2} test acc {cw['best_test_a']['accuracy']:.3f}  |  "
              f"MiniLM L{cw['best_layer_b']} test acc {cw['best_test_b']['accuracy']:.3f}  "
              f"corresponding layers: " + " ".join(f"{r['layer_a']}->{r['layer_b']}" for r in cw["correspondence"]))
    return res


def drift(home: Path, ex: Any, quick: bool = False) -> dict[str, Any]:
    from jobs.stages.drift_job import DriftSpec, run_drift

    vs = _versions(home)
    ft = sorted((v for v in vs.values() if v.kind == "finetune"), key=lambda v: (v.series or "", v.step or 0))
    _fleet("fa-drift", ["smollm2-base", *[v.id for v in ft]], home)
    size = {"n_prompts": 12, "max_new_tokens": 16, "screen_samples": 80} if quick else {"n_prompts": 32, "max_new_tokens": 24}
    out = run_drift(DriftSpec("sentiment", "fa-drift", **size), ex, home)  # type: ignore[arg-type]
    from jobs.cli.commands.drift import print_drift

    print_drift(out)   # every checkpoint paired with its CI, the r's with CIs, the baselines, screening
    return out


def evaluate(home: Path, ex: Any, concept: str = "sentiment", quick: bool = False) -> dict[str, Any]:
    from catalog.fleet_runs import search_fleet_runs
    from jobs.stages.evaluate_job import EvalSpec, run_evaluation
    from jobs.stages.fleet_common import ensure_collected, read_versions
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction
    from pipeline.fleet.registry import read_lineage
    from pipeline.fleet_compare import best_layer, read_layer_data

    vs = _versions(home)
    # Numeric and edited versions, and the middle and last checkpoint of each fine-tune
    # series (>= 8 versions of width 576), plus MiniLM to show the width skip.
    ids = [v for v in vs if vs[v].hidden_size == 576 and vs[v].kind in ("base", "numeric", "edited")]
    for series in sorted({x.series for x in vs.values() if x.kind == "finetune" and x.series}):
        ck = sorted((x for x in vs.values() if x.series == series), key=lambda x: x.step or 0)
        ids += sorted({ck[(len(ck) - 1) // 2].id, ck[-1].id})
    ids = sorted(ids, key=lambda v: (v != "smollm2-base", vs[v].series or "", vs[v].step or 0, v))
    _fleet("fa-all", ids + [v for v in vs if v == "minilm"], home)
    ensure_collected(["smollm2-base"], concept, home, ex)
    per = read_versions(["smollm2-base"], concept, home, "positive", "negative", "last")["smollm2-base"]
    layer = best_layer(per)[0]
    d = read_layer_data(home, "smollm2-base", concept, layer, "positive", "negative")
    base = Provenance.minimal(hidden_size=576, layer=layer, model_id="smollm2-base", concept="sentiment",
                              dataset=concept, positive="positive", negative="negative", method="mean_diff",
                              position="last", fingerprint=read_lineage("smollm2-base", home).fingerprint)
    direction = fit_direction("mean_diff", *d.part("train"), base=base, eval_sets={"test": d.part("test")})
    path = direction.save(home / "evals" / "directions" / f"fa-sentiment-L{layer}.safetensors")
    t0 = time.time()
    size = ({"strengths": (-4.0, 0.0, 4.0), "n_prompts": 4, "max_new_tokens": 12, "n_probe": 20} if quick else
            {"strengths": (-4.0, -2.0, 0.0, 2.0, 4.0), "n_prompts": 8, "max_new_tokens": 16, "n_probe": 60})
    out = run_evaluation(EvalSpec(ref=str(path), fleet="fa-all", **size), ex, home)  # type: ignore[arg-type]
    print(f"evaluated on {len(out['checkpoints'])} versions in {time.time() - t0:.0f} s as {out['executor']} tasks")
    runs = search_fleet_runs("eval", concept="sentiment", fleet="fa-all", direction=path.name, home=home)
    latest: dict[str, Any] = {}
    for r in runs:
        latest.setdefault(r.version, r)
    print(f"catalog query (gnomon evals ls --concept sentiment --fleet fa-all): {len(latest)} versions")
    for vid, r in sorted(latest.items()):
        m = r.metrics
        print(f"  {vid:<24} VADER slope {m.get('steer_slope', float('nan')):+.3f} R2 {m.get('steer_r2', float('nan')):.2f}"
              f"  log-odds slope {m.get('logodds_slope', float('nan')):+.3f}  KL {m.get('side_effect_kl', float('nan')):.3f}"
              f"  ppl {m.get('perplexity', float('nan')):.1f}->{m.get('perplexity_steered', float('nan')):.1f}"
              f"  monitor AUROC {m.get('monitor_auroc', float('nan')):.3f}"
              f"  probe after ablation {m.get('probe_accuracy_after', float('nan')):.3f}")
    for c in out["checkpoints"]:
        if c.get("skipped"):
            print(f"  skipped: {c['skipped']}")
    return {"layer": layer, "n_evaluated": len(latest), "seconds": out["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.environ.get("GNOMON_HOME", "/work/fleet-home"))
    ap.add_argument("--parts", default="numeric,widths,drift,evaluate")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--concepts", default=",".join(CONCEPTS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--sentiment-set", default="sentiment",
                    help="dataset for the numeric and evaluate parts (a registered subset is cheaper)")
    ap.add_argument("--quick", action="store_true", help="fewer prompts, tokens and strengths (loaded machine)")
    ap.add_argument("--drift-json", default=None,
                    help="with --parts drift-layer: a drift report to re-measure; with drift-md: one to tabulate")
    ap.add_argument("--drift-layer", type=int, default=30)
    ap.add_argument("--eval-executor", default="ray", choices=["local", "ray"],
                    help="the evaluate part runs one Ray task per version unless told local")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from jobs.runtime.engine import make_executor
    home = Path(args.home)
    os.environ["GNOMON_HOME"] = str(home)
    ex = make_executor(args.executor)
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    t0 = time.time()
    results: dict[str, Any] = {}
    for part in args.parts.split(","):
        print(f"== {part}")
        if part == "widths":
            results[part] = widths(home, ex, tuple(args.concepts.split(",")))
        elif part == "evaluate":  # one Ray task per version, as the issue asks
            results[part] = evaluate(home, make_executor(args.eval_executor), args.sentiment_set, args.quick)
        elif part == "drift-md":   # the README/RESULTS tables from a `gnomon drift --json` report
            print(drift_markdown(json.loads(Path(args.drift_json).read_text())))
            results[part] = {}
        elif part == "drift-layer":
            results[part] = drift_at_layer(home, args.drift_json, args.drift_layer)
        elif part == "numeric":
            results[part] = numeric(home, ex, args.sentiment_set)
        else:
            results[part] = drift(home, ex, args.quick)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print(f"fleet_figures_seconds = {time.time() - t0:.0f}")



def _ci(e: dict[str, Any], key: str = "value") -> str:
    return f"{e[key]:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]"


def drift_markdown(out: dict[str, Any]) -> str:
    """Markdown tables of a drift report: shifts by step (mean, SD and range over seeds),
    the statistics with their CIs, copying and EOS, screening with its baselines."""
    import numpy as np

    st = out["drift"]["statistics"]
    lines = [f"Layer {out['layer']} ({out['layer_choice']['rule']}; tied: {out['layer_choice'].get('tied')}), "
             f"{out['prompts']['n']} prompts ({len(out['prompts'].get('dropped', []))} dropped as not held out), "
             f"seeds {st['seeds']}, CIs: {int(st['bootstrap']['level'] * 100)}% bootstrap over {st['bootstrap']['over']} "
             f"({st['bootstrap']['replicates']} replicates). Base: projection {out['base_projection']:.3f}, "
             f"{out['behaviour_score']} {out['base_behaviour']:+.3f}.", "",
             "| series | shift (mean over seeds; SD; min..max) | " + " | ".join(
                 f"step {x}" for x in next(iter(st["by_step"].values()))) + " |",
             "| --- | --- |" + " ---: |" * len(next(iter(st["by_step"].values())))]
    for s, cells in st["by_step"].items():
        for m in ("activation_shift", "behaviour_shift"):
            lines.append(f"| {s} | {m.replace('_', ' ')} | " + " | ".join(
                f"{c[m]['mean']:+.3f}; {c[m]['sd']:.3f}; {c[m]['min']:+.3f}..{c[m]['max']:+.3f}"
                for _, c in sorted(cells.items(), key=lambda kv: int(kv[0]))) + " |")
    lines += ["", "| statistic | value [CI] |", "| --- | --- |", f"| pooled r | {_ci(st['pooled_r'])} |"]
    lines += [f"| r within {k} | {_ci(e)} |" for k, e in st["within_series_r"].items()]
    lines += [f"| partial r given step, series, step x series | {_ci(st['partial_r'])} |"]
    lines += [f"| r of {k} with behaviour / activation shift | {_ci(e['r_behaviour'])} / {_ci(e['r_activation'])} |"
              for k, e in st["baselines"].items()]
    lines += [f"| R^2 of behaviour: schedule / schedule + projection / gain | "
              + " / ".join(_ci(st["r2"][k]) for k in ("covariates", "covariates_and_projection", "gain_from_projection"))
              + " |"]
    ct = st["control_test"]
    lines += [f"| control, paired test ({ct['checkpoints']} checkpoints, Bonferroni) | moved: "
              f"{', '.join(ct['moved']) or 'none'}; max abs z {ct['max_abs_z_paired']:.2f} |"]
    ch = out["behaviour_checks"]
    for s in st["seeds"]:
        mine = [c for c in ch if c["series"] == s]
        last = max(c["step"] for c in mine)
        at = [c for c in mine if c["step"] == last]
        clean = [c["behaviour_shift_clean"]["shift"] for c in at if "behaviour_shift_clean" in c]
        lines.append(f"| {s} at step {last}: copied >= 20 chars (base) / EOS rate (base) / shift without copies | "
                     f"{np.mean([c.get('copied_fraction', np.nan) for c in at]):.2f} "
                     f"({np.mean([c.get('copied_fraction_base', np.nan) for c in at]):.2f}) / "
                     f"{np.mean([c['eos_rate'] for c in at]):.2f} ({at[0]['eos_rate_base']:.2f}) / "
                     f"{np.mean(clean) if clean else float('nan'):+.3f} (mean over seeds) |")
    lines += ["", "| position | screen | AUROC [CI] |", "| --- | --- | --- |"]
    for pos, v in out["screening"].items():
        for name, e in [("projection", v), *v["baselines"].items()]:
            lines.append(f"| {pos} | {name} | {_ci(e, 'auroc')} |")
    return "\n".join(lines)


def drift_at_layer(home: Path, drift_json: str, layer: int) -> dict[str, Any]:
    """Re-measure a drift report's activation shifts at another ``layer`` (behaviour shifts
    reused): the fine-tunes train only the last blocks, so layers below them do not move."""
    import numpy as np

    from jobs.stages.drift_job import read_corpus
    from pipeline.datasets import neutral_prompts
    from pipeline.evaluate import _acts
    from pipeline.fleet_compare import (
        drift_points,
        drift_summary,
        mean_diff,
        read_layer_data,
        screening_auroc,
    )
    from pipeline.models import load_model

    rep = json.loads(Path(drift_json).read_text())
    v = mean_diff(read_layer_data(home, rep["base"], "sentiment", layer, "positive", "negative"))
    u = v / np.linalg.norm(v)
    prompts = neutral_prompts("sentiment")[:12]
    proj = {}
    for vid in [rep["base"], *[p["version"] for p in rep["drift"]["points"]]]:
        proj[vid] = float((_acts(load_model(vid, home=home), prompts, layer, "last") @ u).mean())
        print(f"  {vid}: mean projection at layer {layer} = {proj[vid]:.3f}")
    rows = [(p["version"], p["series"], p["step"], proj[p["version"]], p["behaviour"]) for p in rep["drift"]["points"]]
    out = drift_summary(drift_points(proj[rep["base"]], rep["base_behaviour"], rows))
    for name, s in out["series"].items():
        print(f"{name}: " + ", ".join(f"s{st}: act {a:+.3f} VADER {b:+.3f}"
                                       for st, a, b in zip(s["step"], s["activation_shift"], s["behaviour_shift"])))
    print(f"drift Pearson r at layer {layer} = {out['pearson_r']:.3f} over {out['n_points']} checkpoints")
    lm = load_model(rep["base"], home=home)
    sk, ct = (np.asarray(_acts(lm, read_corpus(rep["corpora"][k], 80), layer, "last") @ u) for k in ("skewed", "control"))
    out["screening_auroc_last"] = screening_auroc(sk - proj[rep["base"]], ct - proj[rep["base"]], -1.0)
    print(f"screening AUROC at layer {layer} (last) = {out['screening_auroc_last']:.3f}")
    return out


if __name__ == "__main__":
    main()
