"""``gnomon plot CONCEPT``: per-layer figures and an HTML summary of a concept's fits.

Reads the layer sweeps a fit wrote (``<home>/sweeps/<concept>/<model>-<revision>.json``),
the catalog's aliases (read without MLflow when the catalog is the local SQLite file) and
the latest evaluation (``<home>/evals/<concept>/``), and writes into ``--out``:
``<model>-<position>.png`` (AUROC and d' per layer, one line per method, the selected
layers starred) and ``index.html``, which a browser opens directly (images are relative
files beside it; no network, no script needed to read it).
"""

from __future__ import annotations

import argparse
import html
import json
import math
from pathlib import Path
from typing import Any

from jobs.cli.commands.args import add_options
from jobs.cli.commands.catalog import _reader
from pipeline.atomic import write_text
from pipeline.home import gnomon_home
from pipeline.plots import sweep_figure
from pipeline.types import GnomonError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("concept", help="concept whose fits to plot (see `gnomon catalog ls`)")
    p.add_argument("--out", default=None, help="output directory (default: <home>/reports/<concept>)")
    add_options(p, "tracking_uri")


def run(args: argparse.Namespace) -> int:
    home = gnomon_home()
    sweeps = sorted((home / "sweeps" / args.concept).glob("*.json"))
    if not sweeps:
        raise GnomonError(f"no layer sweep for {args.concept!r} under {home / 'sweeps'}; run "
                          f"`gnomon fit --dataset {args.concept} ...` first")
    out = Path(args.out) if args.out else home / "reports" / args.concept
    path = build_report(args.concept, sweeps, out, _records(args.concept, args.tracking_uri), _latest_eval(home, args.concept))
    print(f"wrote {path} ({len(list(out.glob('*.png')))} figures); open it in a browser")
    return 0


def _records(concept: str, tracking_uri: str | None) -> list[Any]:
    try:
        return list(_reader(tracking_uri).search(concept=concept))
    except Exception:  # noqa: BLE001 - the report is still useful without the catalog
        return []


def _latest_eval(home: Path, concept: str) -> dict[str, Any] | None:
    files = sorted((home / "evals" / concept).glob("*.json"))
    return json.loads(files[-1].read_text()) if files else None


def build_report(concept: str, sweep_files: list[Path], out: Path, records: list[Any],
                 evaluation: dict[str, Any] | None) -> Path:
    """Write the figures and ``index.html`` into ``out``; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for f in sweep_files:
        sweep = json.loads(f.read_text())
        model = f.stem
        positions = sorted({k.split("/", 1)[1] for k in sweep})
        figs = []
        for pos in positions:
            png = sweep_figure(sweep, pos, f"{concept} on {model}", out / f"{model}-{pos}.png")
            figs.append(f'<figure><img src="{html.escape(png.name)}" alt="{html.escape(concept)} {pos} curves" '
                        f'width="700"><figcaption>position <b>{html.escape(pos)}</b>: validation AUROC and d′ '
                        'per layer; ★ the layer selected for each method</figcaption></figure>')
        rows = []
        for key, e in sorted(sweep.items()):
            method, pos = key.split("/", 1)
            c = e["curve"]
            i = c["layer"].index(e["best_layer"]) if e["best_layer"] in c["layer"] else None

            def at(name: str, i: int | None = i, c: dict[str, Any] = c) -> str:
                v = c.get(name, [None] * len(c["layer"]))[i] if i is not None else None
                return "-" if v is None or math.isnan(v) else f"{v:.3f}"

            rows.append(f"<tr><td>{html.escape(method)}</td><td>{html.escape(pos)}</td><td>{e['best_layer']}</td>"
                        f"<td>{at('val_auroc')}</td><td>{at('val_dprime')}</td><td>{at('test_auroc')}</td>"
                        f"<td>{at('test_accuracy')}</td><td>{'yes' if e.get('eligible', True) else 'no'}</td></tr>")
        sections.append(f"<h2>{html.escape(model)}</h2>{''.join(figs)}<table><tr><th>method</th><th>position</th>"
                        "<th>selected layer</th><th>val AUROC</th><th>val d′</th><th>test AUROC</th>"
                        f"<th>test accuracy</th><th>eligible</th></tr>{''.join(rows)}</table>")
    alias_rows = [f"<tr><td>{html.escape(a)}</td><td>{html.escape(r.ref)}</td><td>{html.escape(r.model)}</td>"
                  f"<td>{r.layer}</td><td>{html.escape(r.method)}/{html.escape(r.position)}</td></tr>"
                  for r in records for a in r.aliases]
    aliases = ("<h2>Aliases</h2><table><tr><th>alias</th><th>version</th><th>model</th><th>layer</th>"
               f"<th>method/position</th></tr>{''.join(alias_rows)}</table>") if alias_rows else ""
    ev = _eval_html(evaluation) if evaluation else ""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gnomon: {html.escape(concept)}</title>
<style>body{{font:14px/1.4 system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#f3f3f3}}figure{{margin:1em 0}}figcaption{{color:#555;font-size:12px}}</style></head>
<body><h1>{html.escape(concept)}</h1>
<p>Layer sweeps of every fitted method. Validation picks the layer (never layer 0, never at
chance; see the README's "What best means"); test is reported, never used to choose.</p>
{aliases}{''.join(sections)}{ev}
<p id="status">images not checked</p>
<script>window.addEventListener("load", () => {{ const ok = [...document.images].filter(i => i.naturalWidth > 0);
document.getElementById("status").textContent = "images " + ok.length + "/" + document.images.length; }});</script>
</body></html>
"""
    return write_text(out / "index.html", doc)


def _eval_html(ev: dict[str, Any]) -> str:
    rows = []
    for c in ev.get("checkpoints", []):
        m = c.get("metrics", {})
        cells = [c.get("model", "?"), *(f"{m[k]:.3f}" if k in m else "-" for k in
                                        ("steer_spearman", "side_effect_kl", "monitor_auroc", "probe_accuracy_before",
                                         "probe_accuracy_after"))]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    return (f"<h2>Latest evaluation ({html.escape(str(ev.get('ref')))}, layer {ev.get('layer')})</h2><table><tr>"
            "<th>checkpoint</th><th>steering Spearman</th><th>next-token KL</th><th>monitor AUROC</th>"
            f"<th>probe acc. before</th><th>after ablation</th></tr>{''.join(rows)}</table>")
