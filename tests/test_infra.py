"""infra/ is configuration nobody runs in CI, so it is checked here against the code it
drives: every manifest parses, the commands in it parse with gnomon's own CLI, the ports,
paths, images and environment variable names agree with each other and with what gnomon
reads (a misspelt ``GNOMON_HOME`` in a pod would silently write the store elsewhere).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
LIBRARY_ENV = {"HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "TRANSFORMERS_NO_ADVISORY_WARNINGS",
               "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "RAY_enable_worker_prestart", "RAY_preload_python_modules"}   # Ray (WARM_NODE_ENV)
"""Variables read by libraries gnomon uses rather than by gnomon itself (the S3 client's)."""
CREDENTIALS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _read_env_names() -> set[str]:
    """Environment variables gnomon's own code reads."""
    from jobs.runtime import cluster

    pat = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = {m for pkg in ("jobs", "pipeline", "catalog") for f in (ROOT / pkg).rglob("*.py")
             for m in pat.findall(f.read_text())}
    return names | set(cluster.ADDRESS_ENV) | set(cluster.FORWARDED_ENV)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    found = [d for d in _docs(path) if d.get("kind") == kind]
    assert len(found) == 1, f"{path}: expected one {kind}"
    return found[0]


def _parse_cli(argv: list[str]) -> Any:
    from jobs.cli import build_parser

    assert argv[0] == "gnomon", argv
    args = build_parser(argv[1:]).parse_args(argv[1:])  # argparse exits on a bad command line
    assert hasattr(args, "_run"), argv
    return args


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_template["spec"]["containers"])


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    """mountPath -> volume name."""
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _ray_groups(spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return spec["headGroupSpec"], list(spec["workerGroupSpecs"])


def _check_ray_cluster_spec(spec: dict[str, Any], store_path: str, where: str) -> str:
    """Shared checks of a RayCluster spec; returns the image."""
    head, workers = _ray_groups(spec)
    assert head["rayStartParams"].get("dashboard-host") == "0.0.0.0", f"{where}: the Jobs API must answer off-pod"
    pods = [head["template"]] + [w["template"] for w in workers]
    images = {c["image"] for p in pods for c in _containers(p)}
    assert len(images) == 1, f"{where}: head and workers must run one image (one gnomon version): {images}"
    assert store_path.startswith("s3://"), f"{where}: the store must be object storage, not {store_path}"
    for p in pods:
        vols = {v["name"]: v for v in p["spec"].get("volumes", [])}
        assert not [v for v in vols.values() if "persistentVolumeClaim" in v], f"{where}: no shared disk"
        for c in _containers(p):
            secret = {e["name"] for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
            secret |= {"*" for e in c.get("envFrom", []) if e.get("secretRef", {}).get("name") == "gnomon-s3"}
            assert CREDENTIALS <= secret or "*" in secret, f"{where}: {c['name']} has no S3 credentials from a Secret"
            cache = _mounts(c).get("/cache")
            assert cache and "emptyDir" in vols[cache], f"{where}: {c['name']} has no node-local model cache"
    gpu = [w for w in workers
           if any(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
                  for c in _containers(w["template"]))]
    assert gpu, f"{where}: no GPU worker group"
    assert all(w["minReplicas"] <= w["replicas"] <= w["maxReplicas"] for w in workers)
    head_ports = {p["containerPort"] for c in _containers(head["template"]) for p in c.get("ports", [])}
    assert 8265 in head_ports, f"{where}: the head does not expose the Jobs API (8265)"
    return images.pop()


def test_compose_mlflow_on_postgres_and_s3() -> None:
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "mlflow"} <= set(services)
    mlflow = services["mlflow"]
    cmd = " ".join(mlflow["command"].split())
    backend = re.search(r"--backend-store-uri (\S+)", cmd)
    assert backend and backend.group(1).startswith("postgresql"), cmd
    assert "@postgres:5432/" in backend.group(1)  # the compose service, its port
    assert re.search(r"--artifacts-destination s3://", cmd), "artifacts must go to the S3-compatible store"
    port = int(re.search(r"--port (\d+)", cmd).group(1))  # type: ignore[union-attr]
    assert any(str(p).endswith(f":{port}") for p in mlflow["ports"]), "published port != server port"
    assert f"127.0.0.1:{port}/health" in " ".join(mlflow["healthcheck"]["test"])
    s3 = urlsplit(mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"])
    assert s3.hostname == "minio" and s3.port == 9000 and "server /data" in services["minio"]["command"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    # every ${VAR} the file uses is documented in env.example
    used = set(re.findall(r"\$\{([A-Z_]+)", (INFRA / "mlflow" / "docker-compose.yml").read_text()))
    example = {line.split("=", 1)[0] for line in (INFRA / "mlflow" / "env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert used <= example, f"not in env.example: {sorted(used - example)}"


def test_raycluster_serves_gnomon_submit() -> None:
    rc = _one(INFRA / "ray" / "raycluster.yaml", "RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    head = rc["spec"]["headGroupSpec"]["template"]
    env = _env(_containers(head)[0])
    _check_ray_cluster_spec(rc["spec"], env["GNOMON_HOME"], "raycluster.yaml")
    read = _read_env_names() | LIBRARY_ENV
    for group in [rc["spec"]["headGroupSpec"], *rc["spec"]["workerGroupSpecs"]]:
        for c in _containers(group["template"]):
            assert set(_env(c)) <= read, f"{c['name']}: gnomon reads none of {sorted(set(_env(c)) - read)}"
            assert _env(c)["GNOMON_HOME"] == env["GNOMON_HOME"]  # one store path on every node
            assert _env(c)["MLFLOW_TRACKING_URI"] == env["MLFLOW_TRACKING_URI"]


def test_rayjob_runs_gnomon_run_on_a_mounted_spec() -> None:
    path = INFRA / "ray" / "rayjob.yaml"
    job = _one(path, "RayJob")
    args = _parse_cli(shlex.split(job["spec"]["entrypoint"]))
    assert args.command == "run"
    runtime = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    env = runtime["env_vars"]
    assert set(env) <= _read_env_names() | LIBRARY_ENV, sorted(set(env) - _read_env_names() - LIBRARY_ENV)
    cluster = job["spec"]["rayClusterSpec"]
    _check_ray_cluster_spec(cluster, env["GNOMON_HOME"], "rayjob.yaml")
    # the driver runs on the head: the spec must be mounted there
    head = _containers(cluster["headGroupSpec"]["template"])[0]
    assert any(args.spec.startswith(m.rstrip("/") + "/") for m in _mounts(head)), \
        f"{args.spec} is not under a volume mounted on the head"


def test_cronjob_submits_to_the_raycluster() -> None:
    cron = _one(INFRA / "schedules" / "cronjob.yaml", "CronJob")
    rc = _one(INFRA / "ray" / "raycluster.yaml", "RayCluster")
    spec = cron["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(r"[\d*/,-]+", f) for f in fields), spec["schedule"]
    assert spec["concurrencyPolicy"] == "Forbid"  # two fleet runs must not share a store
    pod = spec["jobTemplate"]["spec"]["template"]
    (c,) = _containers(pod)
    args = _parse_cli(list(c["command"]) + list(c.get("args", [])))
    assert args.command == "submit" and args.follow  # the pod's exit status is the job's
    # the address is the RayCluster's head service (KubeRay: <name>-head-svc) on the Jobs API port
    addr = urlsplit(args.address)
    assert addr.hostname == f"{rc['metadata']['name']}-head-svc.{rc['metadata']['namespace']}.svc"
    assert addr.port == 8265
    assert any(args.spec.startswith(m.rstrip("/") + "/") for m in _mounts(c))
    rc_env = _env(_containers(rc["spec"]["headGroupSpec"]["template"])[0])
    job_env = dict(e.split("=", 1) for e in args.env)
    assert job_env["GNOMON_HOME"] == rc_env["GNOMON_HOME"]
    assert _env(c)["MLFLOW_TRACKING_URI"] == rc_env["MLFLOW_TRACKING_URI"]
    assert c["image"] == _containers(rc["spec"]["headGroupSpec"]["template"])[0]["image"]


def test_tracking_uris_point_at_the_compose_port() -> None:
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yml").read_text())
    port = int(re.search(r"--port (\d+)", compose["services"]["mlflow"]["command"]).group(1))  # type: ignore[union-attr]
    uris = [yaml.safe_load(_one(INFRA / "ray" / "rayjob.yaml", "RayJob")["spec"]["runtimeEnvYAML"])
            ["env_vars"]["MLFLOW_TRACKING_URI"],
            _env(_containers(_one(INFRA / "ray" / "raycluster.yaml", "RayCluster")["spec"]["headGroupSpec"]
                             ["template"])[0])["MLFLOW_TRACKING_URI"]]
    assert all(urlsplit(u).port == port for u in uris), uris


def test_crontab_line_parses() -> None:
    lines = [ln for ln in (INFRA / "schedules" / "crontab.example").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines
    for ln in lines:
        cmd = ln.split(None, 5)[5]
        words = shlex.split(cmd.split("&&", 1)[1].split(">>", 1)[0])
        lead = next(i for i, w in enumerate(words) if not re.fullmatch(r"[A-Z_]+=.*", w))
        env = words[:lead]   # the assignments before the command
        assert {w.split("=", 1)[0] for w in env} <= _read_env_names() | LIBRARY_ENV
        argv = words[lead:]
        assert argv[0].endswith("/gnomon")
        args = _parse_cli(["gnomon", *argv[1:]])
        assert args.command in ("run", "submit")
        if args.command == "submit":   # a cluster has no shared disk: the store is a bucket
            assert dict(e.split("=", 1) for e in args.env)["GNOMON_HOME"].startswith("s3://") and args.follow


def test_the_kuberay_nodes_keep_the_warm_workers_gnomon_decides() -> None:
    """infra/ray/raycluster.yaml restates WARM_NODE_ENV (YAML cannot import it): they agree."""
    from jobs.runtime.ray_runtime import WARM_NODE_ENV

    _, workers = _ray_groups(_one(INFRA / "ray" / "raycluster.yaml", "RayCluster")["spec"])
    for group in workers:
        for c in _containers(group["template"]):
            assert {k: _env(c).get(k) for k in WARM_NODE_ENV} == WARM_NODE_ENV, c["name"]
