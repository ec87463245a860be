"""``gnomon ui``: the MLflow UI on the local catalog (runs, metrics, curves, registered
directions and their aliases), on 127.0.0.1 unless ``--host`` says otherwise.

It runs ``python -m mlflow ui`` with the home's SQLite store and artifact folder in its
own process group, prints the URL only once the page answers (MLflow needs from seconds to
minutes on a loaded machine, and a URL printed at once pointed at nothing), and on Ctrl-C,
SIGTERM or any exit stops that whole group: ``mlflow ui`` starts a server process and
workers that outlived it before (issue 21). MLflow's own output goes to
``<home>/logs/mlflow-ui.log`` (to the terminal with ``GNOMON_VERBOSE=1``).
``--print-command`` prints the command instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any, BinaryIO

from catalog.backend import ensure_catalog, is_remote, local_artifact_root, resolve_tracking_uri
from jobs.cli.commands.args import add_options
from pipeline.home import gnomon_home
from pipeline.types import GnomonError

START_TIMEOUT_S = 600.0
"""How long to wait for the page before giving up (MLflow took ~2 min under load)."""


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=5000, help="port to listen on (default: 5000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default: 127.0.0.1, this machine only)")
    add_options(p, "tracking_uri")
    p.add_argument("--print-command", action="store_true", help="print the command and exit")
    p.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, metavar="SECONDS",
                   help=f"give up if the page does not answer within this long (default: {START_TIMEOUT_S:g})")


def ui_command(tracking_uri: str | None, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for the home's catalog."""
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


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM the child's whole process group (it leads its own), SIGKILL what remains."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(pgid, 0)   # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _on_sigterm(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # unwinds into the finally that stops the group


def run(args: argparse.Namespace) -> int:
    cmd = ui_command(args.tracking_uri, args.host, args.port)
    if args.print_command:
        print(shlex.join(cmd))
        return 0
    if not 0 < args.port < 65536:
        raise GnomonError(f"--port {args.port} is not a port number (1-65535)")
    if not _port_free(args.host, args.port):
        raise GnomonError(f"port {args.port} on {args.host} is in use; choose another with --port")
    probe = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url, health = f"http://{args.host}:{args.port}", f"http://{probe}:{args.port}/health"

    # a fresh catalog is created the way gnomon creates it (migrated aside, renamed into place),
    # not in place by mlflow ui while the page is already being asked for
    ensure_catalog(cmd[cmd.index("--backend-store-uri") + 1])
    log_path = gnomon_home() / "logs" / "mlflow-ui.log"
    log: BinaryIO | None = None
    if not os.environ.get("GNOMON_VERBOSE"):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in the finally below
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=True)
    try:
        print(f"starting the MLflow UI on {url} ...", file=sys.stderr, flush=True)
        deadline = time.monotonic() + args.start_timeout
        while not _answers(health):
            if proc.poll() is not None:
                where = f"; its output is in {log_path}" if log else ""
                raise GnomonError(f"mlflow ui exited with code {proc.returncode} before answering{where}")
            if time.monotonic() > deadline:
                raise GnomonError(f"the MLflow UI did not answer within {args.start_timeout:g} s"
                                  + (f"; its output is in {log_path}" if log else ""))
            time.sleep(0.5)
        print(f"MLflow UI on {url} (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)
        signal.signal(signal.SIGTERM, old)
        if log is not None:
            log.close()
