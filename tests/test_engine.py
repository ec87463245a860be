"""The generic executors: ``map`` and ``map_stateful`` with keyed pools, local and on Ray."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from jobs.runtime.engine import LocalExecutor
from jobs.runtime.ray_executor import RayExecutor

INITS: list[str] = []


def _init(tag: str) -> dict[str, Any]:
    INITS.append(tag)
    return {"tag": tag, "pid": os.getpid()}


def _use(state: dict[str, Any], item: int) -> tuple[str, int, int]:
    if item < 0:
        raise ValueError(f"bad item {item}")
    return state["tag"], item * 2, state["pid"]


def _square(x: int) -> int:
    return x * x


def test_local_pool_is_built_once_per_key_and_released() -> None:
    from functools import partial

    INITS.clear()
    ex = LocalExecutor()
    seen: list[Any] = []
    out = ex.map_stateful(partial(_init, "a"), _use, [1, 2, 3], key="a", concurrency=2, on_result=seen.append)
    assert [o[:2] for o in out] == [("a", 2), ("a", 4), ("a", 6)] and len(seen) == 3  # item order kept
    ex.map_stateful(partial(_init, "a"), _use, [4], key="a")
    assert INITS == ["a"]  # the second call found the state
    ex.release("a")
    ex.map_stateful(partial(_init, "a"), _use, [5], key="a")
    assert INITS == ["a", "a"]
    with pytest.raises(ValueError, match="bad item -1"):
        ex.map_stateful(partial(_init, "a"), _use, [1, -1, 2], key="a", concurrency=2)
    assert ex.map(_square, [3, 1, 2]) == [9, 1, 4]


def test_ray_pool_is_kept_per_key_and_stopped_on_release(ray_instance: Any) -> None:
    from functools import partial

    import ray.cloudpickle

    # Ray workers cannot import this test module: ship its functions by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor(num_workers=1, spare_cpus=1)
    try:
        a1 = ex.map_stateful(partial(_init, "a"), _use, [1, 2], key="a", concurrency=2)
        a2 = ex.map_stateful(partial(_init, "a"), _use, [3], key="a")
        assert {o[2] for o in a1} == {o[2] for o in a2} != {os.getpid()}  # one actor served both calls
        ex.release("a")
        assert "a" not in ex._pools
        b = ex.map_stateful(partial(_init, "b"), _use, [1], key="b")
        assert b[0][:2] == ("b", 2)
        assert ex.map(_square, list(range(5))) == [0, 1, 4, 9, 16]
        with pytest.raises(Exception, match="bad item -1"):
            ex.map_stateful(partial(_init, "b"), _use, [-1], key="b")
        assert "b" not in ex._pools  # a pool that failed is not reused
    finally:
        ex.close()


def _die_once(marker: str, state: dict[str, Any], item: int) -> tuple[int, int]:
    """Kill this actor's process the first time item 0 comes (as a lost node would)."""
    import time

    if item == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    time.sleep(0.2)   # the other actor is still busy when the first dies
    return item * 2, state["pid"]


def _die_always(state: dict[str, Any], item: int) -> int:
    os._exit(1)


def test_ray_pool_survives_an_actor_that_dies(ray_instance: Any, tmp_path: Any) -> None:
    """An actor that dies mid-item (its node lost, issue 23) loses nothing: its item runs again
    on the actor left, every result arrives once and in order, and the pool keeps the survivor."""
    from functools import partial

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor(num_workers=2)
    try:
        out = ex.map_stateful(partial(_init, "d"), partial(_die_once, str(tmp_path / "died")), list(range(6)), key="d")
        assert [o[0] for o in out] == [0, 2, 4, 6, 8, 10]
        assert (tmp_path / "died").exists()                 # one actor did die
        (survivor,) = ex._pools["d"]                           # the dead actor left the pool
        assert ray.get(survivor.pid.remote()) == out[0][1]    # and its item ran again on the survivor
    finally:
        ex.close()


def test_ray_pool_of_one_replaces_its_actor_and_gives_up_on_an_item_that_kills(ray_instance: Any,
                                                                                tmp_path: Any) -> None:
    """A pool whose only actor dies starts a replacement (a lost node's actor comes back on a
    node left); an item that kills every actor it meets fails after ``replacements``, in one line."""
    from functools import partial

    import ray.cloudpickle

    from pipeline.types import GnomonError

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = RayExecutor(num_workers=1, replacements=2)
    try:
        out = ex.map_stateful(partial(_init, "e"), partial(_die_once, str(tmp_path / "died")), [0, 1, 2], key="e")
        assert [o[0] for o in out] == [0, 2, 4] and len(ex._pools["e"]) == 1
        with pytest.raises(GnomonError, match="lost its actor 3 times"):
            ex.map_stateful(partial(_init, "f"), _die_always, [0], key="f")
    finally:
        ex.close()
