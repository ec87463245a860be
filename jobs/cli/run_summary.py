"""Human-readable summary of a job's results (the JSON form is ``--json``)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def print_report(results: dict[str, Any]) -> None:
    fits = {k: v for k, v in results.items() if k.startswith("fit/")}
    if fits:
        print("\nbest layer per concept and method (chosen on val; test reported):")
        print(f"  {'concept':<10} {'method':<10} {'pos':<5} {'layer':>5} {'val_auroc':>9} {'test_acc':>8} {'test_auroc':>10}  ref")
        for key, r in fits.items():
            for b in r["best"]:
                print(f"  {r['concept']:<10} {b['method']:<10} {b['position']:<5} {b['layer']:>5} "
                      f"{_f(b.get('val_auroc')):>9} {_f(b.get('test_accuracy')):>8} {_f(b.get('test_auroc')):>10}  "
                      f"{b['ref'] or '-'}")
    if any(r.get("aliases") for r in fits.values()):
        print("\naliases (best = best-monitor: read with it; best-steer: steer with it):")
        for r in fits.values():
            for alias, t in (r.get("aliases") or {}).items():
                if alias in ("best-monitor", "best-steer") or (alias == "best" and "best-monitor" not in r["aliases"]):
                    print(f"  {r['concept']}@{alias:<13} -> {t['ref']:<16} layer {t['layer']:>2} {t['method']}/{t['position']}")
            have = r.get("aliases") or {}
            if "best-monitor" not in have:
                print(f"  {r['concept']}: no best/best-monitor ({(r.get('selection') or {}).get('reason', 'no eligible direction')})")
            if "best-steer" not in have:
                print(f"  {r['concept']}: no best-steer ({(r.get('steer_selection') or {}).get('reason', 'not measured')})")
    for key, r in results.items():
        if not key.startswith("evaluate/"):
            continue
        print(f"\n{r['concept']} ({r['ref']}: layer {r['layer']}, {r['method']}):")
        for c in r["checkpoints"]:
            m = c["metrics"]
            if c.get("sweep"):
                sw = c["sweep"]
                pairs = "  ".join(f"{s:+g}: {v:+.3f}" for s, v in zip(sw["strengths"], sw["mean_scores"]))
                print(f"  {c['model']}: mean VADER by strength ({sw['unit']}) {pairs}; "
                      f"Spearman {_f(m.get('steer_spearman'), '.2f')}")
            extra = []
            if "monitor_auroc" in m:
                extra.append(f"monitor AUROC on test {m['monitor_auroc']:.3f}")
            if "probe_accuracy_after" in m:
                extra.append(f"probe accuracy {m['probe_accuracy_before']:.2f} -> {m['probe_accuracy_after']:.2f} "
                             "after ablation")
            if "side_effect_kl" in m:  # absent when the evaluation steered nothing (strengths = [0])
                extra.append(f"next-token KL at max strength {m['side_effect_kl']:.3f}")
            print(f"  {c['model']}: " + "; ".join(extra))
        print(f"  details: {r['path']}")
    for key, r in results.items():
        if key.startswith("report/"):
            print(f"\nlinearity report {key[7:]}:")
            for line in r["verdicts"]:
                print(f"  {line}")
            print(f"  html: {r['paths']['html']}")
