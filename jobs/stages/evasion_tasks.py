"""The per-version task of ``gnomon evasion``: one version's figures at every layer, and its
behaviour on the concept's neutral prompts.

The figures (:func:`pipeline.evasion.figures.checkpoint_figures`) read the version's stored
``mean`` rows of the concept (train to fit, val to choose, test to report); the originals are
the base's train mean differences, the monitor the pre-registered one. The behaviour is
what drift reads per prompt (:func:`jobs.stages.drift_tasks.drift_checkpoint`: VADER of the greedy
continuation for sentiment, the next-token log-odds of the concept's words otherwise), so
the job pairs every checkpoint with the base prompt by prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.stages.drift_tasks import DriftTask, drift_checkpoint
from pipeline.evasion.figures import Monitor, checkpoint_figures

# lazy: pyarrow (heavy; imported where used)

__all__ = ["EvasionTask", "evasion_checkpoint"]


@dataclass(frozen=True)
class EvasionTask:
    model: str
    base: str
    home: str
    concept: str
    labels: tuple[str, str]
    layers: tuple[int, ...]
    monitor: dict[str, Any]
    prompts: tuple[str, ...]
    max_new_tokens: int
    n_boot: int
    probes: bool = True


def _splits(home: str, model: str, concept: str, labels: tuple[str, str], layer: int) -> dict[str, Any]:
    from pipeline.fleet_compare import read_layer_data

    d = read_layer_data(home, model, concept, layer, labels[0], labels[1], "mean")
    return {s: d.part(s) for s in ("train", "val", "test")}


def evasion_checkpoint(task: EvasionTask) -> dict[str, Any]:
    """``{"model", "layers": {layer: figures}, "scores": [per prompt], "behaviour"}``."""
    m = task.monitor
    monitor = Monitor(layer=int(m["layer"]), unit=np.asarray(m["unit"], np.float64), threshold=float(m["threshold"]))
    originals = {}
    layers = {}
    for layer in task.layers:
        base = _splits(task.home, task.base, task.concept, task.labels, layer)
        originals[layer] = base["train"][0].mean(0) - base["train"][1].mean(0)
        layers[layer] = base if task.model == task.base else _splits(task.home, task.model, task.concept,
                                                                      task.labels, layer)
    figs = checkpoint_figures(layers, originals, monitor, n_boot=task.n_boot, probes=task.probes)
    out: dict[str, Any] = {"model": task.model, "layers": {str(k): v for k, v in figs.items()}}
    if task.prompts:
        got = drift_checkpoint(DriftTask(model=task.model, home=task.home, concept=task.concept, layer=monitor.layer,
                                         unit=tuple(float(x) for x in monitor.unit), prompts=task.prompts,
                                         max_new_tokens=task.max_new_tokens, chat=False))
        out.update(scores=got["scores"], behaviour=got["behaviour"], texts=got["texts"])
    return out
