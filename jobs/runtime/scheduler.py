"""The DAG scheduler: stages with dependencies, keyed by the content of their inputs.

A :class:`Stage` names the stages it needs and a function from their results to its own.
Its key is a content hash: ``inputs(deps)`` returns what the result depends on (model
fingerprint, dataset hash, settings), and a stage whose record under
``<home>/jobs/<job>/`` holds the same digest is skipped, its recorded result reused. So a
rerun does nothing, and a change redoes exactly the stages whose inputs it touches (and,
through their results, the stages after them). A stage without ``inputs`` (collection)
always runs; it asks the activation store, the one source of truth for which shards are
complete, and returns at once when everything is there.

A stage starts as soon as its dependencies are done. With an executor that ``overlaps``
(Ray), several stages are in flight at once, each in a driver thread waiting on its Ray
work, so one model's fits run while the next model collects; stages that hold a model
worker pool (``pools``) take one of ``slots`` at a time, a warm pool first, and a pool is
released as soon as no stage left needs it. Locally, stages run one at a time in the order
they were added: the same DAG, sequentially.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.runtime.output import elapsed
from jobs.runtime.results import StageRecord
from pipeline.atomic import write_json
from pipeline.storage import Storage

__all__ = ["Stage", "run_stages", "digest", "elapsed"]


@dataclass
class Stage:
    key: str
    """Unique name, e.g. ``fit/<model>/<revision>/<concept>`` (also the marker's name)."""
    kind: str
    run: Callable[[dict[str, Any]], Any]
    """Given ``{dependency key: result}``, returns this stage's result."""
    deps: tuple[str, ...] = ()
    inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """What the result depends on (hashed into the stage key); None: always run."""
    pools: tuple[Hashable, ...] = ()
    """Model worker pools this stage uses (takes a slot while it runs)."""
    report: bool = True
    """Part of the job's returned results (collection is summarised, not reported)."""
    name: Callable[[Any], str] | None = None
    """The key the result is reported under, from the result (default: ``key``)."""
    log: bool = True
    """Write ``[run ]``/``[skip]``/``[done]`` lines for this stage."""
    did_work: Callable[[Any], bool] | None = None
    """For a stage without ``inputs``: whether its result shows work done (else recorded as skipped)."""
    record: StageRecord | None = field(default=None, init=False)


def digest(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def _marker(home: Path, job: str, key: str) -> Path:
    return home / "jobs" / job / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _shared(home: Path, marker: Path) -> tuple[Any, str] | None:
    """On a home on object storage, the marker's storage and key there: completion markers
    are shared by every node, so a rerun submitted anywhere skips what any node finished."""
    uri = getattr(home, "uri", None)
    if not uri:
        return None

    return Storage.open(uri), marker.relative_to(home).as_posix()


def _read_marker(home: Path, m: Path) -> dict | None:
    remote = _shared(home, m)
    if remote is not None:
        return remote[0].read_json(remote[1])  # type: ignore[no-any-return]
    return json.loads(m.read_text()) if m.is_file() else None  # type: ignore[no-any-return]


def _write_marker(home: Path, m: Path, doc: dict) -> None:
    remote = _shared(home, m)
    if remote is not None:
        remote[0].write_json(remote[1], doc, default=str)
    else:
        write_json(m, doc, default=str)


def _as_json(result: Any) -> Any:
    return result.to_dict() if hasattr(result, "to_dict") else result


def _execute(stage: Stage, deps: dict[str, Any], home: Path, job: str, log: Callable[[str], None]) -> Any:
    t0 = time.perf_counter()
    inputs = stage.inputs(deps) if stage.inputs is not None else None
    d = digest(inputs) if inputs is not None else ""
    m = _marker(home, job, stage.key)
    doc = _read_marker(home, m) if inputs is not None else None
    if doc is not None and doc.get("inputs_sha256") == d:
        if stage.log:
            log(f"[skip] {stage.key} (done {doc['finished']})")
        stage.record = StageRecord(stage.key, stage.kind, "skipped", 0.0, d)
        return doc["result"]
    if stage.log:
        log(f"[run ] {stage.key}")
    result = stage.run(deps)
    seconds = time.perf_counter() - t0
    if stage.log:
        log(f"[done] {stage.key} in {elapsed(seconds)}")
    if inputs is not None:
        _write_marker(home, m, {"stage": stage.key, "inputs_sha256": d, "inputs": inputs, "result": _as_json(result),
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    ran = stage.did_work(result) if stage.did_work is not None else True
    stage.record = StageRecord(stage.key, stage.kind, "ran" if ran else "skipped", round(seconds, 3), d)
    return result


def run_stages(stages: Sequence[Stage], executor: Any, home: Path, job: str, log: Callable[[str], None],
               slots: int = 1) -> dict[str, Any]:
    """Run ``stages`` (dependencies before dependents); returns ``{key: result}``."""
    by_key = {s.key: s for s in stages}
    if len(by_key) != len(stages):
        raise ValueError("stage keys must be unique")
    for s in stages:
        missing = [d for d in s.deps if d not in by_key]
        if missing:
            raise ValueError(f"stage {s.key} needs unknown stage {missing[0]}")
    results: dict[str, Any] = {}
    todo = list(stages)
    left_per_pool: dict[Hashable, int] = {}
    for s in stages:
        for p in s.pools:
            left_per_pool[p] = left_per_pool.get(p, 0) + 1
    warm: list[Hashable] = []
    lock = threading.Lock()

    def finished(stage: Stage) -> None:
        with lock:
            for p in stage.pools:
                left_per_pool[p] -= 1
                if left_per_pool[p] == 0:
                    executor.release(p)  # no stage left needs this model
            if stage.pools:
                warm[:] = list(stage.pools)

    def ready() -> list[Stage]:
        out = [s for s in todo if all(d in results for d in s.deps)]
        # a stage on a warm pool first (its model is loaded), else the order they were added
        return sorted(out, key=lambda s: (not any(p in warm for p in s.pools), todo.index(s)))

    threads = 1 if not getattr(executor, "overlaps", False) else max(2, len(stages))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gnomon-stage") as pool:
        running: dict[Future[Any], Stage] = {}
        try:
            while todo or running:
                busy = sum(1 for s in running.values() if s.pools)
                for s in ready():
                    if len(running) >= threads or (s.pools and busy >= slots):
                        continue
                    busy += bool(s.pools)
                    todo.remove(s)
                    deps = {d: results[d] for d in s.deps}
                    running[pool.submit(_execute, s, deps, home, job, log)] = s
                if not running:
                    raise ValueError(f"stages {[s.key for s in todo]} wait on each other")
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    s = running.pop(fut)
                    results[s.key] = fut.result()
                    finished(s)
        finally:
            todo.clear()
            wait(list(running))
    return results
