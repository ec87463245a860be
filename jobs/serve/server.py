"""Building the server for a model, and running it (in the foreground for the CLI, or on a
background thread for tests and notebooks)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from jobs.serve.resolve import Resolver
from jobs.serve.worker import Batcher
from pipeline.types import GnomonError

# lazy: fastapi, uvicorn (heavy; imported where used)


@dataclass
class Running:
    """A server started by :func:`start`: its URL, and :meth:`stop`."""

    url: str
    server: Any
    thread: threading.Thread
    batcher: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.batcher.close()


def build(lm: Any, model_name: str, *, tracking_uri: str | None = None, token: str | None = None,
          max_batch: int = 16, fluency: bool = True) -> tuple[Any, Any]:
    """The FastAPI app and its batcher for a loaded model."""
    from jobs.serve.app import create_app
    batcher = Batcher(lm, max_batch)
    resolver = Resolver(lm, tracking_uri, model_name, fluency=fluency, exclusive=batcher.exclusive)
    return create_app(lm, resolver, batcher, model_name=model_name, token=token), batcher


def config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=5)


def start(app: Any, batcher: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> Running:
    """Serve ``app`` on a background thread; ``port=0`` picks a free port (see ``url``)."""
    import uvicorn

    server = uvicorn.Server(config(app, host, port))
    thread = threading.Thread(target=server.run, name="gnomon-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GnomonError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return Running(f"http://{host}:{bound}", server, thread, batcher)
