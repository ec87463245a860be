"""A fleet run on real services: a Ray head (with its Jobs API) and an ``mlflow server``,
both on loopback, both stopped by process id.

1. ``gnomon run SPEC --ray-address HEAD --tracking-uri SERVER``: three checkpoints of a
   tiny Llama (seeds 0, 1, 2, saved as Hugging Face directories) x two concepts; the
   registered directions are read back through the server.
2. The same command again does nothing: no new shard file, no new catalog version.
3. ``gnomon submit SPEC --address http://HEAD:DASHBOARD`` runs the same spec as a Ray Job
   on the head with the same home and server; ``gnomon status --wait`` follows it to
   SUCCEEDED, and its log shows every stage skipped (nothing new in the store or catalog).

The submitted job does no work on purpose: a tiny fleet costs ~10 process start-ups per
run on Ray, and CI has two cores. That the job can do work is the first run's code path
(``gnomon run`` joining the cluster), which the job's log shows it took.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_dataset

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = 3
CONCEPTS = ("mood", "tone")
LAYERS = (1, 2)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a service started in its own session: its whole process group, by id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str, limit_s: float = 120,
               needle: str = "") -> None:
    """Until ``url`` answers 200 (with ``needle`` in the body); fails at once if ``proc`` exits."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200 and needle in r.read().decode(errors="replace"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not answering {url} after {limit_s}s:\n{log.read_text()[-3000:]}")


def _checkpoints(root: Path) -> list[str]:
    """Three versions of one tiny architecture (different seeds), as model directories."""
    from pipeline.models.tiny import tiny_model

    out = []
    for seed in range(MODELS):
        model, tok = tiny_model("tiny:llama:2x32", seed=seed)
        path = root / f"ckpt-{seed}"
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        out.append(str(path))
    return out


def _spec(tmp: Path, models: list[str]) -> Path:
    datasets = [write_dataset(tmp / f"{c}.jsonl", n_pairs=12, labels=(f"{c}_hi", f"{c}_lo")) for c in CONCEPTS]
    spec = tmp / "fleet.toml"
    spec.write_text(
        '[job]\nname = "fleet"\n'
        f"models = {json.dumps(models)}\n"
        'executor = "ray"\n\n'
        "[fit]\n"
        f"concepts = {json.dumps([str(d) for d in datasets])}\n"
        'methods = ["mean_diff"]\npositions = ["last"]\n'
        f"layers = {list(LAYERS)}\n")
    return spec


def _gnomon(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "jobs.cli", *args], check=False, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"gnomon {' '.join(args)}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def _shards(home: Path) -> dict[str, float]:
    return {str(p.relative_to(home)): p.stat().st_mtime for p in (home / "activations").rglob("*.parquet")}


def _versions(url: str, home: Path) -> dict[str, list[Any]]:
    from catalog import Catalog

    cat = Catalog(tracking_uri=url, home=home)
    return {c: cat.versions(c) for c in CONCEPTS}


def _submit_and_follow(spec: Path, services: dict[str, Any], home: Path, env: dict[str, str],
                       limit: int) -> tuple[str, subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """``gnomon submit`` the spec with ``home``, ``gnomon status --wait`` until it ends (it must
    succeed), then ``gnomon logs``: (job id, status, logs)."""
    sub = _gnomon(["submit", str(spec), "--address", services["jobs"], "--tracking-uri", services["mlflow"],
                   "--env", f"GNOMON_HOME={home}", "--json"], env)
    job_id = json.loads(sub.stdout.strip().splitlines()[-1])["job_id"]
    status = subprocess.run([sys.executable, "-m", "jobs.cli", "status", job_id, "--address", services["jobs"],
                             "--wait", "--timeout", str(limit)], check=False, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=limit + 30)
    logs = subprocess.run([sys.executable, "-m", "jobs.cli", "logs", job_id, "--address", services["jobs"]],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, f"{status.stdout}\n{status.stderr}\n--- job logs ---\n{logs.stdout[-4000:]}"
    return job_id, status, logs


@pytest.fixture
def services(tmp_path: Path) -> Any:
    """A Ray head with its dashboard (Jobs API) and an mlflow server, on free loopback ports."""
    port, dash, agent_http, agent_grpc, env_agent, metrics, client, mlflow_port = _free_ports(8)
    # Ray's unix socket paths must stay short (pytest's tmp_path is too deep); a loopback test
    # cluster runs without Ray 2.60's token auth, whose token file any other local start rewrites.
    ray_tmp = tempfile.mkdtemp(prefix="gf", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI", "GNOMON_HOME"):
        env.pop(k, None)
    ray_log, mlflow_log = tmp_path / "ray.log", tmp_path / "mlflow.log"
    with open(ray_log, "wb") as out:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
             f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={env_agent}", f"--metrics-export-port={metrics}",
             f"--ray-client-server-port={client}", "--num-cpus=2", f"--object-store-memory={256 * 1024 * 1024}",
             f"--temp-dir={ray_tmp}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{mlflow_port}"
    with open(mlflow_log, "wb") as out:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--workers", "1"],
            # MLflow 3's job runner (seven huey consumers) serves features gnomon does not use
            env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The dashboard answers before the raylet has registered (and a raylet that does not
        # register within Ray's 30 s makes `ray start` exit): wait for an ALIVE node.
        _wait_http(f"http://127.0.0.1:{dash}/nodes?view=summary", head, ray_log, "ray head", needle='"ALIVE"')
        _wait_http(f"{url}/health", server, mlflow_log, "mlflow server")
        yield {"env": env, "ray": f"127.0.0.1:{port}", "jobs": f"http://127.0.0.1:{dash}", "mlflow": url,
               "artifacts": tmp_path / "server-artifacts", "procs": (head, server)}
    finally:
        _stop(server)
        _stop(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_fleet_on_ray_head_and_mlflow_server(tmp_path: Path, services: dict[str, Any]) -> None:
    env, url = services["env"], services["mlflow"]
    models = _checkpoints(tmp_path / "models")
    spec = _spec(tmp_path, models)
    home = tmp_path / "home"
    run = ["run", str(spec), "--ray-address", services["ray"], "--tracking-uri", url]

    # 1. the fleet, by address
    _gnomon(run, {**env, "GNOMON_HOME": str(home)})
    shards = _shards(home)
    assert len(shards) == MODELS * len(CONCEPTS) * len(LAYERS)  # one shard per (model, concept, layer)
    versions = _versions(url, tmp_path / "client")
    for concept, recs in versions.items():
        assert sorted(r.model for r in recs) == sorted(models), concept
        assert len({r.fingerprint for r in recs}) == MODELS  # three different checkpoints
        assert all(r.source.startswith("mlflow-artifacts:") and r.layer in LAYERS for r in recs)
    from catalog import Catalog

    d = Catalog(tracking_uri=url, home=tmp_path / "client").load(f"{CONCEPTS[0]}/{versions[CONCEPTS[0]][0].version}")
    assert d.vector.shape == (32,) and d.provenance.concept == CONCEPTS[0]
    assert d.provenance.model_id in models
    assert len(list(services["artifacts"].rglob("*.safetensors"))) == MODELS * len(CONCEPTS)

    # 2. the same spec again: nothing collected, fitted or registered
    again = _gnomon(run, {**env, "GNOMON_HOME": str(home)})
    assert _shards(home) == shards  # same files, none rewritten
    assert {c: [r.version for r in v] for c, v in _versions(url, tmp_path / "client").items()} == \
        {c: [r.version for r in v] for c, v in versions.items()}
    assert again.stdout.count("[skip]") == MODELS * len(CONCEPTS)

    # 3. the same spec as a Ray Job on the head, followed to success. It gets the home and the
    # tracking URI through its runtime environment: had either not arrived, the stage markers
    # (keyed on both) would not match and the job would collect and register again.
    job_id, status, logs = _submit_and_follow(spec, services, home, env, limit=150)
    assert status.stdout.strip().splitlines()[-1].split()[:2] == [job_id, "SUCCEEDED"]
    assert logs.returncode == 0 and "gnomon run fleet.toml" in logs.stdout
    assert logs.stdout.count("[skip]") == MODELS * len(CONCEPTS) and "[run ]" not in logs.stdout
    assert _shards(home) == shards
    assert sum(len(v) for v in _versions(url, tmp_path / "client").values()) == MODELS * len(CONCEPTS)

    # 4. The stage markers lost (a RayJob's fresh cluster keeps none): the job redoes the fits,
    # which fan out as Ray tasks from concurrent stages (they raced into `ray.init` before
    # jobs.runtime.ray_runtime locked it), and registers nothing twice nor writes a shard again.
    shutil.rmtree(home / "jobs")
    _job_id, _status, logs = _submit_and_follow(spec, services, home, env, limit=240)
    assert logs.stdout.count("[run ] fit/") == MODELS * len(CONCEPTS)
    assert _shards(home) == shards
    assert {c: [r.version for r in v] for c, v in _versions(url, tmp_path / "client").items()} == \
        {c: [r.version for r in v] for c, v in versions.items()}
