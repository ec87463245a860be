"""``gnomon collect``: record residual-stream activations into the Parquet store."""

from __future__ import annotations

import argparse
import json

from jobs.cli.commands.args import add_executor_args, add_options, parse_layers, parse_positions
from jobs.runtime.engine import make_executor
from jobs.runtime.output import progress_wanted
from jobs.stages.collect_job import CollectSpec, run_collection

__all__ = ["add_parser", "run"]


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="smollm2 (bundled), tiny:<family>, a HF directory, a .gguf file, or a registered model id")
    p.add_argument("--dataset", required=True, help="a concept name (see `gnomon concepts ls`) or a JSONL/CSV/Parquet file")
    p.add_argument("--revision", default="main", help="model revision label stored with the rows (default: main)")
    p.add_argument("--name", default=None, help="dataset name in the store (default: the dataset's name)")
    add_options(p, "layers", "positions")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="storage dtype (default: float16)")
    p.add_argument("--model-dtype", default="auto", help="compute dtype: auto, float32, float16, bfloat16 (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, help="most texts in one forward pass (default: 256)")
    p.add_argument("--token-budget", type=int, default=None,
                   help="most padded tokens (texts x longest) in one forward pass; short texts are packed, long "
                        "ones run apart (default: 512 per CPU thread, so batches stay in cache; 16384 on GPU)")

    p.add_argument("--shard-size", type=int, default=CollectSpec.shard_size,
                   help=f"examples per stored shard, the unit of resume (default: {CollectSpec.shard_size})")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")
    add_options(p, json="print the summary as JSON")
    add_executor_args(p)


def run(args: argparse.Namespace) -> int:
    spec = CollectSpec.of(args.model, args.dataset, revision=args.revision, model_dtype=args.model_dtype,
                          trust_remote_code=args.trust_remote_code, dataset_name=args.name,
                          layers=parse_layers(args.layers), positions=parse_positions(args.positions),
                          dtype=args.dtype, batch_size=args.batch_size, token_budget=args.token_budget,
                          shard_size=args.shard_size)
    summary = run_collection(spec, make_executor(args.executor, args.ray_address, args.workers),
                             show_progress=progress_wanted(args.json))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        mb = summary["bytes"] / 2**20
        if not summary["written_files"] and summary["executor"] == "none":
            print(f"nothing to collect: all {summary['skipped_files']} files of {summary['dataset']} are stored "
                  f"(no model loaded); {summary['seconds']:.1f} s")
        else:
            before = summary["seconds"] - summary["collect_seconds"]
            print(f"collected {summary['examples']} examples ({summary['tokens']:,} tokens) on "
                  f"{summary['executor_choice']}: wrote {summary['written_files']} files, {summary['rows']:,} rows, "
                  f"{mb:.1f} MiB; skipped {summary['skipped_files']} complete files; {summary['seconds']:.1f} s "
                  f"({summary['collect_seconds']:.1f} s collecting, {before:.1f} s before it: checks, planning "
                  "and the one-off model load, which converts a GGUF's weights the first time)")
        print(f"store: {summary['store']}")
    return 0
