"""``gnomon concepts ls|show|add``: list, inspect and register concept datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jobs.cli.commands.args import add_options
from pipeline.atomic import write_text
from pipeline.concepts import CONCEPTS
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list shipped and registered concepts")
    add_options(ls, json="print JSON instead of a table")
    show = sub.add_parser("show", help="describe one concept and print its first rows")
    show.add_argument("name", help="concept name or dataset file")
    add_options(show, json="print JSON instead of text")
    show.add_argument("--head", type=int, default=5, metavar="N", help="rows to print (default 5)")
    add = sub.add_parser("add", help="validate a JSONL/CSV/Parquet file and register it under a name")
    add.add_argument("file", help="dataset file (.jsonl, .csv or .parquet)")
    add.add_argument("--name", required=True, help="concept name (lowercase slug)")
    add.add_argument("--overwrite", action="store_true", help="replace a registered concept of that name")
    add.add_argument("--positive", help="label that should project higher (default: the first label sorted)")
    add.add_argument("--negative", help="the label it is contrasted with (default: the other label)")
    add.add_argument("--words-positive", metavar="W1,W2", help="behavioural readout: words whose next-token "
                     "probability should rise when the concept is steered toward the positive label")
    add.add_argument("--words-negative", metavar="W1,W2", help="... and toward the negative label")
    from pipeline.concepts.behaviour import scorer_names

    add.add_argument("--scorer", choices=scorer_names(), help="behavioural readout: a scorer of generated text")
    add.add_argument("--neutral", metavar="FILE",
                     help="neutral prompts, one a line, copied to <home>/concepts/<name>_neutral.txt "
                     "(needed to evaluate or steer-select the concept)")


def _summary(ds: Any) -> dict[str, Any]:
    return {"name": ds.name, "labels": list(ds.labels), "default_contrast": list(ds.default_contrast),
            "rows": ds.n, "pairs": ds.pairs_count, "label_counts": ds.label_counts(),
            "splits": ds.split_counts(), "content_hash": ds.content_hash, "source": ds.source}


def run(args: argparse.Namespace) -> int:
    return {"ls": _ls, "show": _show, "add": _add}[args.action](args)


def _ls(args: argparse.Namespace) -> int:
    from pipeline import datasets

    summaries = [_summary(ds) for ds in datasets.list_concepts()]
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    header = f"{'name':<16} {'labels (positive first)':<28} {'rows':>5} {'pairs':>5} {'train/val/test':>14}"
    print(header)
    for s in summaries:
        labels = ", ".join(s["default_contrast"] + [x for x in s["labels"] if x not in s["default_contrast"]])
        splits = "/".join(str(s["splits"][k]) for k in ("train", "val", "test"))
        print(f"{s['name']:<16} {labels:<28} {s['rows']:>5} {s['pairs']:>5} {splits:>14}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipeline import datasets

    ds = datasets.load_dataset(args.name)
    summary = _summary(ds)
    head = ds.table.slice(0, max(args.head, 0)).to_pylist()
    if args.json:
        print(json.dumps({**summary, "head": head}, indent=2, ensure_ascii=False))
        return 0

    info = CONCEPTS.get(ds.name)
    print(f"{ds.name}: {info.description if info else 'registered dataset'}")
    for key in ("labels", "default_contrast", "rows", "pairs", "label_counts", "splits", "content_hash", "source"):
        print(f"  {key}: {summary[key]}")
    for row in head:
        content = row["text"] if row["text"] is not None else row["messages"]
        print(f"  [{row['split']:<5}] {row['label']:<10} {row['id']}: {content}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from pipeline import datasets

    words = tuple(tuple(w.strip() for w in (x or "").split(",") if w.strip())
                  for x in (args.words_positive, args.words_negative))
    if (words[0] or words[1] or args.scorer):   # checked before anything is written
        from pipeline.concepts.behaviour import declare_readout

        if bool(words[0]) != bool(words[1]):
            raise GnomonError("give words for both labels (--words-positive and --words-negative), or neither")
    ds = datasets.register_dataset(args.file, args.name, overwrite=args.overwrite, positive=args.positive,
                                   negative=args.negative)
    if words[0] or args.scorer:
        path = declare_readout(ds.name, None, words[0], words[1], args.scorer)
        print(f"behavioural readout: {', '.join(words[0]) or '-'} vs {', '.join(words[1]) or '-'}"
              f"{'; scorer ' + args.scorer if args.scorer else ''} -> {path}")
    else:
        from pipeline.concepts.behaviour import readout

        if readout(ds.name) is None:
            print("no behavioural readout declared: control, interpolation and composition will be reported as "
                  "not measured (add --words-positive/--words-negative or --scorer)")
    pos, neg = ds.default_contrast
    print(f"registered {ds.name}: {ds.n} rows, labels {', '.join(ds.labels)}, {ds.pairs_count} pairs, "
          f"hash {ds.content_hash[:12]} -> {ds.source}")
    how = "as given" if ds.contrast else "first label sorted; change it with --positive/--negative"
    print(f"positive label: {pos!r} (projects higher); negative: {neg!r} ({how})")
    if args.neutral:
        src = Path(args.neutral)
        lines = [x.strip() for x in src.read_text(encoding="utf-8").splitlines() if x.strip()] if src.is_file() else []
        if not lines:
            raise GnomonError(f"--neutral {src}: no such file, or no prompt in it (one prompt a line)")
        dest = gnomon_home() / "concepts" / f"{ds.name}_neutral.txt"
        write_text(dest, "\n".join(lines) + "\n")
        print(f"neutral prompts: {len(lines)} -> {dest}")
    else:
        try:
            datasets.neutral_prompts(ds.name)
        except GnomonError as e:
            print(f"note: {e}")
    return 0
