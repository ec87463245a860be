"""Executors: the same per-shard (and per-group) functions, scheduled locally or on Ray.

``LocalExecutor`` runs in this process: one model, all of the machine's threads, two shards
in flight (one in the forward pass, one being written). ``RayExecutor`` runs collection on
a pool of actors, one model per actor (one GPU each when the cluster has GPUs), feeding
each actor the next shard as soon as it has room, and runs stateless groups (fitting) as
Ray tasks. Its actor pools outlive one collection: a job that collects several concepts on
one model starts the actors and loads the model once. Both call ``jobs.collect_job.run_shard``.

``AutoExecutor`` (the default, ``--executor auto``) picks per stage by what pays:

- collection: Ray actors when a cluster address is given (``--ray-address`` /
  ``RAY_ADDRESS``), when the node has two or more GPUs (one actor each), or on a CPU-only
  node with more than ``MANY_CPUS`` cores (several actors beat one process whose thread
  scaling flattens); otherwise in-process, where a small model pays no Ray start-up
  (~3-4 s), no per-actor model load and no inter-process traffic.
- fan-out (``map``: fitting groups, evaluation checkpoints): Ray tasks when a cluster
  address is given, or when there are at least ``MIN_FANOUT`` items and two or more CPUs
  (the groups are single-threaded); otherwise in-process, where an evaluation reuses the
  model the collection already loaded.

The choice and its reason are in ``choice`` and in the job summaries.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

from jobs.collect_job import CollectPlan, CollectSpec, ShardResult, ShardRunner, ShardTask, load_for_spec

__all__ = ["AutoExecutor", "LocalExecutor", "RayExecutor", "make_executor", "EXECUTORS"]

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]
EXECUTORS = ("auto", "local", "ray")
MANY_CPUS = 16
MIN_FANOUT = 8
IN_FLIGHT = 2
"""Shards in flight per model: one in the forward pass, one being written."""


class LocalExecutor:
    """Runs everything in-process; collection keeps two shards in flight on one model."""

    name = "local"
    choice = "local"

    def run_collect(self, plan: CollectPlan, home: str, progress: Progress | None = None,
                    on_shard: Callable[[ShardResult], None] | None = None, lm: Any = None) -> list[ShardResult]:
        runner = ShardRunner(lm if lm is not None else load_for_spec(plan.spec, home), home)
        results: list[ShardResult] = []
        queue = list(plan.shards)
        with ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix="gnomon-shard") as pool:
            pending: set[Future[ShardResult]] = set()
            try:
                while queue or pending:
                    while queue and len(pending) < IN_FLIGHT:
                        pending.add(pool.submit(runner.run, plan.spec, plan.dataset_name, queue.pop(0), progress))
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        res = fut.result()  # raises the shard's error; the other shard still finishes
                        results.append(res)
                        if on_shard is not None:
                            on_shard(res)
            finally:
                queue.clear()
                wait(pending)
        return sorted(results, key=lambda r: r.index)

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        out = []
        for item in items:
            r = fn(item)
            out.append(r)
            if on_result is not None:
                on_result(r)
        return out


class _CollectWorker:
    """Ray actor body: loads the model once, then collects shard after shard (two at a
    time: the actor runs with ``max_concurrency=2`` and a :class:`ShardRunner`)."""

    def __init__(self, spec: CollectSpec, home: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.runner = ShardRunner(load_for_spec(spec, home), home)

    def run(self, spec: CollectSpec, dataset_name: str, task: ShardTask) -> ShardResult:
        return self.runner.run(spec, dataset_name, task)

    def pid(self) -> int:
        return os.getpid()


def _pool_key(spec: CollectSpec, home: str) -> tuple[Any, ...]:
    return (spec.model, spec.revision, spec.model_dtype, spec.trust_remote_code, spec.seed, home)


@dataclass
class RayExecutor:
    """Ray actor pool for collection, Ray tasks for stateless groups."""

    address: str | None = None
    num_workers: int | None = None
    """Actors for collection; default one per GPU, else one per CPU."""
    name: str = "ray"
    choice: str = "ray"
    _pools: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict, repr=False)

    def _ray(self) -> Any:
        from jobs.ray_runtime import ensure_ray

        return ensure_ray(self.address)

    def _actors(self, plan: CollectPlan, home: str) -> list[Any]:
        """The pool for this model (kept for later collections in this job), started on first use."""
        key = _pool_key(plan.spec, home)
        if key in self._pools:
            return self._pools[key]
        ray = self._ray()
        from jobs.ray_runtime import cluster_cpus, cluster_gpus

        self.close()  # one model's pool at a time: a fleet walks through checkpoints
        gpus, cpus = cluster_gpus(), cluster_cpus()
        n = self.num_workers or (gpus if gpus else max(1, cpus))
        n = max(1, min(n, len(plan.shards) or 1))
        per_cpu = 1 if gpus else max(1, cpus // n)
        actor_cls = ray.remote(_CollectWorker).options(num_gpus=1 if gpus else 0, num_cpus=per_cpu,
                                                       max_concurrency=IN_FLIGHT)
        self._pools[key] = [actor_cls.remote(plan.spec, home, per_cpu) for _ in range(n)]
        return self._pools[key]

    def close(self) -> None:
        """Stop the collection actors (their models are freed)."""
        if not self._pools:
            return
        import ray

        for actors in self._pools.values():
            for actor in actors:
                ray.kill(actor)
        self._pools.clear()

    def run_collect(self, plan: CollectPlan, home: str, progress: Progress | None = None,
                    on_shard: Callable[[ShardResult], None] | None = None,
                    on_start: Callable[[list[Any]], None] | None = None, lm: Any = None) -> list[ShardResult]:
        ray = self._ray()
        actors = self._actors(plan, home)
        if on_start is not None:
            on_start(list(actors))
        pending: dict[Any, tuple[Any, ShardTask]] = {}
        queue = list(plan.shards)
        results: list[ShardResult] = []

        def submit(actor: Any) -> None:
            task = queue.pop(0)
            pending[actor.run.remote(plan.spec, plan.dataset_name, task)] = (actor, task)

        try:
            for _ in range(IN_FLIGHT):
                for actor in actors:
                    if queue:
                        submit(actor)
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, task = pending.pop(done[0])
                res: ShardResult = ray.get(done[0])  # raises if the shard or its actor failed
                results.append(res)
                if progress is not None:
                    progress(len(task.ids), res.tokens)
                if on_shard is not None:
                    on_shard(res)
                if queue:
                    submit(actor)
        except BaseException:
            self.close()  # a failed pool is not reused
            raise
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


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class AutoExecutor:
    """Chooses local or Ray per stage (see the module docstring); ``name`` and ``choice``
    describe the last choice."""

    address: str | None = None
    num_workers: int | None = None
    name: str = "auto"
    choice: str = "auto"
    _local: LocalExecutor = field(default_factory=LocalExecutor, repr=False)
    _ray: RayExecutor | None = field(default=None, repr=False)

    def _cluster(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def _use(self, kind: str, reason: str) -> Any:
        self.name, self.choice = kind, f"{kind} (auto: {reason})"
        if kind == "local":
            return self._local
        if self._ray is None:
            self._ray = RayExecutor(address=self.address, num_workers=self.num_workers)
        return self._ray

    def collect_choice(self) -> tuple[str, str]:
        cpus = os.cpu_count() or 1
        if self._cluster():
            return "ray", f"cluster at {self._cluster()}"
        gpus = _gpu_count()
        if gpus >= 2:
            return "ray", f"{gpus} GPUs, one actor each"
        if gpus == 0 and cpus > MANY_CPUS:
            return "ray", f"{cpus} CPUs, no GPU"
        return "local", f"one node, {cpus} CPUs, {gpus or 'no'} GPU"

    def run_collect(self, plan: CollectPlan, home: str, progress: Progress | None = None,
                    on_shard: Callable[[ShardResult], None] | None = None, lm: Any = None,
                    **kw: Any) -> list[ShardResult]:
        ex = self._use(*self.collect_choice())
        return ex.run_collect(plan, home, progress, on_shard=on_shard, lm=lm, **kw)  # type: ignore[no-any-return]

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: Callable[[R], None] | None = None) -> list[R]:
        cpus = os.cpu_count() or 1
        if self._cluster():
            ex = self._use("ray", f"cluster at {self._cluster()}")
        elif len(items) >= MIN_FANOUT and cpus >= 2:
            ex = self._use("ray", f"{len(items)} independent tasks, {cpus} CPUs")
        else:
            ex = self._use("local", f"{len(items)} task(s), {cpus} CPUs")
        return ex.map(fn, items, on_result=on_result)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._ray is not None:
            self._ray.close()


def make_executor(kind: str = "auto", address: str | None = None, num_workers: int | None = None) -> Any:
    if kind == "auto":
        return AutoExecutor(address=address, num_workers=num_workers)
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address=address, num_workers=num_workers)
    from pipeline.types import GnomonError

    raise GnomonError(f"unknown executor {kind!r}: use {', '.join(EXECUTORS)}")
