"""``gnomon serve``: load a model once and serve OpenAI-compatible completions that steer and
monitor with catalog directions per request (see :mod:`jobs.serve.app` for the fields).

Binds to 127.0.0.1 unless ``--host`` says otherwise; ``--token`` (or ``$GNOMON_SERVE_TOKEN``)
requires ``Authorization: Bearer <token>`` on every endpoint but ``/health``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from jobs.cli.commands.args import add_options
from jobs.runtime.output import step
from jobs.serve.server import build, config
from pipeline.models import load_model
from pipeline.types import GnomonError

# lazy: uvicorn (heavy; imported where used)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="the model to serve (default: smollm2, the bundled one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--token", default=None, help="bearer token clients must send (default: $GNOMON_SERVE_TOKEN, "
                   "else none)")
    p.add_argument("--max-batch", type=int, default=16, help="requests' rows generated together (default: 16)")
    p.add_argument("--no-fluency-check", action="store_true",
                   help="accept any steering strength (default: refuse one past the direction's fluency bound)")
    add_options(p, "tracking_uri")


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise GnomonError(f"--port must be 0-65535, got {args.port}")
    if args.max_batch < 1:
        raise GnomonError(f"--max-batch must be at least 1, got {args.max_batch}")

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise GnomonError(f"gnomon serve needs {' and '.join(missing)}: pip install 'gnomon[serve]'")
    token = args.token or os.environ.get("GNOMON_SERVE_TOKEN") or None
    with step(f"load {args.model}"):
        lm = load_model(args.model)

    app, batcher = build(lm, args.model, tracking_uri=args.tracking_uri, token=token, max_batch=args.max_batch,
                         fluency=not args.no_fluency_check)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"gnomon serve: warning: listening on {args.host} without --token: anyone who can reach it can "
              "use the model", file=sys.stderr)
    print(f"gnomon serve: {args.model} on http://{args.host}:{args.port}/v1 "
          f"({'bearer token required' if token else 'no token'}); Ctrl-C stops it", flush=True)
    import uvicorn

    try:
        uvicorn.Server(config(app, args.host, args.port)).run()
    finally:
        batcher.close()
    return 0
