"""``gnomon compare REF REF [...]``: how directions (e.g. one concept across checkpoints) relate."""

from __future__ import annotations

import argparse
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="*", help="catalog references or .safetensors files")
    p.add_argument("--concept", default=None, help="compare every registered version of this concept")
    p.add_argument("--method", default=None, help="with --concept: only this method")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for catalog REFs (default: $MLFLOW_TRACKING_URI, else SQLite in the home)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def run(args: argparse.Namespace) -> int:
    from pipeline.compare import compare
    from pipeline.types import GnomonError

    from jobs.evaluate_job import resolve_direction

    refs = list(args.refs)
    if args.concept:
        from catalog import Catalog

        recs = Catalog(tracking_uri=args.tracking_uri).search(concept=args.concept, method=args.method)
        refs += [r.ref for r in recs]
    if len(refs) < 2:
        raise GnomonError("give at least two references (or --concept with two or more versions)")
    dirs = [resolve_direction(r, args.tracking_uri) for r in refs]
    from pipeline.compare import label

    cmp = compare(dirs, [f"{r} ({label(d)})" for r, d in zip(refs, dirs)])
    if args.json:
        print(json.dumps(cmp.to_json(), indent=2))
    else:
        print("cosine similarity of unit vectors:")
        print(cmp.table())
    return 0
