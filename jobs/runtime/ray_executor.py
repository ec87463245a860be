"""The Ray executor: ``map`` as Ray tasks, ``map_stateful`` as pools of Ray actors.

A pool is ``num_workers`` actors (default one per GPU, else one per free CPU), each running
``init()`` once; items go to whichever actor has room, ``concurrency`` at a time per actor.
Pools are kept by key for later calls (the next concept on the same model version) and at
most ``max_pools`` live at once: the least recently used idle one is stopped to make room,
and ``release(key)`` stops one as soon as the caller knows nothing else needs it (the DAG
does), which gives its CPUs or GPUs back to the tasks waiting for them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobs.runtime.ray_runtime import apply_worker_env, cluster_cpus, cluster_gpus
from pipeline.types import GnomonError

# lazy: ray (heavy; imported where used); jobs.runtime.ray_runtime (tests patch it at the source)

__all__ = ["RayExecutor"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
OnResult = Callable[[Any], None] | None


class _Worker:
    """Ray actor body: ``init()`` once, then ``fn(state, item)`` per call."""

    def __init__(self, init: Callable[[], Any]) -> None:
        apply_worker_env()
        self.state = init()

    def call(self, fn: Callable[[Any, Any], Any], item: Any) -> Any:
        return fn(self.state, item)

    def pid(self) -> int:
        return os.getpid()


def _task(fn: Callable[[Any], Any], item: Any) -> Any:
    """Ray task body of ``map``: ``fn(item)`` in a worker set up as every gnomon worker is."""
    apply_worker_env()
    return fn(item)


@dataclass
class RayExecutor:
    """Ray tasks for ``map``, pools of Ray actors for ``map_stateful``."""

    address: str | None = None
    num_workers: int | None = None
    """Actors per pool; default one per GPU, else one per CPU (less ``spare_cpus``)."""
    spare_cpus: int = 0
    """CPUs a pool leaves free for tasks (the DAG keeps one for fitting while a model collects)."""
    max_pools: int | None = None
    """Pools alive at once (default: one per GPU, else one); the least recently used idle
    pool is stopped to make room."""
    replacements: int = 3
    """Actors a pool may start again in one call after losing all of them (see ``_lost``)."""
    name: str = "ray"
    choice: str = "ray"
    overlaps: bool = True
    _pools: OrderedDict[Hashable, list[Any]] = field(default_factory=OrderedDict, repr=False)
    _busy: dict[Hashable, int] = field(default_factory=dict, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def _ray(self) -> Any:
        from jobs.runtime.ray_runtime import ensure_ray

        return ensure_ray(self.address)

    def _make_pool(self, init: Callable[[], Any], n_items: int, concurrency: int) -> list[Any]:
        ray = self._ray()

        gpus, cpus = cluster_gpus(), cluster_cpus()
        free = max(1, cpus - self.spare_cpus)
        n = self.num_workers or (gpus if gpus else free)
        n = max(1, min(n, n_items or 1))
        per_cpu = 1 if gpus else max(1, free // n)
        cls = ray.remote(_Worker).options(num_gpus=1 if gpus else 0, num_cpus=per_cpu, max_concurrency=concurrency)
        return [cls.remote(init) for _ in range(n)]

    def _acquire(self, key: Hashable, init: Callable[[], Any], n_items: int, concurrency: int) -> list[Any]:
        """The pool for ``key``, started (after stopping idle pools over the limit) when missing."""
        with self._cond:
            while True:
                if key in self._pools:
                    self._pools.move_to_end(key)
                    self._busy[key] = self._busy.get(key, 0) + 1
                    return self._pools[key]
                limit = self.max_pools or max(1, cluster_gpus())
                idle = [k for k in self._pools if not self._busy.get(k)]
                while len(self._pools) >= limit and idle:
                    self._stop(idle.pop(0))
                if len(self._pools) < limit:
                    self._pools[key] = self._make_pool(init, n_items, concurrency)
                    self._busy[key] = 1
                    return self._pools[key]
                self._cond.wait()

    def _stop(self, key: Hashable) -> None:
        import ray

        for actor in self._pools.pop(key, []):
            ray.kill(actor)
        self._busy.pop(key, None)

    def _done(self, key: Hashable, failed: bool) -> None:
        with self._cond:
            self._busy[key] = self._busy.get(key, 1) - 1
            if failed and not self._busy[key]:
                self._stop(key)  # a failed pool is not reused
            self._cond.notify_all()

    def map_stateful(self, init: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T], *,
                     key: Hashable = None, concurrency: int = 1, on_result: OnResult = None,
                     on_start: OnResult = None) -> list[R]:
        ray = self._ray()
        key = key if key is not None else object()
        actors = self._acquire(key, init, len(items), concurrency)
        if on_start is not None:
            on_start(list(actors))
        pending: dict[Any, tuple[Any, int]] = {}
        queue = list(enumerate(items))
        out: list[Any] = [None] * len(items)
        failed = True
        lost = 0

        def fill() -> None:
            """Give every live actor work up to ``concurrency`` items in flight."""
            for _ in range(concurrency):
                for actor in actors:
                    if queue and sum(a is actor for a, _ in pending.values()) < concurrency:
                        i, item = queue.pop(0)
                        pending[actor.call.remote(fn, item)] = (actor, i)

        try:
            fill()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, i = pending.pop(done[0])
                try:
                    out[i] = ray.get(done[0])  # raises if the item failed
                except ray.exceptions.RayActorError:
                    lost += 1   # its node died: the item goes to another actor
                    self._lost(actors, actor, i, items, queue, lambda: self._make_pool(init, 1, concurrency),
                               lost <= self.replacements)
                    fill()
                    continue
                if on_result is not None:
                    on_result(out[i])
                fill()
            failed = False
        finally:
            self._done(key, failed)
        return out

    def _lost(self, actors: list[Any], actor: Any, i: int, items: Sequence[Any], queue: list[tuple[int, Any]],
              replace: Callable[[], list[Any]], may_replace: bool) -> None:
        """An actor died (its node was lost, or its process was killed): drop it from the pool,
        which later calls share, and queue its item again. Rerunning an item is safe: a
        shard's manifest is written last, so the rerun skips the layers that completed and
        overwrites a shard left without one. When no actor is left, one replacement starts
        (Ray places it on a node still alive, once it has room), up to ``replacements`` per
        call: an item that kills every actor it meets is an error, not bad luck."""
        if actor in actors:
            actors.remove(actor)
        if not actors:
            if not may_replace:
                raise GnomonError(f"item {i} lost its actor {self.replacements + 1} times (each died while "
                                  "running it): the cluster keeps losing nodes, or the item kills its worker")
            actors.extend(replace())
        queue.insert(0, (i, items[i]))

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: OnResult = None,
            num_cpus: float = 1) -> list[R]:
        ray = self._ray()
        self._make_room(ray, num_cpus)
        # Retries cover a worker process that dies (OOM, a native crash); a Python
        # exception is a real error and is raised at once.
        remote = ray.remote(num_cpus=num_cpus, max_retries=3)(_task)
        fn_ref = ray.put(fn)   # serialized once, not with every item
        refs = [remote.remote(fn_ref, item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            out[index[done[0]]] = ray.get(done[0])
            if on_result is not None:
                on_result(out[index[done[0]]])
        return out

    def _make_room(self, ray: Any, num_cpus: float) -> None:
        """Idle pools kept for reuse hold CPUs; when not even one task fits beside them, stop
        them (least recently used first), or ``map`` after ``map_stateful`` waits forever."""
        with self._cond:
            idle = [k for k in self._pools if not self._busy.get(k)]
            if idle and ray.available_resources().get("CPU", 0.0) < num_cpus:
                for k in idle:
                    self._stop(k)

    def release(self, key: Hashable) -> None:
        with self._cond:
            if key in self._pools and not self._busy.get(key):
                self._stop(key)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop every pool (their models are freed)."""
        with self._cond:
            for key in list(self._pools):
                self._stop(key)
            self._cond.notify_all()
