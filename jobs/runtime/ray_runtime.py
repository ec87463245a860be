"""Starting (or joining) Ray, explicitly: ``import jobs`` never starts it."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

# lazy: ray (heavy; imported where used)

DEFAULT_OBJECT_STORE = 512 * 1024 * 1024
"""Ray's default object store takes ~30% of RAM; activations travel through Parquet
files, not the object store, so a small one is enough."""


_INIT = threading.Lock()
"""The DAG runs stages in threads: two fit stages whose collection was already stored both
reached ``ray.init`` first, and the second failed ("called ray.init twice")."""


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               object_store_memory: int = DEFAULT_OBJECT_STORE) -> Any:
    """Initialise Ray once per process: a cluster when ``address``/``RAY_ADDRESS`` is set,
    else a local instance sized to this machine. Thread-safe."""
    import ray

    with _INIT:
        if not ray.is_initialized():
            _init(ray, address, num_cpus, object_store_memory)
    return ray


def ray_joined() -> bool:
    """This process is connected to Ray (checked without importing it)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def leave_ray() -> None:
    """Disconnect from Ray (stopping a local instance this process started). The CLI calls it
    when a command that joined Ray ends: left to Ray's exit hook, a driver on the netns testbed
    took ~1.1 s to exit after its last line; after ``ray.shutdown()``, ~0.3 s."""
    if ray_joined():
        with _INIT:
            sys.modules["ray"].shutdown()


def _init(ray: Any, address: str | None, num_cpus: int | None, object_store_memory: int) -> None:
    address = address or os.environ.get("RAY_ADDRESS")
    # No runtime environment: a job with one (even a few variables) gets worker processes of
    # its own, started after it asks; without one, a node's warm workers (WARM_NODE_ENV) take
    # its actors at once. What the workers need is set in them (apply_worker_env).
    # Ray's own INFO/WARNING lines ("Started a local Ray instance", token-auth notes) are not
    # gnomon's output; GNOMON_VERBOSE=1 shows them. Errors always show.
    quiet: dict[str, Any] = {} if os.environ.get("GNOMON_VERBOSE") else {"logging_level": logging.ERROR}
    if address:
        ray.init(address=address, log_to_driver=True, **quiet)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=object_store_memory,
                 include_dashboard=False, log_to_driver=True, **quiet)


WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
"""Set in every gnomon worker process (``apply_worker_env``) unless its node or job sets them."""

WARM_NODE_ENV = {"RAY_enable_worker_prestart": "1",
                 "RAY_preload_python_modules": "torch,transformers,transformers.modeling_utils"}
"""The environment of ``ray start`` on a worker node that keeps warm workers: the raylet starts
one Python worker per CPU when it starts (not when a job first asks), and each imports torch
and transformers (~5 s on one CPU, most of a collection actor's start) before taking work.
A driver without a runtime environment (``gnomon collect/run --ray-address``) gets them;
a submitted job brings its own (working folder, variables) and starts its own workers.
Ray's names (``preload_python_modules`` is experimental in Ray 2.x); ``infra/ray`` and the
testbed start their worker nodes with them."""


def apply_worker_env() -> None:
    """``WORKER_ENV`` in this (worker) process, under what the node or the job already set.
    HF_HUB_OFFLINE is read when huggingface_hub is imported, which a warm worker did
    already: it is a fallback; gnomon's loads pass ``local_files_only`` themselves."""
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, v)


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
