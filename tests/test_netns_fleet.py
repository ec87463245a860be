"""The fleet job on a cluster with no shared disk (issue 23): three hosts as network namespaces
(``infra/testbed/netns_cluster.py``), the Ray head with PostgreSQL, an S3 server and a
PostgreSQL-backed ``mlflow server`` on one, a Ray worker node (1 CPU) on each of the two others,
each in a mount namespace of its own (private /tmp, model cache and gnomon home).

1. Three tiny model versions are registered into ``s3://gnomon/home`` from this machine; the
   workers download them into their own caches.
2. ``gnomon submit SPEC --address http://HEAD:8265``: 3 versions x 2 concepts (a shipped one
   and a concept file that travels with the job), collect + fit + evaluate + a report. Rows
   counted with ``gnomon sql`` against the bucket equal examples x layers x positions, each
   (example, layer, position) once; collection actors ran on both worker nodes; every
   direction is one version in the PostgreSQL-backed catalog; ``gnomon status/logs`` follow.
3. The same spec again does nothing (the stage markers are in the bucket).
4. A second spec (two more concepts) with ``kill -9`` of one worker node's Ray processes in
   the middle: the job finishes on the node left, with the same exact counts and no catalog
   version twice.

Every service is stopped by process id and every namespace removed at the end, also when a
step fails (the ``Testbed`` context manager).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra" / "testbed"))
from netns_cluster import Testbed, available  # noqa: E402

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(available() is not None, reason=f"testbed: {available()}")]

MODELS = ("nt0", "nt1", "nt2")
LAYERS = (1, 2)
STORE = "s3://gnomon/home"

ACTOR_NODES = """
import json, sys
import ray
from ray.util.state import list_actors, list_nodes
ray.init(address=sys.argv[1], logging_level="ERROR")
# the address given: a local Ray of this machine (the suite's own) must not be asked instead
ips = {n.node_id: n.node_ip for n in list_nodes(address=sys.argv[1])}
print(json.dumps(sorted({ips.get(a.node_id) for a in list_actors(address=sys.argv[1], limit=10000, detail=True,
                                                                 filters=[("class_name", "=", "_Worker")])})))
"""

REGISTER = """
import sys
from pipeline.home import gnomon_home
from pipeline.models.tiny import tiny_model
from tests.fleet_tiny import add_version
for seed, vid in enumerate(sys.argv[2:]):
    model, tok = tiny_model("tiny:llama:2x32", seed=seed)
    add_version(gnomon_home(sys.argv[1]), vid, model, tok, "base")
"""


def _spec(folder: Path, name: str, concepts: list[str], evaluate: bool) -> Path:
    text = (f'[job]\nname = "{name}"\nmodels = {json.dumps(list(MODELS))}\nexecutor = "ray"\n\n'
            f'[fit]\nconcepts = {json.dumps(concepts)}\nmethods = ["mean_diff"]\npositions = ["last"]\nregister = "all"\n'
            f"layers = {list(LAYERS)}\n")
    if evaluate:
        text += ('\n[[evaluate]]\nconcept = "sentiment"\nmethod = "mean_diff"\nstrengths = [-2, 0, 2]\n'
                 "n_prompts = 2\nmax_new_tokens = 4\nprobe = false\n"
                 '\n[[report]]\nconcepts = ["sentiment"]\nlayers = [1, 2]\ncontrol = false\ncompose = false\n'
                 "n_prompts = 2\nmax_new_tokens = 4\n")
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def _gnomon(env: dict[str, str], *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    if check:
        assert out.returncode == 0, f"gnomon {' '.join(args)}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _submit(env: dict[str, str], spec: Path, dashboard: str) -> str:
    sub = _gnomon(env, "submit", str(spec), "--address", dashboard, "--env", f"GNOMON_HOME={STORE}", "--json")
    return str(json.loads(sub.stdout.strip().splitlines()[-1])["job_id"])


def _wait(env: dict[str, str], job: str, dashboard: str, limit: int = 900) -> str:
    status = _gnomon(env, "status", job, "--address", dashboard, "--wait", "--timeout", str(limit),
                     timeout=limit + 60, check=False)
    logs = _gnomon(env, "logs", job, "--address", dashboard, check=False).stdout
    assert status.returncode == 0, f"{status.stdout}\n{status.stderr}\n--- job logs ---\n{logs[-6000:]}"
    assert status.stdout.strip().splitlines()[-1].split()[:2] == [job, "SUCCEEDED"]
    return logs


def _rows(env: dict[str, str]) -> list[dict[str, Any]]:
    out = _gnomon(env, "sql", "--json", "--limit", "0",
                  "SELECT model, dataset, position, count(*) AS n, count(DISTINCT (example_id, layer)) AS distinct_rows, "
                  "count(DISTINCT layer) AS layers FROM activations GROUP BY ALL ORDER BY ALL")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _versions(url: str) -> dict[tuple[str, str, int], list[int]]:
    from catalog.rest import RestReader

    per: dict[tuple[str, str, int], list[int]] = {}
    for r in RestReader(url).records():
        per.setdefault((r.concept, r.model, r.layer), []).append(r.version)
    return per


def _check_exactly_once(env: dict[str, str], examples: dict[str, int], url: str) -> None:
    rows = _rows(env)
    got = {(r["model"], r["dataset"], r["position"]): (r["n"], r["distinct_rows"], r["layers"]) for r in rows}
    assert {(m, c) for m, c, _ in got} == {(m, c) for m in MODELS for c in examples}
    assert all((m, c, "last") in got for m in MODELS for c in examples)   # the fitted position
    for (_m, c, _pos), counts in got.items():   # per position: examples x layers, each (example, layer) once
        assert counts == (examples[c] * len(LAYERS), examples[c] * len(LAYERS), len(LAYERS)), (c, counts)
    versions = _versions(url)
    assert set(versions) == {(c, m, layer) for c in examples for m in MODELS for layer in LAYERS}
    assert all(len(v) == 1 for v in versions.values()), versions   # no direction registered twice


def test_fleet_job_on_three_hosts_without_a_shared_disk(tmp_path: Path) -> None:
    tb = Testbed(tmp_path / "testbed", home=str(tmp_path / "head-home"), prefix_name="gnf", subnet="10.79.0")
    with tb:
        ep = tb.endpoints
        env = {**os.environ, **tb.client_env(), **tb.ray_env, "GNOMON_HOME": STORE, "PYTHONPATH": str(ROOT),
               "GNOMON_CACHE": str(tmp_path / "client-cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        reg = subprocess.run([sys.executable, "-c", REGISTER, STORE, *MODELS], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
        assert reg.returncode == 0, reg.stderr[-3000:]

        # 2. the fleet job: collection on both workers, rows in the bucket exactly once
        mood = write_dataset(tmp_path / "mood.jsonl", n_pairs=10, labels=("calm", "angry"))
        spec = _spec(tmp_path, "cluster-fleet", ["sentiment", mood.name], evaluate=True)
        job = _submit(env, spec, ep["dashboard"])
        logs = _wait(env, job, ep["dashboard"])
        examples = {"sentiment": 480, "mood": 20}
        _check_exactly_once(env, examples, ep["tracking_uri"])
        assert "[done] evaluate/sentiment" in logs and "[done] report/sentiment" in logs
        nodes = tb.run("head", [sys.executable, "-c", ACTOR_NODES, ep["ray"]], env={"PYTHONPATH": str(ROOT)})
        assert nodes.returncode == 0, nodes.stderr[-2000:]
        assert set(json.loads(nodes.stdout.strip().splitlines()[-1])) == {tb.ip("w1"), tb.ip("w2")}  # both workers

        # 3. the same spec again: nothing to do
        again = _wait(env, _submit(env, spec, ep["dashboard"]), ep["dashboard"])
        assert "[run ]" not in again and again.count("[skip]") >= len(MODELS) * 2
        _check_exactly_once(env, examples, ep["tracking_uri"])

        # 4. two more concepts, and one worker node killed while it collects
        tone = write_dataset(tmp_path / "tone.jsonl", n_pairs=60, labels=("loud", "quiet"))
        spec2 = _spec(tmp_path, "cluster-fleet-2", ["tense", tone.name], evaluate=False)
        job2 = _submit(env, spec2, ep["dashboard"])
        deadline = time.time() + 300
        while time.time() < deadline:   # until the second job has written shards of its own
            if any(r["dataset"] in ("tense", "tone") for r in _rows(env)):
                break
            time.sleep(2)
        killed = tb.kill_node("w2")
        assert killed
        _wait(env, job2, ep["dashboard"])
        _check_exactly_once(env, {**examples, "tense": 480, "tone": 120}, ep["tracking_uri"])
        pids = dict(tb.recorded())
    assert pids and not [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()]
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert not [h for h in tb.hosts if tb.ns(h) in left]
