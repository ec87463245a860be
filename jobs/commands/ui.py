"""``gnomon ui``: the MLflow UI on the local catalog (runs, metrics, curves, registered
directions and their aliases), on 127.0.0.1 unless ``--host`` says otherwise.

It runs ``python -m mlflow ui`` with the home's SQLite store and artifact folder in the
foreground; Ctrl-C stops it. ``--print-command`` prints the command instead.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--tracking-uri", default=None,
                   help="catalog to show (default: $MLFLOW_TRACKING_URI, else sqlite:///<home>/mlflow.db)")
    p.add_argument("--print-command", action="store_true", help="print the command and exit")


def ui_command(tracking_uri: str | None, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for the home's catalog."""
    from catalog.backend import is_remote, local_artifact_root, resolve_tracking_uri
    from pipeline.home import gnomon_home
    from pipeline.types import GnomonError

    home = gnomon_home()
    uri = resolve_tracking_uri(tracking_uri, home)
    if is_remote(uri):
        raise GnomonError(f"{uri} is a tracking server: open it in a browser instead of starting a UI")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]
    root = local_artifact_root(uri, home)
    if root is not None:
        cmd += ["--default-artifact-root", root.as_uri()]
    return cmd


def run(args: argparse.Namespace) -> int:
    import subprocess

    cmd = ui_command(args.tracking_uri, args.host, args.port)
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
