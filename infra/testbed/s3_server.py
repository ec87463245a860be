"""The testbed's S3-compatible server: moto's S3 application alone, served by gunicorn.

    python infra/testbed/s3_server.py --host 127.0.0.1 --port 5555

It is moto's own S3 implementation (the one the fsspec and pyarrow projects test against),
started differently from ``python -m moto.server`` for two reasons, both measured with 1,800
small PUT / HEAD / GET requests from pyarrow's S3 client on this 2-core machine (2026-12-03):

- ``moto.server`` finds the service of every request anew, which lists moto's package folder
  (~10% of its CPU under py-spy). Here every request goes to the S3 application (``/moto-api``
  still reaches moto's own). 6.7-7.5 CPU-s became 4.2-4.7.
- werkzeug's development server closes the connection after every response, so each request
  is a new TCP connection and a new thread on both sides. gunicorn's threaded worker keeps
  connections alive: 2.9-4.2 CPU-s, and 3.6-5.2 s of wall time against 10.4-10.6 s.

A real object store's CPU is not on the cluster's nodes at all; on the testbed this server
shares the cores with the workers, so what it costs per request is taken from them.

One worker process (moto keeps the buckets in its memory), threads for concurrent requests,
no worker timeout (a restarted worker would lose every object). Each request is logged on
standard output in the shape moto's server logs it (``HOST - - [TIME] "METHOD PATH HTTP/1.1"
STATUS -``; :data:`REQUEST_LINE` parses it), which ``bench/cluster.py`` and the storage tests
count.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

THREADS = 16
"""Requests served at once (an idle kept-alive connection holds no thread)."""
ACCESS_LOG = '%(h)s - - %(t)s "%(r)s" %(s)s -'
REQUEST_LINE = re.compile(r'^(\S+) - - \[[^\]]*\] "(\w+) (\S+) HTTP')
"""One logged request (:data:`ACCESS_LOG`): groups client address, method, path."""


def argv(host: str, port: int, python: str = sys.executable) -> list[str]:
    """The command that starts this server on ``host:port``."""
    return [python, str(Path(__file__).resolve()), "--host", host, "--port", str(port)]


def s3_app() -> Any:
    """moto's dispatcher with every request but ``/moto-api`` sent to its S3 application."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class S3Only(DomainDispatcherApplication):
        def get_application(self, environ: dict[str, Any]) -> Any:
            if environ.get("PATH_INFO", "").startswith("/moto-api"):
                return super().get_application(environ)
            with self.lock:
                if "s3" not in self.app_instances:
                    self.app_instances["s3"] = self.create_app("s3")
                return self.app_instances["s3"]

    return S3Only(create_backend_app)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5555)
    args = ap.parse_args(argv)
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in {"bind": f"{args.host}:{args.port}", "workers": 1, "worker_class": "gthread",
                               "threads": THREADS, "keepalive": 60, "timeout": 0, "graceful_timeout": 2,
                               "accesslog": "-", "access_log_format": ACCESS_LOG}.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return s3_app()

    Server().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
