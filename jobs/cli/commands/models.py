"""``gnomon models ls|show``: registered model versions, their fingerprints and lineage."""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli.commands.args import add_options

# lazy: numpy, pyarrow (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_cmd", metavar="SUBCOMMAND", required=True)
    add_options(sub.add_parser("ls", help="list registered versions (id, kind, parent, fingerprint)"), "json")
    s = sub.add_parser("show", help="a version's lineage tree: its ancestors and its descendants")
    s.add_argument("id", help="registered version id (see `gnomon models ls`)")
    add_options(s, "json")


def run(args: argparse.Namespace) -> int:
    from pipeline.fleet import scan_versions

    versions, problems = scan_versions()  # a corrupt lineage file is skipped, not fatal to the others
    if args.models_cmd == "ls":
        for line in problems:
            print(f"gnomon models: skipped {line}", file=sys.stderr)
        if args.json:
            print(json.dumps([v.to_json() for v in versions], indent=2))
            return 0
        if not versions:
            print("no registered versions; build some with `gnomon fleet build`")
        for v in versions:
            step = "" if v.step is None else f"step {v.step}"
            print(f"{v.id:<26} {v.kind:<9} {v.fingerprint}  parent {v.parent or '-':<26} {v.series or ''} {step}")
        return 0
    return _show(args.id, versions, args.json)


def _show(vid: str, versions: list, as_json: bool) -> int:
    from pipeline.fleet import lineage_chain

    chain = lineage_chain(vid)   # the version and its ancestors; a missing parent is an error
    children: dict[str, list[str]] = {}
    for v in versions:
        if v.parent:
            children.setdefault(v.parent, []).append(v.id)
    if as_json:
        print(json.dumps({"id": vid, "lineage": chain[0].to_json(),
                          "ancestors": [c.id for c in chain[1:]],
                          "descendants": _descendants(vid, children)}, indent=2))
        return 0
    me = chain[0]
    print(f"{me.id}: {me.kind}, fingerprint {me.fingerprint}, {me.family} {me.num_layers}x{me.hidden_size}")
    if me.data_sha256:
        print(f"  data sha256 {me.data_sha256}")
    if me.settings:
        print(f"  settings {json.dumps(me.settings, sort_keys=True)}")
    print("lineage (root first):")
    for depth, lin in enumerate(reversed(chain)):
        step = "" if lin.step is None else f" step {lin.step}"
        mark = "  <- this version" if lin.id == vid else ""
        print(f"{'  ' * depth}{lin.id} ({lin.kind}{step}, {lin.fingerprint[:12]}){mark}")
    below = _descendants(vid, children)
    if below:
        print(f"descendants: {', '.join(below)}")
    return 0


def _descendants(vid: str, children: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    todo = list(children.get(vid, []))
    while todo:
        c = todo.pop(0)
        out.append(c)
        todo.extend(children.get(c, []))
    return out
