"""Talking to MLflow: which store, how long to wait for it, and when to give up.

MLflow's HTTP client retries a refused connection 7 times with exponential backoff and
waits 120 s per request by default (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
``MLFLOW_HTTP_REQUEST_TIMEOUT``), so an unreachable server hangs a ``gnomon fit`` for
minutes. gnomon turns MLflow's own retries off and retries whole calls itself, a few
times with exponential backoff, so a dead server is reported within seconds. A value the
user exported for one of those variables wins over ours.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pipeline.atomic import move_into_place
from pipeline.types import GnomonError

# lazy: mlflow, requests, sqlalchemy (heavy; imported where used)

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


# Tables every migrated MLflow 3 database has; alembic_version is stamped last.
_CORE_TABLES = frozenset({"experiments", "runs", "registered_models", "model_versions", "alembic_version"})
LOCK_WAIT_S = 120.0


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for anything else."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _catalog_state(path: Path) -> str:
    """``missing``, ``ready`` (core tables and an alembic stamp), ``empty-partial`` (a
    creation that died midway: no stamp, no runs or models) or ``partial-with-data``."""
    if not path.exists():
        return "missing"
    if not path.is_file():
        raise GnomonError(f"the catalog database {path} is not a file; move it away")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            stamped = "alembic_version" in tables and bool(
                con.execute("SELECT version_num FROM alembic_version").fetchall())
            if _CORE_TABLES <= tables and stamped:
                return "ready"
            rows = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                       for t in ("runs", "registered_models", "model_versions") if t in tables)
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise GnomonError(f"the catalog database {path} is unreadable ({e}); move it away to start "
                          "a new catalog") from None
    return "partial-with-data" if rows else "empty-partial"


class _FileLock:
    """An exclusive ``flock`` on ``path``, waited for at most ``wait_s`` seconds."""

    def __init__(self, path: Path, wait_s: float) -> None:
        self.path, self.wait_s, self.fd = path, wait_s, -1

    def __enter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise GnomonError(f"another process has held {self.path} for {self.wait_s:.0f} s "
                                      "while creating the catalog; try again") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


@contextmanager
def write_lock(uri: str) -> Iterator[None]:
    """Serialise registrations into one SQLite catalog across processes (the check for an
    already registered file and the version creation must not interleave, or two runs
    register the same direction twice). A server serialises nothing: no lock there."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with _FileLock(path.parent / f".{path.name}.lock", LOCK_WAIT_S):
        yield


def ensure_catalog(uri: str) -> None:
    """Make sure a SQLite catalog exists and is complete before MLflow opens it.

    MLflow creates its tables on first use in place, in steps: two processes doing that
    at once, or one killed or out of disk midway, leave a database whose next opening
    fails with "table ... already exists" forever. Here the migrations run into a
    temporary database beside the target, under an exclusive lock file next to it
    (``.<name>.lock``), and the finished file is renamed into place, so the path only
    ever holds a complete catalog. A half-created one (no alembic stamp, no runs or
    models) is moved aside to ``<name>.partial-<time>`` and recreated; one that holds
    data is never touched. Failures (unwritable directory, full disk) are one-line
    errors within seconds, instead of MLflow's minutes of engine retries.
    """
    path = sqlite_path(uri)
    if path is None or _catalog_state(path) == "ready":
        return
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with _FileLock(parent / f".{path.name}.lock", LOCK_WAIT_S):
            state = _catalog_state(path)
            if state == "ready":
                return
            if state == "partial-with-data":
                raise GnomonError(f"the catalog database {path} is incomplete but holds runs or models; "
                                  "back it up and run `mlflow db upgrade` on it")
            for stale in parent.glob(f".{path.name}.*.creating"):
                stale.unlink(missing_ok=True)  # left by a creator that died (we hold the lock)
            if state == "empty-partial":
                move_into_place(path, path.with_name(f"{path.name}.partial-{time.strftime('%Y%m%dT%H%M%S')}"))
            tmp = parent / f".{path.name}.{uuid.uuid4().hex}.creating"
            try:
                _migrate(tmp)
                move_into_place(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:
        raise GnomonError(f"cannot create the catalog database {path}: {e.strerror or e}") from None


def _migrate(path: Path) -> None:
    """Run MLflow's migrations into a new SQLite file at ``path`` (tracking and registry
    share one schema)."""
    import sqlalchemy.exc
    from mlflow.store.db.utils import (
        _initialize_tables,
        _verify_schema,
        create_sqlalchemy_engine,
    )

    engine = create_sqlalchemy_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
        _verify_schema(engine)
    except sqlalchemy.exc.OperationalError as e:
        reason = str(e.orig) if getattr(e, "orig", None) is not None else short_error(e)
        raise GnomonError(f"cannot create the catalog database at {path.parent}: {reason}") from None
    finally:
        engine.dispose()
