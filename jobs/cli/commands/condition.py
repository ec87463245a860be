"""``gnomon condition``: conditions for conditional steering (CAST, arXiv:2409.05907).

``gnomon condition fit REF`` reads the direction REF on its concept's validation prompts of
each label (as the monitor reads it: ``last`` or ``mean``), picks the threshold and comparison
with the best F1 at telling the positive prompts from the negative ones, and registers them as
tags on REF's catalog version (``condition.threshold``, ``condition.comparison``,
``condition.f1``, ... with the dataset, its hash, the split, the model's fingerprint and the
code version), plus an MLflow run ``condition-fit`` holding every reading. Then
``gnomon steer BEHAVIOUR --when REF "prompt"`` applies BEHAVIOUR only when REF fires on the prompt.
"""

from __future__ import annotations

import argparse
import json
from typing import Literal

from jobs.cli.commands.args import add_options
from jobs.cli.commands.steer import add_source_args, model_for
from jobs.runtime.output import step
from jobs.stages.conditions import threshold_tags
from jobs.stages.refs import check_refs, is_direction_file, say_resolved
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="condition_command", metavar="ACTION", required=True)
    fit = sub.add_parser("fit", help="choose a direction's firing threshold on validation prompts (best F1) "
                         "and register it in the catalog")
    fit.add_argument("ref", metavar="REF", help="the condition direction: a catalog ref (concept@best, concept/N)")
    fit.add_argument("--dataset", help="the concept dataset (name or file) whose prompts decide the threshold "
                     "(default: the direction's own dataset)")
    fit.add_argument("--split", default="val", choices=("train", "val", "test"),
                     help="split whose prompts are read (default: val)")
    add_options(fit, json="print the fitted rule as JSON")
    add_source_args(fit)


def run(args: argparse.Namespace) -> int:
    return _fit(args)


def _fit(args: argparse.Namespace) -> int:
    if is_direction_file(args.ref):
        raise GnomonError(f"{args.ref} is a file; a condition is registered in the catalog: give a catalog REF "
                          "(concept@alias or concept/N)")
    (rec,) = check_refs([args.ref], args.tracking_uri, args.model)

    say_resolved(args.ref, rec)
    from catalog import Catalog
    from pipeline.datasets import load_dataset
    from pipeline.monitor import score_texts
    from pipeline.steer.conditional import fit_threshold

    catalog = Catalog(tracking_uri=args.tracking_uri)
    d = catalog.load_record(rec)
    prov = d.provenance
    ds = load_dataset(args.dataset or prov.dataset or prov.concept)
    positive, negative = (prov.positive, prov.negative) if prov.positive and prov.negative else ds.default_contrast
    missing = [lab for lab in (positive, negative) if lab not in ds.labels]
    if missing:
        raise GnomonError(f"dataset {ds.name} has no label {missing[0]!r} (labels: {', '.join(ds.labels)}); "
                          "pass the condition's dataset with --dataset")
    with step(f"load {args.model or prov.model_id}"):
        lm = model_for([d], args.model)
    pos = ds.split_texts(args.split, positive, lm.tokenizer)
    neg = ds.split_texts(args.split, negative, lm.tokenizer)
    if not pos or not neg:
        raise GnomonError(f"the {args.split} split of {ds.name} has {len(pos)} {positive!r} and {len(neg)} "
                          f"{negative!r} prompts; both are needed (choose another --split)")
    position: Literal["last", "mean"] = "mean" if prov.position == "mean" else "last"
    with step(f"read {rec.ref} on {len(pos) + len(neg)} {args.split} prompts"):
        sp = score_texts(lm, d, pos, position, force=args.force)
        sn = score_texts(lm, d, neg, position, force=args.force)
    thr = fit_threshold(sp, sn)
    tags = threshold_tags(thr, dataset=ds.name, dataset_hash=ds.content_hash, split=args.split,
                          position=position, model=lm.model_id, fingerprint=lm.fingerprint)
    run_id = catalog.log_evidence(rec.concept, "condition-fit", {
        "ref": rec.ref, "positive": positive, "negative": negative, **tags,
        "readings_positive": [float(x) for x in sp], "readings_negative": [float(x) for x in sn]})
    for k, v in {**tags, "condition.evidence_run": run_id}.items():
        catalog.tag(rec.ref, k, v)
    out = {"ref": rec.ref, "concept": rec.concept, "model": lm.model_id, "layer": d.layer, "position": position,
           "positive": positive, "negative": negative, "threshold": thr.threshold, "comparison": thr.comparison,
           "f1": thr.f1, "precision": thr.precision, "recall": thr.recall, "n_pos": thr.n_pos,
           "n_neg": thr.n_neg, "split": args.split, "dataset": ds.name, "evidence_run": run_id}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{rec.ref} fires when its {position} reading {thr.comparison} {thr.threshold:.4g}: "
              f"F1 {thr.f1:.3f} (precision {thr.precision:.3f}, recall {thr.recall:.3f}) on {thr.n_pos} "
              f"{positive!r} vs {thr.n_neg} {negative!r} {args.split} prompts of {ds.name}; registered on "
              f"{rec.ref} (tags condition.*)")
    return 0
