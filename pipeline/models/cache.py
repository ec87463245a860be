"""A per-process cache of loaded models, so one run loads each model once.

A job that collects several concepts and then evaluates on the same checkpoint would
otherwise load (and on first use convert) the same weights for every concept and stage.
Models are kept by their :class:`ModelSpec` and gnomon home; the most recently used
``GNOMON_MODEL_CACHE`` models (default 1) stay loaded, so a fleet walking through many
checkpoints holds one at a time. Callers must not change the weights of a cached model
(interventions go through hooks that are removed on exit, which is the rule anyway).

>>> lm = cached_model("tiny:llama")            # doctest: +SKIP
>>> cached_model("tiny:llama") is lm            # doctest: +SKIP
True
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from pipeline.home import gnomon_home
from pipeline.models.loading import LoadedModel, ModelSpec, file_stats, load_model

__all__ = ["cached_model", "clear_model_cache", "is_cached", "weights_signature"]

_CACHE: OrderedDict[tuple[ModelSpec, str, tuple | None], LoadedModel] = OrderedDict()
_LOCK = threading.Lock()


def weights_signature(spec: ModelSpec, home: Path) -> tuple | None:
    """(name, size, mtime) of the weight directory's files: a version rebuilt under the same
    id (new weights) is a new cache entry, not the old model. ``None`` for models that are
    not a directory of ours (tiny, the bundled GGUF, a GGUF file). The recorded identity
    (written at the first load) is not part of what was loaded."""
    try:
        source = spec.resolved_source(home)
    except Exception:  # noqa: BLE001 - load_model reports the bad id
        return None
    folder = home / "models" / spec.id if source == "registered" else (
        Path(spec.id).expanduser() if source == "hf_dir" else None)
    if folder is None or not folder.is_dir():
        return None
    return tuple(s for s in file_stats(folder, frozenset({"gnomon-fingerprint.json"})) if not s[0].startswith("."))


def _capacity() -> int:
    try:
        return max(0, int(os.environ.get("GNOMON_MODEL_CACHE", "1")))
    except ValueError:
        return 1


def _key(spec: ModelSpec, home: Path) -> tuple[ModelSpec, str, tuple | None]:
    """One identity for a spec whether or not its source was resolved yet (as the worker
    pools key it), and the weights it would load."""
    return replace(spec, source=None), str(home), weights_signature(spec, home)


def cached_model(spec: ModelSpec | str, home: str | Path | None = None) -> LoadedModel:
    """``load_model(spec, home)``, reusing this process's copy when there is one."""
    home_p = gnomon_home(home)
    spec = (ModelSpec(id=spec) if isinstance(spec, str) else spec).resolved(home_p)   # once, for the key and the load
    key = _key(spec, home_p)
    cap = _capacity()
    with _LOCK:  # one load at a time: two threads asking for the same model share it
        lm = _CACHE.get(key) if cap else None
        if lm is not None:
            _CACHE.move_to_end(key)
            return lm
        while len(_CACHE) >= max(cap, 1):  # free the old model before loading the new one
            _CACHE.popitem(last=False)
        lm = load_model(spec, home)
        if cap:
            _CACHE[key] = lm
        return lm


def is_cached(spec: ModelSpec | str, home: str | Path | None = None) -> bool:
    """Whether :func:`cached_model` would answer from this process's copy (no load)."""
    spec = ModelSpec(id=spec) if isinstance(spec, str) else spec
    home_p = gnomon_home(home)
    with _LOCK:
        return _key(spec, home_p) in _CACHE


def clear_model_cache() -> None:
    """Drop every cached model (tests; freeing memory between fleets)."""
    with _LOCK:
        _CACHE.clear()
