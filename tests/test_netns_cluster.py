"""Several hosts on one machine (issue 23): network namespaces joined by a bridge, a Ray head
with PostgreSQL, an S3 server and ``mlflow server`` on one, Ray worker nodes on two others that
cannot see the head's files. What must hold for gnomon to run there: the workers join the
head over the network, see neither the head's gnomon home nor each other's /tmp, reach the
object store and the tracking server (whose runs land in PostgreSQL and whose artifacts land
in the bucket), and every process and namespace is gone afterwards, by process id.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "testbed"))
from netns_cluster import Testbed, available  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(available() is not None, reason=f"testbed: {available()}")]

DRIVER = textwrap.dedent("""
    import json, os, socket, sys
    import ray
    ep = json.loads(sys.argv[1])
    ray.init(address=ep["ray"], logging_level="ERROR")

    @ray.remote(num_cpus=1)
    def probe(host):
        import boto3, mlflow
        home = ep["home"]
        out = {"host": host, "ip": ray.util.get_node_ip_address(),
               "sees_head_marker": os.path.exists(os.path.join(home, "marker-from-head")),
               "home_entries": sorted(os.listdir(home)) if os.path.isdir(home) else None}
        with open(f"/tmp/written-on-{host}", "w") as f:
            f.write(host)
        out["tmp_entries"] = sorted(e for e in os.listdir("/tmp") if e.startswith("written-on-"))
        s3 = boto3.client("s3", endpoint_url=ep["s3_endpoint"])
        s3.put_object(Bucket=ep["bucket"], Key=f"probe/{host}.txt", Body=host.encode())
        mlflow.set_tracking_uri(ep["tracking_uri"])
        exp = mlflow.set_experiment("testbed")
        with mlflow.start_run(run_name=f"probe-{host}") as run:
            mlflow.log_metric("answer", 42)
            mlflow.log_text(host, "host.txt")
        out["run_id"] = run.info.run_id
        return out

    hosts = sys.argv[2].split(",")
    refs = [probe.options(resources={f"host_{h}": 1}).remote(h) for h in hosts]
    print(json.dumps({"nodes": sum(1 for n in ray.nodes() if n["Alive"]), "probes": ray.get(refs)}))
""")

WARM = textwrap.dedent("""
    import json, os, sys
    from jobs.runtime.ray_executor import RayExecutor

    def init():   # what the actor's process held before gnomon's code ran in it
        return {"pid": os.getpid(), "preloaded": "transformers.modeling_utils" in sys.modules,
                "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")}

    ex = RayExecutor(address=sys.argv[1])
    print(json.dumps(ex.map_stateful(init, lambda state, item: state, [0, 1])))
""")


def _ray_workers(ips: list[str]) -> set[int]:
    """The worker processes (``ray::IDLE`` once started) of the raylets of the nodes at ``ips``."""
    import psutil

    out: set[int] = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd and cmd[0].endswith("/raylet") and any(f"--node_ip_address={ip}" in cmd for ip in ips):
            out |= {c.pid for c in proc.children()}
    return out


def test_hosts_share_the_network_and_the_services_but_no_files(tmp_path: Path) -> None:
    tb = Testbed(tmp_path / "testbed", home=str(tmp_path / "gnomon-home"))
    with tb:
        ep = tb.endpoints
        current = Path("/tmp/ray/ray_current_cluster")   # a local ray.init() here must not join the testbed
        assert not (current.is_file() and current.read_text().strip() == ep["ray"])
        Path(ep["home"], "marker-from-head").write_text("only the head has this")
        # Warm workers (first, before any job used them): gnomon's actors land in the
        # processes each worker node started with its raylet, torch and transformers imported
        # (jobs.runtime.ray_runtime.WARM_NODE_ENV), and get gnomon's worker variables there.
        warm = _ray_workers([tb.ip("w1"), tb.ip("w2")])
        w = tb.run("head", [sys.executable, "-c", WARM, ep["ray"]], env={"PYTHONPATH": str(ROOT)})
        assert w.returncode == 0, w.stderr[-3000:]
        got = json.loads(w.stdout.strip().splitlines()[-1])
        assert len(got) == 2 and {a["pid"] for a in got} <= warm, (got, warm)   # running before the job
        assert [(a["preloaded"], a["tokenizers_parallelism"]) for a in got] == [(True, "false")] * 2
        r = tb.run("head", [sys.executable, "-c", DRIVER, json.dumps(ep), "w1,w2"],
                   env={"MLFLOW_S3_ENDPOINT_URL": ep["s3_endpoint"]})
        assert r.returncode == 0, r.stderr[-3000:]
        got = json.loads(next(x for x in r.stdout.splitlines() if x.startswith('{"nodes"')))
        assert got["nodes"] == 3
        by_host = {p["host"]: p for p in got["probes"]}
        for host in ("w1", "w2"):
            p = by_host[host]
            assert p["ip"] == tb.ip(host)                             # ran on that host
            assert p["sees_head_marker"] is False and p["home_entries"] == []
            assert p["tmp_entries"] == [f"written-on-{host}"]         # its own /tmp, not the other worker's

        import boto3
        from mlflow.tracking import MlflowClient

        s3 = boto3.client("s3", endpoint_url=ep["s3_endpoint"], aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        assert s3.get_object(Bucket=ep["bucket"], Key="probe/w2.txt")["Body"].read() == b"w2"
        client = MlflowClient(tracking_uri=ep["tracking_uri"])
        runs = {client.get_run(by_host[h]["run_id"]).data.metrics["answer"] for h in ("w1", "w2")}
        assert runs == {42.0}
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ep["bucket"], Prefix="mlartifacts/")["Contents"]]
        assert sum(k.endswith("host.txt") for k in keys) == 2          # artifacts went to the bucket
        q = tb.run("head", ["env", "PGPASSWORD=gnomon", "psql", "-h", tb.ip("head"), "-U", "gnomon", "-d", "mlflow",
                            "-tAc", "SELECT count(*) FROM runs"])
        assert int(q.stdout.strip()) == 2                               # runs landed in PostgreSQL
        pids = dict(tb.pids)
    assert pids and not [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [h for h in tb.hosts if tb.ns(h) in left]
    current = Path("/tmp/ray/ray_current_cluster")   # no stale address for the next local Ray
    assert not (current.is_file() and current.read_text().strip() == ep["ray"])
