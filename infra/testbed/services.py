"""The catalog's services on one machine, without containers (issue 23): PostgreSQL, an
S3-compatible server (moto's, the one the fsspec and pyarrow projects test against, served by
gunicorn: :mod:`s3_server`) and ``mlflow server`` with the PostgreSQL backend store and a
bucket of that S3 server as its artifact destination. The same pieces run on the testbed's
head host (:mod:`netns_cluster`); here they listen on 127.0.0.1.

    python infra/testbed/services.py up   --root /tmp/gnomon-services     # prints the endpoints
    python infra/testbed/services.py down --root /tmp/gnomon-services

``up`` prints the variables a gnomon client needs (``MLFLOW_TRACKING_URI``,
``AWS_ENDPOINT_URL``, the test credentials, and ``GNOMON_HOME=s3://gnomon/home``). Every
process is recorded with its id in ``<root>/pids.json`` as it starts; ``down`` (also from
another shell, after a crash) kills each one's process tree by id. Needs PostgreSQL's
binaries (``apt-get install postgresql``) and the ``cluster`` extra. For a deployment, the
same three services are ``infra/mlflow/docker-compose.yml`` (PostgreSQL, MinIO, MLflow).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CREDENTIALS", "Services", "kill_tree", "needs", "sh", "tree", "wait_port"]

PG_BIN = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
"""moto accepts any credentials; these are the ones every test and client here uses."""


def pg(name: str) -> str | None:
    for d in PG_BIN:
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    return shutil.which(name)


def needs() -> str | None:
    """``None`` when this machine can run the services, else why not (one line)."""
    if not pg("initdb") or not pg("postgres"):
        return "needs PostgreSQL's binaries (apt-get install postgresql)"
    for mod in ("moto", "gunicorn", "psycopg2", "boto3"):
        try:
            __import__(mod)
        except ImportError:
            return f"needs {mod}: pip install -e '.[cluster]'"
    return None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), check=False, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return r


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant (from /proc), children first."""
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out: list[int] = []

    def walk(q: int) -> None:
        for c in kids.get(q, []):
            walk(c)
        out.append(q)

    walk(pid)
    return out


def kill_tree(pid: int, grace: float = 5.0) -> None:
    procs = tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for q in procs:
            try:
                os.kill(q, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(Path(f"/proc/{q}").exists() for q in procs):
            time.sleep(0.1)


def wait_port(ip: str, port: int, what: str, timeout: float = 90.0, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.is_file() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {ip}:{port}\n{tail}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} is not listening on {ip}:{port} after {timeout:.0f} s")


@dataclass
class Services:
    """``with Services(root) as s:`` starts PostgreSQL, S3 and mlflow server, and always stops them."""

    root: Path
    python: str = sys.executable
    pg_port: int = 5432
    s3_port: int = 5555
    mlflow_port: int = 5000
    bucket: str = "gnomon"
    pids: dict[str, int] = field(default_factory=dict)
    prefix_name: str = "gnomon"
    """Names this instance's PostgreSQL folder in /tmp (the testbed's is ``gnb``)."""

    __test__ = False   # not a pytest test class

    # -- where things are (the testbed overrides these) ---------------------------------------
    def ip(self, host: str) -> str:
        return "127.0.0.1"

    def prefix(self, host: str, private: bool = False) -> list[str]:
        """The command prefix that runs a process on ``host``: nothing on this machine."""
        return []

    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's data and socket: a directory the ``postgres`` user can reach (the
        root may sit under a private temp folder), named after the root, removed by down()."""
        import hashlib

        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return Path("/tmp") / f"{self.prefix_name}-pg-{digest}"

    @property
    def pg_subnet(self) -> str | None:
        """Besides loopback, the network PostgreSQL accepts logins from (the testbed's bridge)."""
        return None

    @property
    def endpoints(self) -> dict[str, str]:
        h = self.ip("head")
        return {"tracking_uri": f"http://{h}:{self.mlflow_port}", "s3_endpoint": f"http://{h}:{self.s3_port}",
                "postgres": f"postgresql+psycopg2://gnomon:gnomon@{h}:{self.pg_port}/mlflow",
                "bucket": self.bucket, "store": f"s3://{self.bucket}/home"}

    def client_env(self) -> dict[str, str]:
        """What a gnomon client (or worker) needs to use these services."""
        ep = self.endpoints
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": ep["s3_endpoint"], "MLFLOW_S3_ENDPOINT_URL": ep["s3_endpoint"],
                "MLFLOW_TRACKING_URI": ep["tracking_uri"], "GNOMON_HOME": ep["store"]}

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> Services:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> dict[str, str]:
        why = needs()
        if why:
            raise RuntimeError(f"cannot start the services: {why}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.start_services()
        (self.root / "endpoints.json").write_text(json.dumps(self.endpoints, indent=1))
        return self.endpoints

    def start_services(self) -> None:
        self._postgres()
        self._s3()
        self._mlflow()

    def recorded(self) -> dict[str, int]:
        rec = self.root / "pids.json"
        return dict(self.pids) | (json.loads(rec.read_text()) if rec.is_file() else {})

    def down(self) -> None:
        """Kill every recorded process tree by id (the Ray head last), then forget them."""
        for _name, pid in sorted(self.recorded().items(), key=lambda kv: kv[0].startswith("ray-head")):
            kill_tree(int(pid))
        shutil.rmtree(self.pg_dir, ignore_errors=True)
        self.pids.clear()
        (self.root / "pids.json").unlink(missing_ok=True)

    def start(self, name: str, host: str, argv: Sequence[str], env: dict[str, str] | None = None,
              private: bool = False, user: str | None = None) -> subprocess.Popen:
        """Start ``argv`` on ``host``, logging to ``logs/<name>.log``; its id is recorded first."""
        cmd = self.prefix(host, private) + (["runuser", "-u", user, "--"] if user else [])
        log = self.root / "logs" / f"{name}.log"
        proc = subprocess.Popen([*cmd, *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, **CREDENTIALS, **(env or {})}, start_new_session=True)
        self.pids[name] = proc.pid
        (self.root / "pids.json").write_text(json.dumps(self.pids))   # before waiting: down() finds it
        return proc

    # -- the services --------------------------------------------------------------------------
    def _psql(self, sql: str, db: str = "postgres") -> subprocess.CompletedProcess[str]:
        return sh(*self.prefix("head"), "env", "PGPASSWORD=gnomon", pg("psql") or "psql", "-h", self.ip("head"),
                  "-p", str(self.pg_port), "-U", "gnomon", "-d", db, "-tAc", sql, check=False)

    def _postgres(self) -> None:
        data, sock = self.pg_dir / "data", self.pg_dir / "sock"
        user = "postgres" if os.geteuid() == 0 else None   # PostgreSQL refuses to run as root
        self.pg_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for d in (data, sock):
            d.mkdir(exist_ok=True)
            if user:
                shutil.chown(d, user, user)
        if not (data / "PG_VERSION").is_file():
            pw = self.pg_dir / "pgpass"
            pw.write_text("gnomon\n")
            if user:
                shutil.chown(pw, user, user)
            sh(*(["runuser", "-u", user, "--"] if user else []), pg("initdb") or "initdb", "-D", str(data),
               "-U", "gnomon", "--auth=md5", f"--pwfile={pw}")
            pw.unlink()
            if self.pg_subnet:
                with (data / "pg_hba.conf").open("a") as f:   # the other hosts reach it over the bridge
                    f.write(f"host all all {self.pg_subnet} md5\n")
        proc = self.start("postgres", "head", [pg("postgres") or "postgres", "-D", str(data), "-k", str(sock),
                                               "-h", self.ip("head"), "-p", str(self.pg_port)], user=user)
        wait_port(self.ip("head"), self.pg_port, "postgres", proc=proc, log=self.root / "logs" / "postgres.log")
        for _ in range(50):   # accepting TCP is not yet accepting logins
            r = self._psql("SELECT 1 FROM pg_database WHERE datname='mlflow'")
            if r.returncode == 0:
                break
            time.sleep(0.2)
        if r.stdout.strip() != "1":
            self._psql("CREATE DATABASE mlflow")

    def _s3(self) -> None:
        from s3_server import argv   # moto's S3, kept alive (its doc)

        proc = self.start("s3", "head", argv(self.ip("head"), self.s3_port, self.python))
        wait_port(self.ip("head"), self.s3_port, "the S3 server", proc=proc, log=self.root / "logs" / "s3.log")
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoints["s3_endpoint"], aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                          region_name=CREDENTIALS["AWS_DEFAULT_REGION"])
        s3.create_bucket(Bucket=self.bucket)

    def _mlflow(self) -> None:
        mlflow = str(Path(self.python).with_name("mlflow"))
        ep = self.endpoints
        proc = self.start("mlflow", "head", [mlflow, "server", "--backend-store-uri", ep["postgres"],
                                             "--artifacts-destination", f"s3://{self.bucket}/mlartifacts",
                                             "--host", self.ip("head"), "--port", str(self.mlflow_port),
                                             "--workers", "1"],
                          env={"MLFLOW_S3_ENDPOINT_URL": ep["s3_endpoint"], "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_port(self.ip("head"), self.mlflow_port, "mlflow server", timeout=180, proc=proc,
                  log=self.root / "logs" / "mlflow.log")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--root", default="/tmp/gnomon-services", help="data, logs and pids (default %(default)s)")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--s3-port", type=int, default=5555)
    ap.add_argument("--mlflow-port", type=int, default=5000)
    args = ap.parse_args()
    s = Services(Path(args.root), pg_port=args.pg_port, s3_port=args.s3_port, mlflow_port=args.mlflow_port)
    if args.action == "down":
        s.down()
        print("services down")
        return 0
    try:
        s.up()
    except BaseException:
        s.down()
        raise
    print("\n".join(f"export {k}={v}" for k, v in s.client_env().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
