"""Concurrent registration against a real ``mlflow server`` (issue 23): the server is the
arbiter, not a local lock. Six worker processes, each with its own home (no shared disk, no
shared file lock), register the same four directions plus two of their own at the same
moment; every one of them is made to miss the "already registered?" check (the worst
interleaving: all pass the check before any creates). Afterwards each direction has exactly
one live version, every worker was told that version, and nothing was lost.

Then ``gnomon catalog ls`` lists them through the REST search API, and a tracking server that
is down gets one line naming the URL.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_catalog_server import _stop, start_server

pytestmark = pytest.mark.integration

WORKERS = 6
SHARED = 4
OWN = 2


def _direction(concept: str, layer: int, model: str) -> Any:
    import torch

    from pipeline.direction import Direction, Provenance

    prov = Provenance(model_id=model, revision="main", fingerprint="0a1b2c3d4e5f6a7b", hidden_size=8,
                      layer=layer, concept=concept, positive="positive", negative="negative",
                      method="mean_diff", dataset="d", dataset_hash="9f2c1e7a5b3d4c6e",
                      split_sizes={"train": 70, "val": 15})
    g = torch.Generator().manual_seed(layer * 100 + sum(map(ord, model)))
    return Direction(vector=torch.randn(8, generator=g), provenance=prov, pos_mean=1.0, neg_mean=-1.0,
                     spread=0.3, resid_norm=9.0, metrics={"val_auroc": 0.6 + layer / 100})


def _worker(url: str, home: str, worker: int, start_at: float, out: Any) -> None:
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from catalog import Catalog
    from catalog.registry import Registry

    real = Registry.records
    seen: set[tuple[Any, ...]] = set()

    def miss_the_check(self: Registry, concept: str | None = None, tags: Any = None) -> Any:
        # The pre-creation check is `records(sha256) or records(identity)`: answer both as
        # empty the first time each is asked, as if every other worker had not created yet.
        key = (concept, tuple(sorted((tags or {}).items())))
        if key not in seen and set(tags or {}) & {"sha256", "identity"}:
            seen.add(key)
            return []
        return real(self, concept, tags)

    Registry.records = miss_the_check   # type: ignore[method-assign]
    cat = Catalog(tracking_uri=url, home=Path(home))
    items = [_direction("mood", layer, "shared") for layer in range(SHARED)]
    items += [_direction("mood", layer, f"own-{worker}") for layer in range(OWN)]
    time.sleep(max(0.0, start_at - time.time()))
    got = {}
    for d in items:
        rec = cat.register(d, set_best=False)
        got[f"{d.provenance.model_id}/{d.provenance.layer}"] = rec.version
    out.put((worker, got))


def _settle_is_live(url: str, tmp: Path) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 25   # after every spawned interpreter has imported torch and mlflow
    procs = [ctx.Process(target=_worker, args=(url, str(tmp / f"home-{w}"), w, start_at, out))
             for w in range(WORKERS)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    told = {k: {results[w][k] for w in results} for k in results[0] if k.startswith("shared/")}
    assert all(len(v) == 1 for v in told.values()), told      # every worker told the same version

    from catalog.rest import RestReader

    reader = RestReader(url)
    recs = reader.records("mood")
    assert reader.requests <= 2            # one search and one alias lookup, not one per version
    per = {}
    for r in recs:
        per.setdefault((r.model, r.layer), []).append(r.version)
    assert len(per) == SHARED + WORKERS * OWN                 # nothing lost
    assert all(len(v) == 1 for v in per.values()), per       # nothing twice
    assert {k: v.pop() for k, v in told.items()} == {f"shared/{layer}": per[("shared", layer)][0]
                                                       for layer in range(SHARED)}


def test_concurrent_workers_register_each_direction_once(tmp_path: Path) -> None:
    proc, url = start_server(tmp_path, workers=2)
    try:
        _settle_is_live(url, tmp_path)
        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "GNOMON_HOME": str(tmp_path / "lister")}
        ls = subprocess.run([sys.executable, "-m", "jobs.cli", "catalog", "ls", "--concept", "mood", "--json"],
                            capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
        assert ls.returncode == 0, ls.stderr
        listed = json.loads(ls.stdout)
        assert len(listed) == SHARED + WORKERS * OWN
        assert "mlflow" not in ls.stderr.lower()
    finally:
        _stop(proc)
    down = subprocess.run([sys.executable, "-m", "jobs.cli", "catalog", "ls"], capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": url, "GNOMON_HOME": str(tmp_path / "lister")},
                          cwd=Path(__file__).resolve().parents[1])
    assert down.returncode != 0
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0] and "cannot reach" in lines[0], down.stderr
