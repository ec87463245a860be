"""Executors: where per-item functions run. They know nothing of collection or fitting.

As datatrove's executors share one per-rank function and know nothing of the data, an
executor here has two operations and every stage is a plain function handed to them:

- ``map(fn, items)``: independent tasks (fitting one (layer, position), a report panel).
- ``map_stateful(init, fn, items, key=...)``: a pool of workers, each initialised once with
  ``init()`` (a loaded model), then ``fn(state, item)`` per item (a shard, a checkpoint to
  evaluate). Pools are kept by ``key``: a later call with the same key (the next concept
  on the same model version) finds the state already built. ``release(key)`` frees one.

``LocalExecutor`` runs in this process: tasks one after another, a pool is one state
shared by ``concurrency`` threads (collection: one shard in the forward pass, one being
written). ``RayExecutor`` (:mod:`jobs.runtime.ray_executor`) runs tasks as Ray tasks and pools as Ray actors (one GPU each
when the cluster has GPUs). ``AutoExecutor`` (``--executor auto``, the default) picks per
call by what pays:

- pools: Ray actors when a cluster address is given (``--ray-address`` / ``RAY_ADDRESS``),
  when the node has two or more GPUs (one actor each), or on a CPU-only node with more than
  ``MANY_CPUS`` cores; otherwise in-process, where a small model pays no Ray start-up
  (~3-4 s), no per-actor model load and no inter-process traffic.
- tasks: Ray when a cluster address is given, or when there are at least ``MIN_FANOUT``
  items and two or more CPUs (the items are single-threaded); otherwise in-process.

The choice and its reason are in ``choice`` and in the job summaries. ``overlaps`` says
whether work submitted from several driver threads at once runs side by side (the DAG
uses it to run one model's fits while the next model collects); the auto executor
overlaps only where the collection leaves CPUs free (a cluster, a GPU, Ray pools).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from jobs.runtime.ray_executor import RayExecutor
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["Executor", "AutoExecutor", "LocalExecutor", "make_executor", "EXECUTORS", "ExecutorKind", "MANY_CPUS",
           "MIN_FANOUT", "executor_names", "register_executor",
           "OnResult", "run_threads"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
OnResult = Callable[[Any], None] | None
MANY_CPUS = 16
MIN_FANOUT = 8


class Executor(Protocol):
    """What every stage is handed: the same per-item functions run locally or on Ray."""

    name: str
    choice: str

    @property
    def overlaps(self) -> bool:
        """Whether work submitted from several driver threads at once runs side by side."""
        ...

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: OnResult = None) -> list[R]: ...

    def map_stateful(self, init: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T], *,
                     key: Hashable = None, concurrency: int = 1, on_result: OnResult = None,
                     on_start: OnResult = None) -> list[R]: ...

    def release(self, key: Hashable) -> None: ...

    def close(self) -> None: ...


def run_threads(fn: Callable[[T], R], items: Sequence[T], threads: int, on_result: OnResult) -> list[R]:
    """``fn`` over ``items`` with at most ``threads`` in flight, results in item order; the
    first error is raised after the items already started have finished."""
    out: list[Any] = [None] * len(items)
    if threads <= 1:
        for i, item in enumerate(items):
            out[i] = fn(item)
            if on_result is not None:
                on_result(out[i])
        return out
    queue = list(enumerate(items))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gnomon-item") as pool:
        pending: dict[Future[R], int] = {}
        try:
            while queue or pending:
                while queue and len(pending) < threads:
                    i, item = queue.pop(0)
                    pending[pool.submit(fn, item)] = i
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    out[i] = fut.result()
                    if on_result is not None:
                        on_result(out[i])
        finally:
            queue.clear()
            wait(list(pending))
    return out


class LocalExecutor:
    """Everything in this process; a pool is one state shared by ``concurrency`` threads."""

    name = "local"
    choice = "local"
    overlaps = False

    def __init__(self, max_states: int = 1) -> None:
        self._states: OrderedDict[Hashable, Any] = OrderedDict()
        self._max = max_states
        self._lock = threading.Lock()

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: OnResult = None) -> list[R]:
        return run_threads(fn, items, 1, on_result)

    def map_stateful(self, init: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T], *,
                     key: Hashable = None, concurrency: int = 1, on_result: OnResult = None,
                     on_start: OnResult = None) -> list[R]:
        with self._lock:
            state = self._states.get(key) if key is not None else None
            if state is None:
                state = init()
                if key is not None:
                    self._states[key] = state
                    while len(self._states) > self._max:
                        self._states.popitem(last=False)
            elif key is not None:
                self._states.move_to_end(key)
        if on_start is not None:
            on_start([state])
        return run_threads(lambda item: fn(state, item), items, concurrency, on_result)

    def release(self, key: Hashable) -> None:
        with self._lock:
            self._states.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._states.clear()


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass
class AutoExecutor:
    """Chooses local or Ray per call (see the module docstring); ``name`` and ``choice``
    describe the last choice."""

    address: str | None = None
    num_workers: int | None = None
    spare_cpus: int = 0
    name: str = "auto"
    choice: str = "auto"
    _local: LocalExecutor = field(default_factory=LocalExecutor, repr=False)
    _ray: Any = field(default=None, repr=False)

    @property
    def overlaps(self) -> bool:
        """Overlap a model's fits with the next model's collection only where the collection
        leaves the CPUs free: on a cluster, with a GPU doing the forward passes, or when the
        pools are Ray actors anyway (many CPUs). On a CPU-only node the in-process collection
        already runs on every core, and fits beside it only contend (``bench/fleet.py``)."""
        return self.pool_choice()[0] == "ray" or _gpu_count() >= 1

    def _cluster(self) -> str | None:
        return self.address or os.environ.get("RAY_ADDRESS") or None

    def _use(self, kind: str, reason: str) -> Any:
        self.name, self.choice = kind, f"{kind} (auto: {reason})"
        if kind == "local":
            return self._local
        if self._ray is None:
            self._ray = RayExecutor(address=self.address, num_workers=self.num_workers, spare_cpus=self.spare_cpus)
        return self._ray

    def pool_choice(self) -> tuple[str, str]:
        cpus = os.cpu_count() or 1
        if self._cluster():
            return "ray", f"cluster at {self._cluster()}"
        gpus = _gpu_count()
        if gpus >= 2:
            return "ray", f"{gpus} GPUs, one actor each"
        if gpus == 0 and cpus > MANY_CPUS:
            return "ray", f"{cpus} CPUs, no GPU"
        return "local", f"one node, {cpus} CPUs, {gpus or 'no'} GPU"

    def map_stateful(self, init: Callable[[], S], fn: Callable[[S, T], R], items: Sequence[T], *,
                     key: Hashable = None, concurrency: int = 1, on_result: OnResult = None,
                     on_start: OnResult = None) -> list[R]:
        ex = self._use(*self.pool_choice())
        return ex.map_stateful(init, fn, items, key=key, concurrency=concurrency,  # type: ignore[no-any-return]
                               on_result=on_result, on_start=on_start)

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_result: OnResult = None) -> list[R]:
        cpus = os.cpu_count() or 1
        if self._cluster():
            ex = self._use("ray", f"cluster at {self._cluster()}")
        elif len(items) >= MIN_FANOUT and cpus >= 2:
            ex = self._use("ray", f"{len(items)} independent tasks, {cpus} CPUs")
        else:
            ex = self._use("local", f"{len(items)} task(s), {cpus} CPUs")
        return ex.map(fn, items, on_result=on_result)  # type: ignore[no-any-return]

    def release(self, key: Hashable) -> None:
        self._local.release(key)
        if self._ray is not None:
            self._ray.release(key)

    def close(self) -> None:
        self._local.close()
        if self._ray is not None:
            self._ray.close()


@dataclass(frozen=True)
class ExecutorKind:
    """A registered executor: ``--executor NAME``, a job spec's ``executor = NAME``."""

    name: str
    make: Callable[[str | None, int | None, int], Executor]
    """``make(address, num_workers, spare_cpus)``."""
    help: str


EXECUTORS: dict[str, ExecutorKind] = {}
"""The registry every ``--executor`` option, spec check and :func:`make_executor` reads."""


def register_executor(kind: ExecutorKind) -> ExecutorKind:
    EXECUTORS[kind.name] = kind
    return kind


def executor_names() -> tuple[str, ...]:
    return tuple(EXECUTORS)


def _ray(address: str | None, num_workers: int | None, spare_cpus: int) -> Executor:
    return RayExecutor(address=address, num_workers=num_workers, spare_cpus=spare_cpus)


register_executor(ExecutorKind("auto", lambda a, n, s: AutoExecutor(address=a, num_workers=n, spare_cpus=s),
                               "in-process on one node with few cores and at most one GPU, Ray actors with several "
                               "GPUs or a cluster address (the choice is stated in the summary)"))
register_executor(ExecutorKind("local", lambda a, n, s: LocalExecutor(), "in this process, no Ray"))
register_executor(ExecutorKind("ray", _ray, "a local Ray instance, or a cluster via --ray-address"))


def make_executor(kind: str = "auto", address: str | None = None, num_workers: int | None = None,
                  spare_cpus: int = 0) -> Executor:
    """The executor a command creates once and hands to every stage."""
    if kind not in EXECUTORS:
        raise GnomonError(f"unknown executor {kind!r}: use {', '.join(EXECUTORS)}")
    return EXECUTORS[kind].make(address, num_workers, spare_cpus)
