"""Starting (or joining) Ray, explicitly: ``import jobs`` never starts it."""

from __future__ import annotations

import json
import logging
import os
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


def _init(ray: Any, address: str | None, num_cpus: int | None, object_store_memory: int) -> None:
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": _worker_env()}
    # Ray's own INFO/WARNING lines ("Started a local Ray instance", token-auth notes) are not
    # gnomon's output; GNOMON_VERBOSE=1 shows them. Errors always show.
    quiet: dict[str, Any] = {} if os.environ.get("GNOMON_VERBOSE") else {"logging_level": logging.ERROR}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True, **quiet)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=object_store_memory,
                 include_dashboard=False, runtime_env=env, log_to_driver=True, **quiet)


WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def _worker_env() -> dict[str, str]:
    """``WORKER_ENV`` less what a submitted job's runtime environment already sets: inside a
    Ray Job (``gnomon submit``, a KubeRay ``RayJob``) Ray refuses to start a driver whose
    ``ray.init`` names a variable the job also names, even with the same value."""
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        taken = set((json.loads(job).get("runtime_env") or {}).get("env_vars") or {}) if job else set()
    except (ValueError, AttributeError):
        taken = set()
    return {k: v for k, v in WORKER_ENV.items() if k not in taken}


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
