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
