"""Issue 20's must-show figures on the bundled SmolLM2-135M-Instruct: what each alias points
at, and what it is worth, for every shipped concept.

Per concept, in one fresh home (the configuration fixed before any figure was seen):
``gnomon fit`` with every method, positions ``last,mean``, layers 4, 8, ..., 28 (every fourth
block: the search the selection must correct for is 6 x 2 x 7 = 84 candidates), the
collection first (timed apart). Then:

- the fit once more with ``select_steer=False`` (the stored activations reused, the catalog
  fresh): the fit's wall time without steer selection, beside the one with it;
- which aliases were set, the selection's confirmed figures (test AUROC, its null, p-values);
- the monitor's AUROC, accuracy at the calibrated threshold and ECE on the test split, read
  by ``gnomon monitor``'s own code path (:func:`pipeline.evaluate.monitor_auroc`);
- ``best-steer``: the winner's effects at -s and +s with their bootstrap 95% intervals, or
  why none qualified.

Run alone (nothing else on the machine) for the timings::

    python bench/references.py [--concepts sentiment,truth] [--write-results]

The last line is ``steer_select_cost_ratio = <median over concepts of select / fit>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LAYERS = (4, 8, 12, 16, 20, 24, 28)


def catalog_for(home: Path, concept: str, select_steer: bool) -> Any:
    """A fresh catalog per (concept, run): the two fits of a concept register the same
    directions, and the second must not find the first's (nor its aliases)."""
    from catalog import Catalog

    name = f"mlflow-{concept}-{'steer' if select_steer else 'nosteer'}.db"
    return Catalog(tracking_uri=f"sqlite:///{home / name}", home=home)


def fit(concept: str, home: Path, select_steer: bool) -> tuple[dict[str, Any], float]:
    from jobs.runtime.engine import make_executor
    from jobs.stages.fit_job import FitSpec, run_fit

    spec = FitSpec(model="smollm2", dataset=concept, layers=LAYERS, positions=("last", "mean"),
                   select_steer=select_steer)
    cat = catalog_for(home, concept, select_steer)
    t0 = time.perf_counter()
    out = run_fit(spec, make_executor("local", None, None), home, catalog=cat)
    return out, time.perf_counter() - t0


def monitor_figures(concept: str, home: Path) -> dict[str, float] | None:
    from pipeline.datasets import load_dataset
    from pipeline.evaluate import monitor_auroc
    from pipeline.models import cached_model

    cat = catalog_for(home, concept, True)
    try:
        rec = cat.resolve(f"{concept}@best-monitor", "smollm2")
    except Exception:  # noqa: BLE001 - no alias: nothing to read
        return None
    d = cat.load_record(rec)
    lm = cached_model("smollm2", home=home)
    ds = load_dataset(concept)
    pos, neg = ds.default_contrast
    m = monitor_auroc(lm, d, ds.split_texts("test", pos, lm.tokenizer), ds.split_texts("test", neg, lm.tokenizer))
    return {**m, "catalog_test_auroc": rec.metrics.get("test_auroc", float("nan")),
            "catalog_test_accuracy": rec.metrics.get("test_accuracy", float("nan"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", default="sentiment,truth,language,formality,tense,honesty,refusal")
    ap.add_argument("--home", default=None, help="reuse a home (its collections); default: a fresh one, removed")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GNOMON_EXECUTOR", "local")
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="gnomon-refs-"))
    lines, ratios = [], []
    print(f"load average at start: {os.getloadavg()}", flush=True)
    try:
        for concept in args.concepts.split(","):
            from jobs.stages.collect_job import CollectSpec, run_collection
            from jobs.runtime.engine import LocalExecutor
            t0 = time.perf_counter()
            run_collection(CollectSpec(model="smollm2", dataset=concept, layers=LAYERS, positions=("last", "mean")),
                           LocalExecutor(), home)
            t_collect = time.perf_counter() - t0
            for steer in (False, True):
                (home / f"mlflow-{concept}-{'steer' if steer else 'nosteer'}.db").unlink(missing_ok=True)
            without, t_without = fit(concept, home, select_steer=False)
            out, t_with = fit(concept, home, select_steer=True)
            sel, steer = out["selection"], out["steer_selection"]
            t_select = float(steer.get("seconds") or 0.0)
            ratio = t_select / t_without if t_without else float("nan")
            ratios.append(ratio)
            mon = monitor_figures(concept, home)
            load = os.getloadavg()[0]
            line = (f"| {concept} | {', '.join(out['aliases']) or 'none'} | {sel.get('ref') or '-'} | "
                    f"{float(sel['selection.best_val_auroc']):.3f} / null q95 {float(sel['selection.null_q95']):.3f} "
                    f"(p {float(sel['selection.search_p']):.3f}) | "
                    f"{float(sel['selection.test_auroc']):.3f} (p {float(sel['selection.confirm_p']):.3f}) | ")
            line += (f"{mon['auroc']:.3f} / {mon['accuracy']:.3f} / {mon['ece']:.3f} | " if mon else "- | ")
            if steer.get("ref"):
                top = next(c for c in steer["candidates"] if c["ref"] == steer["ref"])
                line += (f"{steer['ref']} L{top['layer']} {top['method']}/{top['position']}: +s {top['plus']:+.3f} "
                         f"[{top['plus_ci'][0]:+.3f}, {top['plus_ci'][1]:+.3f}], -s {top['minus']:+.3f} "
                         f"[{top['minus_ci'][0]:+.3f}, {top['minus_ci'][1]:+.3f}] ({top['scorer']}) | ")
            else:
                line += f"none ({len(steer.get('candidates', []))} measured) | "
            line += (f"{t_collect:.0f} | {t_without:.1f} | {t_with:.1f} | {t_select:.1f} | {ratio:.2f} | {load:.1f} |")
            print(line, flush=True)
            lines.append(line)
    finally:
        if not args.home:
            shutil.rmtree(home, ignore_errors=True)
    header = ("| concept | aliases set (smollm2) | best | search: best val AUROC / null (p) | confirmed test AUROC (p) "
              "| monitor AUROC / acc / ECE (test, as `gnomon monitor` reads) | best-steer effect, 95% CI | collect s "
              "| fit s without steer select | fit s with | steer select s | select / fit | load |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    table = header + "\n" + "\n".join(lines)
    print(table)
    if args.write_results:
        res = ROOT / "bench" / "RESULTS.md"
        text = res.read_text()
        block = (f"\n## references (issue 20)\n\n`python bench/references.py --write-results` "
                 f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the end "
                 f"{os.getloadavg()[0]:.1f}). Layers {', '.join(map(str, LAYERS))}, every method, positions "
                 f"last and mean (84 candidates), fixed before any figure was seen.\n\n{table}\n")
        res.write_text(text + block)
    print(f"steer_select_cost_ratio = {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
