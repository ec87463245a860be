"""What the fleet analyses share: the concept's labels, collecting missing activations for
every version (the existing collect job, complete shards reused), reading them back, and
writing a report (JSON, PNGs, HTML) that is also logged to MLflow."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.stages.collect_job import CollectSpec, run_collection
from pipeline import atomic
from pipeline.types import GnomonError

# lazy: numpy, pyarrow (heavy; imported where used)

__all__ = ["concept_labels", "ensure_collected", "read_versions", "report_dir", "write_json"]


def concept_labels(concept: str, home: Path) -> tuple[str, str]:
    from pipeline.datasets import load_dataset

    return load_dataset(concept, home=home).default_contrast


def ensure_collected(versions: Sequence[Any], concept: str, home: Path, executor: Any,
                     layers: Sequence[int] | None = None, collect: bool = True,
                     log: Any = print) -> list[str]:
    """Collect ``concept`` on every version that lacks it (all layers unless ``layers``);
    returns the versions collected now. ``collect=False`` makes a missing one an error.
    A version is an id or a resolved :class:`~pipeline.models.ModelSpec` (not resolved again)."""
    from pipeline.store import ActivationStore

    done = []
    for version in versions:
        vid = getattr(version, "id", version)
        if collect:
            # The collection itself decides what is missing, from the shard manifests and the
            # version's current fingerprint (a rebuilt version's old shards are redone); a
            # complete request returns without loading the model.
            got = run_collection(CollectSpec(model=version, dataset=concept, layers=tuple(layers) if layers else None),
                                 executor, home)
            if got.get("written_files"):
                log(f"collected {concept} on {vid}: {got['written_files']} files")
                done.append(vid)
            continue
        have = set(ActivationStore(home).layers(vid, "main", concept))
        if not have or (layers is not None and not set(layers) <= have):
            raise GnomonError(f"{vid} has no stored activations for {concept}; run `gnomon collect --model {vid} "
                              f"--dataset {concept}` or drop --no-collect")
    return done


def read_versions(versions: Sequence[str], concept: str, home: Path, positive: str, negative: str,
                  position: str, layers: Sequence[int] | None = None) -> dict[str, dict[int, Any]]:
    """``{version: {layer: LayerData}}`` for the stored layers (restricted to ``layers``)."""
    from pipeline.fleet_compare import read_layer_data
    from pipeline.store import ActivationStore

    store = ActivationStore(home)
    out: dict[str, dict[int, Any]] = {}
    for vid in versions:
        stored = store.layers(vid, "main", concept)
        use = [layer for layer in stored if layers is None or layer in layers]
        out[vid] = {layer: read_layer_data(home, vid, concept, layer, positive, negative, position) for layer in use}
    return out


def report_dir(home: Path, kind: str, concept: str, fleet: str, out: str | None = None) -> Path:
    """``<home>/reports/<kind>/<concept>-<fleet>-<time>/`` (figures and JSON of one report)."""
    d = home / "reports" / kind / f"{concept}-{fleet}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_json(path: Path, doc: Any) -> Path:
    return atomic.write_json(path, doc, indent=1, default=float)
