"""Collection on a real local Ray instance: actor pool output, killed actor, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.runtime.engine import LocalExecutor
from jobs.runtime.ray_executor import RayExecutor
from pipeline.store import ActivationStore


def _rows(home: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return con.execute(
            "SELECT example_id, layer, position, count(*) FROM read_parquet($g, hive_partitioning=true) GROUP BY ALL",
            {"g": str(home / "activations" / "**" / "*.parquet")}).fetchall()


def test_ray_pool_writes_the_same_store_as_local(ray_instance: Any, home: Path, small_dataset: Path,
                                                 tmp_path: Path) -> None:
    spec = CollectSpec(model="tiny:gpt2", dataset=str(small_dataset), layers=(0, 2, 4), shard_size=5)
    ray_summary = run_collection(spec, RayExecutor(num_workers=2), home)
    assert ray_summary["written_files"] == 5 * 3
    local_home = tmp_path / "local-home"
    run_collection(spec, LocalExecutor(), local_home)
    a, b = ActivationStore(home), ActivationStore(local_home)
    for layer in (0, 2, 4):
        ids_a, acts_a = a.read_layer("tiny:gpt2", "main", "toy", layer, "mean")
        ids_b, acts_b = b.read_layer("tiny:gpt2", "main", "toy", layer, "mean")
        assert ids_a == ids_b
        assert (acts_a == acts_b).all()


def test_killed_actor_loses_nothing_and_a_rerun_writes_nothing(ray_instance: Any, home: Path,
                                                               small_dataset: Path) -> None:
    """A worker killed while others still have shards in flight (a lost node, issue 23): its
    shards run again on the actor left, in the same collection; every row lands once, and a
    rerun finds everything stored."""
    ray = ray_instance
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), shard_size=3, batch_size=2)
    actors: list[Any] = []

    def kill_after_first(_res: Any) -> None:
        if actors:
            ray.kill(actors.pop())

    ex = RayExecutor(num_workers=2)
    try:
        first = run_collection(spec, ex, home, on_start=actors.extend, on_shard=kill_after_first)
        assert not actors                                  # the kill happened
        # a shard the killed actor had stored before its result was lost is found complete
        assert first["written_files"] + first["skipped_files"] == 8 * 5 and first["written_files"] > 0
    finally:
        ex.close()
    rows = _rows(home)
    assert len(rows) == 24 * 5 * 2 and {r[3] for r in rows} == {1}
    again = run_collection(spec, RayExecutor(num_workers=2), home)
    assert again["written_files"] == 0 and again["skipped_files"] == 8 * 5


def test_actor_pool_is_kept_across_collections_of_one_model(ray_instance: Any, home: Path, small_dataset: Path,
                                                            tmp_path: Path) -> None:
    """A job collecting several concepts on one model starts its actors (and loads the
    model in them) once."""
    import shutil

    other = tmp_path / "other.jsonl"
    shutil.copyfile(small_dataset, other)
    ex = RayExecutor(num_workers=2)
    seen: list[list[Any]] = []
    try:
        for ds in (small_dataset, other):
            s = run_collection(CollectSpec(model="tiny:llama", dataset=str(ds), layers=(1,), shard_size=6), ex,
                               home, on_start=seen.append)
            assert s["written_files"] == 4 and s["executor"] == "ray"
        pids = [sorted(ray_instance.get([a.pid.remote() for a in actors])) for actors in seen]
        assert pids[0] == pids[1]
    finally:
        ex.close()


def test_a_cli_command_keeps_its_callers_ray_connection(ray_instance: Any, home: Path,
                                                        small_dataset: Path) -> None:
    """A command run in a process already connected to Ray (a notebook, this test session)
    leaves the connection as it found it; one that joined Ray itself leaves it when it ends
    (``jobs.runtime.ray_runtime.leave_ray``)."""
    from jobs.cli import main

    assert main(["--home", str(home), "collect", "--model", "tiny:gpt2", "--dataset", str(small_dataset),
                 "--layers", "0", "--executor", "ray", "--workers", "1", "--json"]) == 0
    assert ray_instance.is_initialized()
    assert ray_instance.get(ray_instance.put(7)) == 7
    assert len(_rows(home)) == 24 * 2
