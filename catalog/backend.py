"""Talking to MLflow: which store, how long to wait for it, and when to give up.

MLflow's HTTP client retries a refused connection 7 times with exponential backoff and
waits 120 s per request by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``), so an unreachable server hangs a ``gnomon fit`` for
minutes. gnomon turns MLflow's own retries off and retries whole calls itself, a few
times with exponential backoff, so a dead server is reported within seconds. A value the
user exported for one of those variables wins over ours.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# MLflow error codes that mean "the request was understood and refused": retrying
# cannot help. Everything else (connection errors, timeouts, 5xx, a locked SQLite
# database) is treated as the store not answering.
_PERMANENT = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST", "NOT_FOUND",
    "ENDPOINT_NOT_FOUND", "FEATURE_DISABLED", "RESOURCE_CONFLICT"})


class Unreachable(Exception):
    """The tracking store did not answer after every try (internal; the catalog rewords it)."""

    def __init__(self, tries: int, last: BaseException) -> None:
        super().__init__(f"{tries} tries, last error: {short_error(last)}")
        self.tries = tries
        self.last = last


def short_error(e: BaseException) -> str:
    """One short line: the OS reason when there is one (``Connection refused``), not
    urllib3's paragraph around it."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if m := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return m.group(1).strip()
    if "timed out" in text or "timeout" in text.lower():
        return "timed out"
    return text if len(text) <= 160 else text[:157] + "..."


def default_tracking_uri(home: Path) -> str:
    """SQLite under the gnomon home (MLflow 3 refuses the plain file store)."""
    return f"sqlite:///{home / 'mlflow.db'}"


def resolve_tracking_uri(tracking_uri: str | None, home: Path) -> str:
    """``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite under ``home``."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home)
    if "://" not in uri:  # a bare path: treat it as a SQLite file, never MLflow's file store
        uri = f"sqlite:///{Path(uri).expanduser().resolve()}"
    return uri


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def local_artifact_root(uri: str, home: Path) -> Path | None:
    """Where runs logged to a database store keep their files; None for a server, which
    decides itself (``--artifacts-destination``). A SQLite store keeps them beside the
    database file so the two travel together; otherwise ``<home>/mlartifacts``."""
    if is_remote(uri):
        return None
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
    return home / "mlartifacts"


def is_transient(e: BaseException) -> bool:
    """True when retrying ``e`` might succeed (the store did not answer)."""
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        return e.error_code not in _PERMANENT
    import requests
    import sqlalchemy.exc

    return isinstance(e, (requests.exceptions.RequestException, sqlalchemy.exc.OperationalError,
                          ConnectionError, TimeoutError))


@contextmanager
def bounded_http(uri: str, timeout_s: float) -> Iterator[None]:
    """Temporarily bound MLflow's HTTP retries and timeout (and hide its progress bars).

    Environment variables are process-wide: do not share one process between threads
    that talk to different servers with different bounds.
    """
    wanted = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if is_remote(uri):
        wanted |= {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout_s)))}
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def call_with_retries(fn: Callable[..., T], *args: Any, tries: int, backoff_s: float,
                      **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, retried on transient errors: waits ``backoff_s * 2**i``
    between tries; raises :class:`Unreachable` after ``tries`` failures, and any
    permanent error at once."""
    for i in range(tries):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e):
                raise
            if i == tries - 1:
                raise Unreachable(tries, e) from e
            time.sleep(backoff_s * 2 ** i)
    raise AssertionError("unreachable")  # tries >= 1 is enforced by the caller
