"""The ``gnomon`` command line.

Each subcommand lives in ``jobs/cli/commands/<name>.py`` and exposes ``add_parser(sub)`` and
``run(args) -> int``. Modules are imported only when their command runs, so
``gnomon --help`` stays fast (no torch, ray or mlflow import).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from jobs.cli.commands.args import add_options
from jobs.runtime.output import line_buffered, plain_environment, quiet_libraries
from jobs.runtime.ray_runtime import leave_ray, ray_joined
from pipeline.types import GnomonError

# lazy: importlib.metadata (start-up; only --version reads it)

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("jobs.cli.commands.collect", "record residual-stream activations into the Parquet store"),
    "concepts": ("jobs.cli.commands.concepts", "list, show and add concept datasets"),
    "sql": ("jobs.cli.commands.sql", "run a read-only DuckDB query over the store"),
    "fit": ("jobs.cli.commands.fit", "fit directions for a concept and register them in the catalog"),
    "catalog": ("jobs.cli.commands.catalog", "query the direction catalog"),
    "compare": ("jobs.cli.commands.compare", "compare directions across checkpoints, layers and methods"),
    "evaluate": ("jobs.cli.commands.evaluate", "measure steering, side effects, monitor and erasure across checkpoints"),
    "evals": ("jobs.cli.commands.evals", "list evaluation results logged per model version (evaluate --fleet)"),
    "evasion": ("jobs.cli.commands.evasion", "train against a monitor: does the concept leave the linear subspace?"),
    "drift": ("jobs.cli.commands.drift", "predict fine-tuning behaviour change from activation shift; screen data"),
    "run": ("jobs.cli.commands.run", "run a TOML job spec (collect, fit, evaluate) with resume"),
    "steer": ("jobs.cli.commands.steer", "generate with and without a direction applied"),
    "monitor": ("jobs.cli.commands.monitor", "score generated tokens with directions (lie detector)"),
    "serve": ("jobs.cli.commands.serve", "serve OpenAI-compatible completions that steer and monitor per request"),
    "condition": ("jobs.cli.commands.condition", "fit a direction's firing threshold for conditional steering (steer --when)"),
    "orthogonalize": ("jobs.cli.commands.orthogonalize", "bake a direction's removal into the weights"),
    "export-gguf": ("jobs.cli.commands.export_gguf", "write directions as a llama.cpp control vector"),
    "submit": ("jobs.cli.commands.submit", "submit a job spec to a Ray cluster as a Ray Job; prints the job id"),
    "status": ("jobs.cli.commands.status", "state of a submitted job (--wait: until it ends)"),
    "logs": ("jobs.cli.commands.logs", "output of a submitted job (--follow: stream it)"),
    "report": ("jobs.cli.commands.report", "measure how linear a concept is: probes, erasure, control, composition, verdict"),
    "fleet": ("jobs.cli.commands.fleet", "build a fleet of model versions (fine-tunes, from scratch, numeric, edited) and list fleets"),
    "models": ("jobs.cli.commands.models", "list registered model versions and show their lineage"),
    "demo": ("jobs.cli.commands.demo", "run the end-to-end demo on the bundled model"),
    "store": ("jobs.cli.commands.store", "list the activation store and remove orphaned shards"),
    "plot": ("jobs.cli.commands.plot", "per-layer curve figures and an HTML summary of a concept's fits"),
    "ui": ("jobs.cli.commands.ui", "start the MLflow UI on the local catalog"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("gnomon")
    except PackageNotFoundError:
        return "0+unknown"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for: importlib.metadata costs ~30 ms of every
    command's start-up otherwise."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="show gnomon's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"gnomon {_version()}")
        parser.exit()


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnomon",
        description="Find linear directions in neural networks, version them, and use them.")

    add_options(parser, "home")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others register a stub parser.
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_) in COMMANDS.items():
        if name == chosen:
            mod = importlib.import_module(module)
            p = sub.add_parser(name, help=help_, description=help_)
            mod.add_parser(p)
            p.set_defaults(_run=mod.run)
        else:
            sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None or not hasattr(args, "_run"):
        parser.print_help()
        return 0 if args.command is None else 2
    if args.home:
        os.environ["GNOMON_HOME"] = args.home

    line_buffered()   # a pipe or log file gets each line as it is printed
    plain_environment()
    quiet_libraries()

    joined = ray_joined()   # a caller already connected (a notebook, a test session) stays so
    try:
        return int(args._run(args) or 0)
    except GnomonError as e:
        # Ray re-raises a worker's GnomonError as a RayTaskError subclass carrying the
        # original in ``cause``: print the one-line message, not the remote traceback.
        cause = getattr(e, "cause", None)
        msg = str(cause if isinstance(cause, GnomonError) else e).strip().splitlines()
        print(f"gnomon {args.command}: error: {msg[-1] if msg else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gnomon {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        # a read-only or full disk, a path that is not a directory...: what the OS said,
        # about which file (completed shards and saved directions are written atomically)
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"gnomon {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("GNOMON_DEBUG"):
            raise
        text = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"gnomon {args.command}: internal error: {type(e).__name__}: {text} "
              "(set GNOMON_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        if not joined:
            leave_ray()

