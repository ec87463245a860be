"""``gnomon catalog``: list, show, alias, export and re-register directions.

The store is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite catalog
under the gnomon home. ``--json`` prints records exactly as :meth:`DirectionRecord.to_json`
writes them, for scripts; the table is for people.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from catalog.backend import resolve_tracking_uri
from catalog.edit import delete_alias, delete_version
from catalog.readers import reader_for
from catalog.refs import SCOPED, parse_ref, registered_name, unscope
from jobs.cli.commands.args import add_options
from jobs.cli.jsonout import dumps
from jobs.stages.refs import check_refs, scope_model
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: numpy, pyarrow, torch (heavy; imported where used); jobs.stages.steer_select (start-up; only select-steer loads a model)

if TYPE_CHECKING:
    from catalog import Catalog, DirectionRecord

# Metrics shown as table columns, in this order, when any listed version has them.
_TABLE_METRICS = ("val_auroc", "val_accuracy", "test_auroc", "test_accuracy")


def add_parser(p: argparse.ArgumentParser) -> None:
    add_options(p, "tracking_uri")
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)

    ls = sub.add_parser("ls", help="list direction versions")
    ls.add_argument("--concept", help="only this concept (default: all)")
    ls.add_argument("--model", help="only directions fitted on this model id (default: all)")
    ls.add_argument("--method", help="only this fitting method (default: all)")
    ls.add_argument("--layer", type=int, help="only this layer (default: all)")
    add_options(ls, json="print a JSON list of records")

    scope = "the model a bare CONCEPT@best / @best-monitor / @best-steer resolves against (default: the only one)"
    show = sub.add_parser("show", help="show one version")
    show.add_argument("ref", help="concept@alias, concept/N, or concept (its latest version)")
    show.add_argument("--model", help=scope)
    add_options(show, json="print the record as JSON")

    alias = sub.add_parser("alias", help="point an alias at a version (best, best-monitor and best-steer "
                           "are set for the version's model)")
    alias.add_argument("ref", help="the version: concept/N or concept@other-alias")
    alias.add_argument("name", help="alias name (letters, digits, '_' or '-')")
    alias.add_argument("--model", help=scope)

    export = sub.add_parser("export", help="copy a direction to a plain safetensors file")
    export.add_argument("ref", help="direction to export (concept@alias, concept/N)")
    export.add_argument("file", help="destination, ending in .safetensors (REF FILE, as export-gguf; "
                        "the older FILE REF order is accepted)")
    export.add_argument("--model", help=scope)

    sel = sub.add_parser("select-steer", help="measure the model's top directions' steering effects and set "
                         "CONCEPT@best-steer for it (what `gnomon fit --no-steer-select` deferred)")
    sel.add_argument("concept", help="concept name (its dataset gives the labels and validation texts)")
    sel.add_argument("--model", required=True, help="the model whose versions are measured")
    sel.add_argument("--dataset", help="the concept's dataset file, when it was fitted from a file rather than "
                     "a shipped or registered concept (its validation texts and labels)")
    add_options(sel, json="print what was measured as JSON")

    sub.add_parser("register-pending", help="retry registrations that failed earlier (each to the tracking "
                   "URI it was meant for; with --tracking-uri, all to that one)")

    rm = sub.add_parser("rm", help="delete a direction version (concept/N) or an alias (concept@alias); "
                        "shows what goes and asks")
    rm.add_argument("ref", help="concept/N deletes that version and every alias on it; concept@alias deletes "
                    "the alias only")
    rm.add_argument("--yes", "-y", action="store_true",
                    help="do not ask (needed when stdin is not a terminal)")


def _reader(tracking_uri: str | None) -> Any:
    """The SQLite catalog or a tracking server read without MLflow (fast), else a :class:`Catalog`."""
    fast = reader_for(resolve_tracking_uri(tracking_uri, gnomon_home()))
    if fast is not None:
        return fast
    from catalog import Catalog

    return Catalog(tracking_uri=tracking_uri)


def run(args: argparse.Namespace) -> int:
    action = args.catalog_command
    checked: list[Any] = []
    if action in ("alias", "export", "rm"):
        ref = args.ref
        if action == "export" and ref.endswith(".safetensors") and not args.file.endswith(".safetensors"):
            ref = args.file  # the older FILE REF order
        checked = check_refs([ref], args.tracking_uri, getattr(args, "model", None))  # refused before MLflow starts
    if action in ("ls", "show"):
        cat: Any = _reader(args.tracking_uri)
    else:
        from catalog import Catalog

        cat = Catalog(tracking_uri=args.tracking_uri)
    _ACTIONS[action](cat, args, checked)
    return 0


def _ls(cat: Any, args: argparse.Namespace, _checked: list[Any]) -> None:
    _print_records(cat.search(concept=args.concept, model=args.model, method=args.method, layer=args.layer),
                   args.json)


def _show(cat: Any, args: argparse.Namespace, _checked: list[Any]) -> None:
    rec = cat.resolve(args.ref, scope_model(args.model))
    print(dumps(rec.to_json(), indent=1) if args.json else _describe(rec))


def _alias(cat: Any, args: argparse.Namespace, _checked: list[Any]) -> None:
    rec = cat.set_alias(args.ref, args.name, scope_model(args.model))
    print(f"{rec.concept}@{args.name} -> {rec.ref}" + (f" (for model {rec.model})" if args.name in SCOPED else ""))


def _export(cat: Any, args: argparse.Namespace, _checked: list[Any]) -> None:
    ref, file = args.ref, args.file
    if ref.endswith(".safetensors") and not file.endswith(".safetensors"):
        ref, file = file, ref  # the older FILE REF order
    print(f"wrote {cat.export(ref, file, scope_model(args.model))}")


def _select_steer(cat: Any, args: argparse.Namespace, _checked: list[Any]) -> None:
    from jobs.stages.steer_select import select_steer_for_concept
    res = select_steer_for_concept(cat, args.concept, scope_model(args.model) or args.model, cat.home,
                                   log=lambda m: print(m, file=sys.stderr, flush=True), dataset=args.dataset)
    if args.json:
        print(dumps(res, indent=1))
    elif res.get("ref"):
        print(f"{args.concept}@best-steer -> {res['ref']} for {args.model} ({res['seconds']:.1f} s)")
    else:
        print(f"no best-steer for {args.model}: {res.get('reason')} ({res.get('seconds', 0):.1f} s)")


def _rm(cat: Any, args: argparse.Namespace, checked: list[Any]) -> None:
    parsed = parse_ref(args.ref)
    if parsed.alias is None and parsed.version is None:
        raise GnomonError(f"{args.ref}: name the version to delete as concept/N (aliases move; versions "
                          "do not), or an alias as concept@alias")
    what = _rm_summary(args.ref, checked[0])
    confirm(f"delete {what}", args.yes)
    if parsed.alias is not None:
        delete_alias(cat, args.ref)
    else:
        delete_version(cat, args.ref)
    print(f"deleted {what}")


_ACTIONS = {"ls": _ls, "show": _show, "alias": _alias, "export": _export, "select-steer": _select_steer,
            "register-pending": lambda cat, args, _c: _register_pending(cat, redirect=args.tracking_uri is not None),
            "rm": _rm}


def _rm_summary(ref: str, rec: DirectionRecord) -> str:
    """What ``catalog rm REF`` removes: an alias, or a version with every alias on it (MLflow
    drops a deleted version's aliases; the per-model ones are not re-pointed: choosing them
    takes a fit's held-out scores, so the user is told to fit again)."""
    alias = parse_ref(ref).alias
    if alias is not None:
        return f"alias {rec.concept}@{alias} (it points at {rec.ref}; the version stays)"
    if not rec.aliases:
        return f"{rec.ref} ({rec.method}, layer {rec.layer}, {rec.model}; no aliases on it)"
    scoped = sorted({u[0] for a in rec.aliases if (u := unscope(a))})
    then = (f"; {rec.model} then has no {', '.join(scoped)} until `gnomon fit` (or `catalog select-steer`) "
            "chooses again" if scoped else "")
    return f"{rec.ref} ({rec.method}, layer {rec.layer}, {rec.model}) and its alias(es) {', '.join(rec.aliases)}{then}"


def confirm(what: str, yes: bool) -> None:
    """Ask ``what? [y/N]`` on a terminal; refuse without a terminal unless ``yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise GnomonError(f"this would {what}; pass --yes to confirm (stdin is not a terminal, so gnomon "
                          "cannot ask)")
    try:
        answer = input(f"{what[0].upper()}{what[1:]}? [y/N] ").strip().lower()
    except EOFError:
        answer = ""
    if answer not in ("y", "yes"):
        raise GnomonError("not confirmed: nothing deleted")


def _register_pending(cat: Catalog, redirect: bool = False) -> None:
    recs = cat.register_pending(redirect=redirect)
    for r in recs:
        print(f"registered {r.ref}")
    print(f"{len(recs)} pending registration(s) completed")


def _fmt(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3f}"


def _print_records(recs: Sequence[DirectionRecord], as_json: bool) -> None:
    if as_json:
        print(dumps([r.to_json() for r in recs], indent=1))
        return
    if not recs:
        print("no directions match")
        return
    metrics = [m for m in _TABLE_METRICS if any(m in r.metrics for r in recs)]
    header = ["REF", "MODEL", "REVISION", "LAYER", "POSITION", "METHOD", *metrics, "ALIASES"]
    rows = [[r.ref, r.model, r.revision, str(r.layer), r.position, r.method,
             *(_fmt(r.metrics.get(m)) for m in metrics), ",".join(r.aliases)] for r in recs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _describe(rec: DirectionRecord) -> str:
    lines = [f"{rec.ref}" + (f"  ({', '.join(rec.aliases)})" if rec.aliases else "")]
    for key in ("model", "revision", "fingerprint", "layer", "position", "method",
                "dataset_hash", "run_id", "source"):
        lines.append(f"  {key:<13} {getattr(rec, key)}")
    lines.append(f"  {'created':<13} {rec.created.isoformat(timespec='seconds')}")

    # what mlflow.artifacts.download_artifacts(...) takes: the version's direction/ folder
    uris = [f"models:/{registered_name(rec.concept)}/{rec.version}"]
    uris += [f"models:/{registered_name(rec.concept)}@{a}" for a in sorted(rec.aliases)]
    lines.append(f"  {'mlflow uri':<13} {'  '.join(uris)}")
    for k, v in sorted(rec.metrics.items()):
        lines.append(f"  {k:<13} {_fmt(v)}")
    for k, t in sorted(rec.tags.items()):
        lines.append(f"  tag {k:<9} {t}")
    return "\n".join(lines)
