"""A multi-host cluster on one Linux machine: network namespaces as hosts (issue 23).

Each host is a network namespace with its own address on a private subnet, joined to the
other hosts by a veth link to a bridge in the root namespace (the machine itself is
``<subnet>.254`` on that bridge, so a test or a user's shell can reach every host):

- ``head`` (``<subnet>.1``) runs the Ray head, PostgreSQL, an S3-compatible server (moto's,
  the one the fsspec and pyarrow projects test against, under gunicorn: ``s3_server.py``) and
  ``mlflow server`` with the
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
the ``cluster`` extra (``moto[server]``, ``gunicorn``, ``psycopg2-binary``, ``boto3``).

    sudo python infra/testbed/netns_cluster.py up --root /tmp/gnomon-testbed     # prints the endpoints
    sudo python infra/testbed/netns_cluster.py down --root /tmp/gnomon-testbed
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from services import CREDENTIALS, Services, needs, sh, tree, wait_port

__all__ = ["Testbed", "TestbedBusy", "available"]


class TestbedBusy(RuntimeError):
    """The namespaces or the bridge of this prefix already exist (another testbed is up)."""

    __test__ = False

REPO = Path(__file__).resolve().parents[2]


def available() -> str | None:
    """``None`` when this machine can build the testbed, else why not (one line)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip") or not shutil.which("unshare"):
        return "needs iproute2's `ip` and util-linux's `unshare`"
    return needs()


@dataclass
class Testbed(Services):
    """``with Testbed(root) as tb:`` brings the hosts and services up and always down."""

    workers: int = 2
    subnet: str = "10.77.0"
    prefix_name: str = "gnb"
    home: str = "/work/gnomon-testbed-home"
    """The head's gnomon home: a directory on the head, an empty tmpfs on every worker."""
    worker_cpus: int = 1
    warm: bool = True
    """Worker nodes keep warm workers (``jobs.runtime.ray_runtime.WARM_NODE_ENV``: started with
    the raylet, torch and transformers imported), as ``infra/ray`` starts them."""
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    """The cluster's Ray auth token, given to every node and client (as a real cluster
    distributes the head's token), never read from or written to ``~/.ray``."""

    _owns_network: bool = field(default=False, repr=False)
    """Set once this instance created the bridge: ``down`` removes only what it made."""

    __test__ = False   # not a pytest test class

    @property
    def ray_tmp(self) -> Path:
        """The head's Ray temp dir: short (Ray's socket paths must stay under 108 bytes), named
        after the root, removed by down()."""
        return self.pg_dir.with_name(self.pg_dir.name.replace("-pg-", "-ray-"))

    @property
    def ray_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "GNOMON_HOME": self.home}

    @property
    def node_env(self) -> dict[str, str]:
        """A node's environment: gnomon installed (its ``bin`` on PATH, as on a real node, so
        a job's ``gnomon run`` entrypoint is found), the object store's credentials."""
        path = f"{Path(self.python).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**self.ray_env, **self.client_env(), "GNOMON_HOME": self.home, "PATH": path}

    # -- addresses ---------------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return ["head", *[f"w{i}" for i in range(1, self.workers + 1)]]

    def ip(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    def ns(self, host: str) -> str:
        return f"{self.prefix_name}-{host}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix_name}br0"

    @property
    def pg_subnet(self) -> str | None:
        return f"{self.subnet}.0/24"

    @property
    def endpoints(self) -> dict[str, str]:
        h = self.ip("head")
        return {**super().endpoints, "ray": f"{h}:6379", "dashboard": f"http://{h}:8265", "home": self.home}

    def prefix(self, host: str, private: bool = False) -> list[str]:
        """Run on ``host``: its network namespace (``private``: also a mount namespace of its
        own with empty tmpfs on /tmp and the gnomon home)."""
        return ["ip", "netns", "exec", self.ns(host), *(self._private() if private else [])]

    # -- lifecycle ---------------------------------------------------------------------------
    def up(self) -> dict[str, str]:
        why = available()
        if why:
            raise RuntimeError(f"cannot build the testbed: {why}")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self._network()
        self.start_services()
        self._ray()
        (self.root / "endpoints.json").write_text(json.dumps(self.endpoints, indent=1))
        (self.root / "ray_auth_token").write_text(self.token)
        os.chmod(self.root / "ray_auth_token", 0o600)
        return self.endpoints

    def down(self, force: bool = False) -> None:
        """Kill every recorded process tree by id, then remove the namespaces and the bridge
        this instance made (``force``: whatever has its names, for ``down`` from the shell
        after a crash)."""
        super().down()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self._owns_network or force:
            for host in self.hosts:
                sh("ip", "netns", "del", self.ns(host), check=False)
            sh("ip", "link", "del", self.bridge, check=False)
            self._owns_network = False
        # `ray start --head` records its address for `ray.init("auto")` in the machine's
        # /tmp/ray; killed, it leaves it behind, and any later local Ray would try to join a
        # cluster that is gone.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip() == self.endpoints["ray"]:
            current.unlink(missing_ok=True)

    def kill_node(self, host: str) -> list[int]:
        """``kill -9`` every process of ``host``'s Ray node (its raylet and workers), as a
        machine that dies would: no graceful shutdown. Returns the ids killed."""
        procs = tree(int(self.recorded()[f"ray-{host}"]))
        for q in procs:
            try:
                os.kill(q, 9)
            except ProcessLookupError:
                pass
        return procs

    # -- pieces ------------------------------------------------------------------------------
    def _network(self) -> None:
        taken = [n for n in [self.bridge, *map(self.ns, self.hosts)]
                 if sh("ip", "link", "show", n, check=False).returncode == 0 or n in sh("ip", "netns", "list").stdout.split()]
        if taken:   # another testbed's: never build over it, never tear it down
            raise TestbedBusy(f"{', '.join(taken)} exist: another testbed with prefix {self.prefix_name!r} is up "
                              f"(pick another prefix_name and subnet, or take that one down)")
        self._owns_network = True
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, host in enumerate(self.hosts):
            ns, a, b = self.ns(host), f"{self.prefix_name}{i}a", f"{self.prefix_name}{i}b"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            sh("ip", "link", "set", a, "master", self.bridge)
            sh("ip", "link", "set", a, "up")
            sh("ip", "link", "set", b, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.ip(host)}/24", "dev", b)
            sh("ip", "-n", ns, "link", "set", b, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

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

    def _ray(self) -> None:
        ray = str(Path(self.python).with_name("ray"))
        head = self.ip("head")
        Path(self.home).mkdir(parents=True, exist_ok=True)
        common = ["--block", "--disable-usage-stats", "--object-store-memory", str(200 * 1024 * 1024)]
        proc = self.start("ray-head", "head", [ray, "start", "--head", "--node-ip-address", head, "--port", "6379",
                                               "--dashboard-host", head, "--dashboard-port", "8265",
                                               "--num-cpus", "0", "--temp-dir", str(self.ray_tmp), *common],
                          # its own temp dir: `ray start --head` records its address in the temp dir's
                          # ray_current_cluster, and in /tmp/ray a local ray.init() on this machine
                          # would find it and join this cluster
                          env=self.node_env)
        wait_port(head, 6379, "the Ray head", proc=proc, log=self.root / "logs" / "ray-head.log")
        for host in self.hosts[1:]:
            self.start_worker(host)
        self._wait_nodes(1 + len(self.hosts[1:]))

    def start_worker(self, host: str) -> subprocess.Popen:
        """(Re)start ``host``'s Ray worker node, in its private mount namespace."""
        ray = str(Path(self.python).with_name("ray"))
        return self.start(f"ray-{host}", host, [ray, "start", "--address", f"{self.ip('head')}:6379",
                                                "--node-ip-address", self.ip(host), "--num-cpus", str(self.worker_cpus),
                                                "--resources", json.dumps({f"host_{host}": 1}), "--block",
                                                "--disable-usage-stats", "--object-store-memory",
                                                str(200 * 1024 * 1024)],
                          env={**self.node_env, **self._warm_env(), "GNOMON_CACHE": "/tmp/gnomon-cache"},   # own disk
                          private=True)

    def _warm_env(self) -> dict[str, str]:
        if not self.warm:
            return {}
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from jobs.runtime.ray_runtime import WARM_NODE_ENV

        return dict(WARM_NODE_ENV)

    def _wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.time() + timeout
        got = ""
        while time.time() < deadline:
            r = sh(*self.prefix("head"), "env", *[f"{k}={v}" for k, v in self.ray_env.items()],
                   self.python, "-c", code, self.endpoints["ray"], check=False)
            got = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:]
            if got == str(n):
                return
            time.sleep(2)
        raise RuntimeError(f"the Ray cluster did not reach {n} alive nodes in {timeout:.0f} s (last: {got})")

    def run(self, host: str, argv: Sequence[str], private: bool = False, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` to completion (a client on that machine)."""
        return subprocess.run([*self.prefix(host, private), *argv], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **CREDENTIALS, **self.ray_env, **(env or {})})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--root", default="/tmp/gnomon-testbed", help="state, logs and pids (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tb = Testbed(Path(args.root), workers=args.workers)
    if args.action == "down":
        tb.down(force=True)
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
