"""Running ``gnomon run`` on a Ray cluster as a Ray Job, through the Jobs API.

The Jobs API (the head's dashboard, ``http://HEAD:8265``) runs a shell command as the job's
driver on the head and keeps its status and logs, so a laptop or a CronJob can submit a
fleet run and walk away. What travels with the job (its *runtime environment*):

- ``working_dir``: a fresh folder holding only the job spec, uploaded by the client and
  unpacked on the cluster; the driver runs ``gnomon run <spec>`` inside it.
- ``env_vars``: ``GNOMON_HOME`` and ``MLFLOW_TRACKING_URI`` as the submitter sees them
  (``--home``/``--tracking-uri`` or the environment) plus any ``--env KEY=VALUE``. The
  home must be a path every node mounts (see ``infra/ray/README.md``); without one the job
  writes under its temporary working folder, and ``submit`` warns.

Inside the job Ray sets ``RAY_ADDRESS``, so ``gnomon run`` joins the cluster instead of
starting a local Ray. Ray refuses to start a job's driver whose ``ray.init`` names an
environment variable the job names too, so ``ensure_ray`` leaves out its defaults that
the job already sets (``jobs/runtime/ray_runtime.py``).

Address resolution differs from Ray's client on purpose: an explicit ``--address`` wins
over ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS`` (Ray's client lets the environment win),
and only the Jobs API's own ``http(s)://`` address is accepted: from a ``ray://`` or a
scheme-less GCS address Ray looks the dashboard up through a cluster connection that
took 38-47 s to fail (issue 21), so those are refused at once with the address to give.

Every request has a connect and a read timeout (Ray's client sets none, so a server that
accepts and never answers hung ``submit``, ``status`` and ``logs`` forever), and
``--follow`` polls the logs endpoint instead of Ray's websocket tail, which has none either.

>>> job_id = submit("fleet.toml", address="http://head:8265")   # doctest: +SKIP
>>> wait(job_id, address="http://head:8265")                     # doctest: +SKIP
'SUCCEEDED'
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from catalog.backend import short_error
from jobs.runtime.job_files import dataset_files, ship_datasets
from jobs.runtime.spec import load_job
from pipeline.types import GnomonError

# lazy: ray, requests (heavy; imported where used)

__all__ = ["CONNECT_TIMEOUT_S", "DEFAULT_ADDRESS", "FORWARDED_ENV", "READ_TIMEOUT_S", "TERMINAL", "WRITE_TIMEOUT_S",
           "build_job", "check_address", "check_services", "follow_logs", "job_env", "job_logs", "job_status", "resolve_address",
           "submit", "wait"]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
"""The Jobs API of a head started on this machine (``ray start --head``)."""
ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
FORWARDED_ENV = ("GNOMON_HOME", "MLFLOW_TRACKING_URI")
"""Variables the job inherits from the submitter when set (the CLI's ``--home`` sets GNOMON_HOME)."""
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
CONNECT_TIMEOUT_S = 5.0
"""Seconds to open a connection to the Jobs API."""
READ_TIMEOUT_S = 10.0
"""Seconds to wait for the answer to a query (version, status, logs)."""
WRITE_TIMEOUT_S = 60.0
"""Seconds to wait for the answer to a submission (the upload of the job's folder, the job's creation)."""


def resolve_address(address: str | None) -> str:
    """``address``, else ``$RAY_API_SERVER_ADDRESS``, else ``$RAY_ADDRESS``, else the local head.

    ``http(s)://`` names the Jobs API itself; an address without a scheme is a Ray cluster
    (GCS, ``host:6379``) and ``ray://`` a Ray Client address, from which Ray looks the
    dashboard up.
    """
    for value in (address, *(os.environ.get(k) for k in ADDRESS_ENV)):
        if value:
            return value.strip()
    return DEFAULT_ADDRESS


@contextmanager
def _without_address_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in ADDRESS_ENV if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def check_address(addr: str, given: bool = True) -> str:
    """``addr`` if it is a Jobs API (``http(s)://``) address; a one-line error naming it
    and the address to give otherwise (see the module doc)."""
    where = "--address" if given else "$RAY_API_SERVER_ADDRESS/$RAY_ADDRESS"
    if addr.startswith(("http://", "https://")):
        return addr.rstrip("/")
    host = addr.split("://", 1)[-1].rsplit(":", 1)[0] or "HEAD"
    if addr.startswith("ray://"):
        what = "a Ray Client address"
    elif "://" not in addr:
        what = "a Ray cluster (GCS) address"
    else:
        what = f"not a Ray Jobs API address (scheme {addr.split('://', 1)[0]}://)"
    raise GnomonError(f"{where} {addr} is {what}; submit, status and logs need the head's dashboard (Jobs API) "
                      f"address, e.g. --address http://{host}:8265")


def _timeout_reason(e: BaseException, read_s: float) -> str:
    import requests

    if isinstance(e, requests.exceptions.ConnectTimeout):
        return f"timed out: no connection within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(e, requests.exceptions.Timeout):
        return f"timed out: no answer within {read_s:g} s"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _bounded_client_class() -> Any:
    from ray.job_submission import JobSubmissionClient

    class BoundedJobClient(JobSubmissionClient):  # type: ignore[misc]
        """Ray's client with a (connect, read) timeout on every request it sends (all of
        them go through ``_do_request``)."""

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            read = READ_TIMEOUT_S if method.upper() == "GET" else WRITE_TIMEOUT_S
            kwargs.setdefault("timeout", (CONNECT_TIMEOUT_S, read))
            return super()._do_request(method, endpoint, **kwargs)

    return BoundedJobClient


def _client(address: str | None) -> Any:
    addr = check_address(resolve_address(address), given=bool(address))
    try:
        with _without_address_env():  # the address we resolved is the one used
            client = _bounded_client_class()(addr)
    except Exception as e:  # requests' errors and timeouts, Ray's RuntimeError/ValueError
        raise GnomonError(f"no Ray Jobs API at {addr} ({_timeout_reason(e, READ_TIMEOUT_S)}): start the head with "
                          "its dashboard (ray start --head --include-dashboard=true) or pass --address "
                          "http://HEAD:8265") from e
    client.gnomon_address = addr
    return client


def job_env(extra: Sequence[str] = (), tracking_uri: str | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's environment variables: forwarded ones, ``tracking_uri``, then ``KEY=VALUE`` items."""
    environ = os.environ if environ is None else environ
    env = {k: environ[k] for k in FORWARDED_ENV if environ.get(k)}
    if "GNOMON_HOME" in env and "://" not in env["GNOMON_HOME"]:  # a relative home would land in the
        env["GNOMON_HOME"] = str(Path(env["GNOMON_HOME"]).expanduser().absolute())   # job's temporary folder
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum() or key[0].isdigit():
            raise GnomonError(f"--env {item!r}: use KEY=VALUE with a variable name as KEY")
        env[key] = value
    return env


def build_job(spec_path: str | Path, workdir: Path, env: Mapping[str, str],
              executor: str | None = None) -> tuple[str, dict[str, Any]]:
    """Check the spec here, copy it and the concept files it names into ``workdir``; return
    (entrypoint, runtime_env)."""
    spec_path = Path(spec_path)
    job = load_job(spec_path)  # a bad spec fails here, not minutes later on the cluster
    text = ship_datasets(spec_path.read_text(), dataset_files(job, spec_path.parent), workdir)
    (workdir / spec_path.name).write_text(text)
    cmd = ["gnomon", "run", spec_path.name]
    if executor:
        cmd += ["--executor", executor]
    return shlex.join(cmd), {"working_dir": str(workdir), "env_vars": dict(env)}


def submit(spec_path: str | Path, address: str | None = None, env: Mapping[str, str] | None = None,
           executor: str | None = None, submission_id: str | None = None) -> str:
    """Submit ``gnomon run SPEC`` as a Ray Job; returns its submission id."""
    name = load_job(spec_path).name
    env = dict(env) if env is not None else job_env()
    check_services(env)
    client = _client(address)
    workdir = Path(tempfile.mkdtemp(prefix="gnomon-submit-"))
    try:
        entrypoint, runtime_env = build_job(spec_path, workdir, env, executor)
        # The working folder is zipped and uploaded during submit_job: it can go afterwards.
        return str(client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                     submission_id=submission_id or f"gnomon-{name}-{secrets.token_hex(4)}",
                                     metadata={"gnomon_spec": Path(spec_path).name, "gnomon_job": name}))
    except GnomonError:
        raise
    except Exception as e:
        import requests

        if isinstance(e, requests.exceptions.RequestException):
            raise GnomonError(f"submitting {spec_path} to the Ray Jobs API at {client.gnomon_address} failed "
                              f"({_timeout_reason(e, WRITE_TIMEOUT_S)})") from e
        raise GnomonError(f"submitting {spec_path} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
                          ) from e
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def check_services(env: Mapping[str, str]) -> None:
    """Refuse a submission whose tracking server is not answering, before anything is sent:
    the job would otherwise start, collect for minutes and fail at its first registration
    (which leaves the directions pending, not lost, but the run failed)."""
    uri = env.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as e:
            raise GnomonError(f"the tracking server at {uri} is not answering ({short_error(e)}): start it or fix "
                              "--tracking-uri / MLFLOW_TRACKING_URI; nothing was submitted") from None


def _ask(fn: Callable[[], Any], job_id: str, client: Any) -> Any:
    import requests

    try:
        return fn()
    except RuntimeError as e:  # Ray's client: unknown job or a failed request
        raise GnomonError(f"job {job_id}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from e
    except requests.exceptions.RequestException as e:  # refused, reset, timed out
        addr = getattr(client, "gnomon_address", "?")
        raise GnomonError(f"job {job_id}: the Ray Jobs API at {addr} did not answer "
                          f"({_timeout_reason(e, READ_TIMEOUT_S)})") from e


def job_status(job_id: str, address: str | None = None, client: Any = None) -> dict[str, Any]:
    """Status, message, entrypoint and times (ms since the epoch) of one job."""
    client = client or _client(address)
    info = _ask(lambda: client.get_job_info(job_id), job_id, client)
    return {"job_id": job_id, "status": str(getattr(info.status, "value", info.status)),
            "message": info.message, "entrypoint": info.entrypoint, "start_time": info.start_time,
            "end_time": info.end_time, "metadata": dict(info.metadata or {})}


def wait(job_id: str, address: str | None = None, timeout_s: float = 3600, poll_s: float = 2.0,
         on_change: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Poll until the job ends; returns its last status. Raises after ``timeout_s``."""
    client = _client(address)
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        st = job_status(job_id, client=client)
        if on_change is not None and st["status"] != last:
            on_change(st)
        last = st["status"]
        if last in TERMINAL:
            return st
        if time.monotonic() > deadline:
            raise GnomonError(f"job {job_id} still {last} after {timeout_s:g} s; wait longer with --timeout")
        time.sleep(poll_s)


def job_logs(job_id: str, address: str | None = None) -> str:
    client = _client(address)
    return str(_ask(lambda: client.get_job_logs(job_id), job_id, client))


def follow_logs(job_id: str, address: str | None = None, write: Callable[[str], Any] | None = None,
                poll_s: float = 2.0) -> str:
    """Print the job's logs as they grow until it ends; returns its final status.

    Polls status then logs (so the last fetch, after a terminal status, is complete),
    each request bounded by the timeouts: a head that stops answering ends the command
    with a one-line error, where Ray's websocket tail would wait without limit.
    """
    client = _client(address)
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    shown = ""
    while True:
        status = str(job_status(job_id, client=client)["status"])  # an unknown id fails here
        text = str(_ask(lambda: client.get_job_logs(job_id), job_id, client))
        new = text[len(shown):] if text.startswith(shown) else text
        if new:
            write(new)
        shown = text
        if status in TERMINAL:
            return status
        time.sleep(poll_s)
