"""A multi-host cluster on one Linux machine: network namespaces as hosts (issue 23).

Each host is a network namespace with its own address on a private subnet, joined to the
other hosts by a veth link to a bridge in the root namespace (the machine itself is
``<subnet>.254`` on that bridge, so a test or a user's shell can reach every host):

- ``head`` (``<subnet>.1``) runs the Ray head, PostgreSQL, an S3-compatible server (moto's,
  the one the fsspec and pyarrow projects test against) and ``mlflow server`` with the
  PostgreSQL backend store and the S3 bucket as its artifact destination;
- ``w1``, ``w2``, ... (``<subnet>.2``...) each run a Ray worker node (``ray start --address``)
  in a **mount namespace of its own**: ``/tmp`` and the head's gnomon home are empty tmpfs
  there, so code that writes a local path on one host and expects another to read it fails,
  as it would on separate machines. Workers share only the network, the object store and
  the tracking server.

Every process is recorded with its process id in ``<root>/pids.json`` as it starts, so
``down`` (also from another process, after a crash) kills each one's whole process tree by
id, then deletes the namespaces and the bridge; it never runs ``ray stop`` (which would kill
every Ray process on the machine). Needs root, ``ip`` (iproute2), PostgreSQL's binaries and
the ``cluster`` extra (``moto[server]``, ``psycopg2-binary``, ``boto3``).

    sudo python infra/testbed/netns_cluster.py up --root /tmp/gnomon-testbed     # prints the endpoints
    sudo python infra/testbed/netns_cluster.py down --root /tmp/gnomon-testbed
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Testbed", "available"]

REPO = Path(__file__).resolve().parents[2]
PG_BIN = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def available() -> str | None:
    """``None`` when this machine can build the testbed, else why not (one line)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs iproute2's `ip` and util-linux's `unshare`"
    if not _pg("initdb"):
        return "needs PostgreSQL's binaries (apt-get install postgresql)"
    for mod in ("moto", "psycopg2", "boto3"):
        try:
            __import__(mod)
        except ImportError:
            return f"needs {mod}: pip install -e '.[cluster]'"
    return None


def _pg(name: str) -> str | None:
    for d in PG_BIN:
        if (Path(d) / name).is_file():
            return str(Path(d) / name)
    return None


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), check=False, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return r


def _tree(pid: int) -> list[int]:
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


def _kill_tree(pid: int, grace: float = 5.0) -> None:
    procs = _tree(pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for q in procs:
            try:
                os.kill(q, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(Path(f"/proc/{q}").exists() for q in procs):
            time.sleep(0.1)


def _wait_port(ip: str, port: int, what: str, timeout: float = 90.0, proc: subprocess.Popen | None = None,
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
class Testbed:
    """``with Testbed(root) as tb:`` brings the hosts and services up and always down."""

    root: Path
    workers: int = 2
    subnet: str = "10.77.0"
    prefix: str = "gnb"
    home: str = "/work/gnomon-testbed-home"
    """The head's gnomon home: a directory on the head, an empty tmpfs on every worker."""
    worker_cpus: int = 1
    python: str = sys.executable
    pids: dict[str, int] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    """The cluster's Ray auth token, given to every node and client (as a real cluster
    distributes the head's token), never read from or written to ``~/.ray``."""

    __test__ = False   # not a pytest test class

    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's data and socket: a directory the ``postgres`` user can reach (the
        root may sit under a private temp folder), named after the root, removed by down()."""
        import hashlib

        return Path("/tmp") / f"{self.prefix}-pg-{hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]}"

    @property
    def ray_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "GNOMON_HOME": self.home}

    # -- addresses ---------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return ["head", *[f"w{i}" for i in range(1, self.workers + 1)]]

    def ip(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    @property
    def endpoints(self) -> dict[str, str]:
        h = self.ip("head")
        return {"ray": f"{h}:6379", "dashboard": f"http://{h}:8265", "tracking_uri": f"http://{h}:5000",
                "s3_endpoint": f"http://{h}:5555", "postgres": f"postgresql+psycopg2://gnomon:gnomon@{h}:5432/mlflow",
                "bucket": "gnomon", "home": self.home}

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Testbed:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> dict[str, str]:
        why = available()
        if why:
            raise RuntimeError(f"cannot build the testbed: {why}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self._network()
        self._postgres()
        self._s3()
        self._mlflow()
        self._ray()
        (self.root / "endpoints.json").write_text(json.dumps(self.endpoints, indent=1))
        (self.root / "ray_auth_token").write_text(self.token)
        os.chmod(self.root / "ray_auth_token", 0o600)
        return self.endpoints

    def down(self) -> None:
        """Kill every recorded process tree by id, then remove the namespaces and the bridge."""
        rec = self.root / "pids.json"
        pids = dict(self.pids)
        if rec.is_file():
            pids |= json.loads(rec.read_text())
        for _name, pid in sorted(pids.items(), key=lambda kv: kv[0].startswith("ray-head")):   # workers first
            _kill_tree(int(pid))
        for host in self.hosts:
            _sh("ip", "netns", "del", self.ns(host), check=False)
        _sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.pg_dir, ignore_errors=True)
        # `ray start --head` records its address for `ray.init("auto")` in the machine's
        # /tmp/ray; killed, it leaves it behind, and any later local Ray would try to join a
        # cluster that is gone.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip() == self.endpoints["ray"]:
            current.unlink(missing_ok=True)
        self.pids.clear()
        rec.unlink(missing_ok=True)

    # -- pieces ------------------------------------------------------------------------------
    def _network(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for i, host in enumerate(self.hosts):
            ns, a, b = self.ns(host), f"{self.prefix}{i}a", f"{self.prefix}{i}b"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            _sh("ip", "link", "set", a, "master", self.bridge)
            _sh("ip", "link", "set", a, "up")
            _sh("ip", "link", "set", b, "netns", ns)
            _sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", b)
            _sh("ip", "-n", ns, "link", "set", b, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _start(self, name: str, host: str, argv: Sequence[str], env: dict[str, str] | None = None,
               private: bool = False, user: str | None = None) -> subprocess.Popen:
        """Start ``argv`` on ``host`` (its network namespace; ``private``: its own mount
        namespace with empty tmpfs on /tmp and the gnomon home), logging to ``logs/<name>.log``."""
        cmd = ["ip", "netns", "exec", self.ns(host)]
        if private:
            cmd += self._private()
        if user:
            cmd += ["runuser", "-u", user, "--"]
        log = self.root / "logs" / f"{name}.log"
        proc = subprocess.Popen([*cmd, *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                env={**os.environ, **CREDENTIALS, **(env or {})}, start_new_session=True)
        self.pids[name] = proc.pid
        (self.root / "pids.json").write_text(json.dumps(self.pids))   # before waiting: down() finds it
        return proc

    def _private(self) -> list[str]:
        """A command prefix: a mount namespace of its own where /tmp and the gnomon home are
        empty tmpfs. The interpreter's prefix and the checkout are bound back in when they sit
        under /tmp (a clone in /tmp must still run its own virtualenv there)."""
        keep = sorted({str(Path(p).resolve()) for p in (sys.prefix, REPO) if str(Path(p).resolve()).startswith("/tmp/")})
        stage = "/run/gnomon-testbed-keep"
        lines = ["set -e", f'mkdir -p {stage}', f'mount -t tmpfs tmpfs {stage}']
        for i, p in enumerate(keep):
            lines += [f'mkdir -p {stage}/{i}', f'mount --bind "{p}" {stage}/{i}']
        lines.append("mount -t tmpfs tmpfs /tmp")
        for i, p in enumerate(keep):
            lines += [f'mkdir -p "{p}"', f'mount --bind {stage}/{i} "{p}"']
        lines += [f'mkdir -p "{self.home}"', f'mount -t tmpfs tmpfs "{self.home}"', 'exec "$@"']
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines), "sh"]

    def _postgres(self) -> None:
        data, sock = self.pg_dir / "data", self.pg_dir / "sock"
        self.pg_dir.mkdir(mode=0o755, exist_ok=True)
        for d in (data, sock):
            d.mkdir(exist_ok=True)
            shutil.chown(d, "postgres", "postgres")
        if not (data / "PG_VERSION").is_file():
            pw = self.pg_dir / "pgpass"
            pw.write_text("gnomon\n")
            shutil.chown(pw, "postgres", "postgres")
            _sh("runuser", "-u", "postgres", "--", _pg("initdb") or "initdb", "-D", str(data), "-U", "gnomon",
                "--auth=md5", f"--pwfile={pw}")
            pw.unlink()
            with (data / "pg_hba.conf").open("a") as f:   # the other hosts reach it over the bridge
                f.write(f"host all all {self.subnet}.0/24 md5\n")
        proc = self._start("postgres", "head", [_pg("postgres") or "postgres", "-D", str(data), "-k", str(sock),
                                                "-h", self.ip("head"), "-p", "5432"], user="postgres")
        _wait_port(self.ip("head"), 5432, "postgres", proc=proc, log=self.root / "logs" / "postgres.log")
        for _ in range(50):   # accepting TCP is not yet accepting logins
            r = _sh("ip", "netns", "exec", self.ns("head"), "env", "PGPASSWORD=gnomon", "psql", "-h", self.ip("head"),
                    "-U", "gnomon", "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname='mlflow'",
                    check=False)
            if r.returncode == 0:
                break
            time.sleep(0.2)
        if r.stdout.strip() != "1":
            _sh("ip", "netns", "exec", self.ns("head"), "env", "PGPASSWORD=gnomon", "psql", "-h", self.ip("head"),
                "-U", "gnomon", "-d", "postgres", "-c", "CREATE DATABASE mlflow")

    def _s3(self) -> None:
        proc = self._start("s3", "head", [self.python, "-m", "moto.server", "-H", self.ip("head"), "-p", "5555"])
        _wait_port(self.ip("head"), 5555, "the S3 server", proc=proc, log=self.root / "logs" / "s3.log")
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoints["s3_endpoint"], **_boto_creds())
        s3.create_bucket(Bucket=self.endpoints["bucket"])

    def _mlflow(self) -> None:
        mlflow = str(Path(self.python).with_name("mlflow"))
        ep = self.endpoints
        proc = self._start("mlflow", "head", [mlflow, "server", "--backend-store-uri", ep["postgres"],
                                              "--artifacts-destination", f"s3://{ep['bucket']}/mlartifacts",
                                              "--host", self.ip("head"), "--port", "5000", "--workers", "1"],
                           env={"MLFLOW_S3_ENDPOINT_URL": ep["s3_endpoint"]})
        _wait_port(self.ip("head"), 5000, "mlflow server", timeout=180, proc=proc, log=self.root / "logs" / "mlflow.log")

    def _ray(self) -> None:
        ray = str(Path(self.python).with_name("ray"))
        head = self.ip("head")
        Path(self.home).mkdir(parents=True, exist_ok=True)
        common = ["--block", "--disable-usage-stats", "--object-store-memory", str(200 * 1024 * 1024)]
        proc = self._start("ray-head", "head", [ray, "start", "--head", "--node-ip-address", head, "--port", "6379",
                                                "--dashboard-host", head, "--dashboard-port", "8265",
                                                "--num-cpus", "0", *common],
                           env=self.ray_env)
        _wait_port(head, 6379, "the Ray head", proc=proc, log=self.root / "logs" / "ray-head.log")
        for host in self.hosts[1:]:
            self._start(f"ray-{host}", host, [ray, "start", "--address", f"{head}:6379", "--node-ip-address",
                                              self.ip(host), "--num-cpus", str(self.worker_cpus),
                                              "--resources", json.dumps({f"host_{host}": 1}), *common],
                        env=self.ray_env, private=True)
        self._wait_nodes(1 + len(self.hosts[1:]))

    def _wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.time() + timeout
        got = ""
        while time.time() < deadline:
            r = _sh("ip", "netns", "exec", self.ns("head"), "env", *[f"{k}={v}" for k, v in self.ray_env.items()],
                    self.python, "-c", code, self.endpoints["ray"], check=False)
            got = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
            if got == str(n):
                return
            time.sleep(2)
        raise RuntimeError(f"the Ray cluster did not reach {n} alive nodes in {timeout:.0f} s (last: {got})")

    def run(self, host: str, argv: Sequence[str], private: bool = False, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` to completion (a client on that machine)."""
        cmd = ["ip", "netns", "exec", self.ns(host)]
        if private:
            cmd += self._private()
        return subprocess.run([*cmd, *argv], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **CREDENTIALS, **self.ray_env, **(env or {})})


def _boto_creds() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], "region_name": CREDENTIALS["AWS_DEFAULT_REGION"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--root", default="/tmp/gnomon-testbed", help="state, logs and pids (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tb = Testbed(Path(args.root), workers=args.workers)
    if args.action == "down":
        tb.down()
        print("testbed down")
        return 0
    try:
        print(json.dumps(tb.up(), indent=1))
    except BaseException:
        tb.down()
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
