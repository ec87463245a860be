"""Executors: the same per-shard (and per-group) functions, scheduled locally or on Ray.

``LocalExecutor`` runs in this process (tests, debugging, one machine without Ray).
``RayExecutor`` runs collection on a pool of actors, one model per actor (one GPU each
when the cluster has GPUs), feeding each actor the next shard as soon as it is free, and
runs stateless groups (fitting) as Ray tasks. Both call ``jobs.collect_job.run_shard``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from jobs.collect_job import CollectPlan, CollectSpec, ShardResult, ShardTask, load_for_spec, run_shard

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]


class LocalExecutor:
    """Runs everything in-process, in order."""

    name = "local"

    def run_collect(self, plan: CollectPlan, home: str, progress: Progress | None = None,
                    on_shard: Callable[[ShardResult], None] | None = None, lm: Any = None) -> list[ShardResult]:
        lm = lm if lm is not None else load_for_spec(plan.spec, home)
        out = []
        for task in plan.shards:
            res = run_shard(lm, plan.spec, plan.dataset_name, task, home, progress)
            out.append(res)
            if on_shard is not None:
                on_shard(res)
        return out

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        out = []
        for item in items:
            r = fn(item)
            out.append(r)
            if on_result is not None:
                on_result(r)
        return out


class _CollectWorker:
    """Ray actor body: loads the model once, then collects shard after shard."""

    def __init__(self, spec: CollectSpec, dataset_name: str, home: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.spec, self.dataset_name, self.home = spec, dataset_name, home
        self.lm = load_for_spec(spec, home)

    def run(self, task: ShardTask) -> ShardResult:
        return run_shard(self.lm, self.spec, self.dataset_name, task, self.home)

    def pid(self) -> int:
        return os.getpid()


@dataclass
class RayExecutor:
    """Ray actor pool for collection, Ray tasks for stateless groups."""

    address: str | None = None
    num_workers: int | None = None
    """Actors for collection; default one per GPU, else one per 2 CPUs... at least 1."""
    name: str = "ray"

    def _ray(self) -> Any:
        from jobs.ray_runtime import ensure_ray

        return ensure_ray(self.address)

    def run_collect(self, plan: CollectPlan, home: str, progress: Progress | None = None,
                    on_shard: Callable[[ShardResult], None] | None = None,
                    on_start: Callable[[list[Any]], None] | None = None) -> list[ShardResult]:
        ray = self._ray()
        from jobs.ray_runtime import cluster_cpus, cluster_gpus

        gpus, cpus = cluster_gpus(), cluster_cpus()
        n = self.num_workers or (gpus if gpus else max(1, cpus))
        n = max(1, min(n, len(plan.shards) or 1))
        per_cpu = 1 if gpus else max(1, cpus // n)
        actor_cls = ray.remote(_CollectWorker).options(num_gpus=1 if gpus else 0, num_cpus=per_cpu)
        actors = [actor_cls.remote(plan.spec, plan.dataset_name, home, per_cpu) for _ in range(n)]
        if on_start is not None:
            on_start(actors)
        pending: dict[Any, tuple[Any, ShardTask]] = {}
        queue = list(plan.shards)
        results: list[ShardResult] = []
        try:
            for actor in actors:
                if queue:
                    task = queue.pop(0)
                    pending[actor.run.remote(task)] = (actor, task)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                actor, task = pending.pop(ref)
                res: ShardResult = ray.get(ref)  # raises if the shard or its actor failed
                results.append(res)
                if progress is not None:
                    progress(len(task.ids), res.tokens)
                if on_shard is not None:
                    on_shard(res)
                if queue:
                    nxt = queue.pop(0)
                    pending[actor.run.remote(nxt)] = (actor, nxt)
        finally:
            for actor in actors:
                ray.kill(actor)
        return sorted(results, key=lambda r: r.index)

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None,
            num_cpus: float = 1) -> list[R]:
        ray = self._ray()
        # Retries cover a worker process that dies (OOM, a native crash); a Python
        # exception is a real error and is raised at once.
        remote = ray.remote(num_cpus=num_cpus, max_retries=3)(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            r = ray.get(done[0])
            out[index[done[0]]] = r
            if on_result is not None:
                on_result(r)
        return out


def make_executor(kind: str = "ray", address: str | None = None, num_workers: int | None = None) -> Any:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address=address, num_workers=num_workers)
    from pipeline.types import GnomonError

    raise GnomonError(f"unknown executor {kind!r}: use ray or local")
