"""A ``gnomon report`` request resolved once, at the edge (issue 24): every model's spec
with its source resolved and its layers checked against its config (a concrete
:class:`~pipeline.models.layers.Layers`), and every concept's dataset loaded and its
:class:`~pipeline.concepts.record.Concept` read, once for all models. The report stages
(``jobs.stages.report_job``) trust it: the collection is handed the resolved model, the checked
layers and the loaded dataset, and the live checks read the concept record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.concepts.record import concept_record
from pipeline.models import ModelSpec
from pipeline.models.shape import model_shape
from pipeline.types import POSITIONS, GnomonError

# lazy: pyarrow (heavy; imported where used); pipeline.models.layers (tests patch it at the source)

__all__ = ["ReportModel", "ReportRequest", "resolve_report"]


@dataclass(frozen=True)
class ReportModel:
    spec: Any
    """:class:`~pipeline.models.ModelSpec`, source resolved."""
    layers: Any
    """The requested layers checked against the model's config (``Layers``), or the request's
    as given when no config says (a GGUF without a cached identity: checked at the load)."""

    @property
    def id(self) -> str:
        return str(self.spec.id)


@dataclass(frozen=True)
class ReportRequest:
    models: tuple[ReportModel, ...]
    datasets: dict[str, Any]
    """Concept name -> its loaded :class:`~pipeline.datasets.ConceptDataset`."""
    concepts: dict[str, Any]
    """The dataset's name (what the results call the concept) -> its :class:`~pipeline.concepts.record.Concept`."""


def resolve_report(spec: Any, home: Path) -> ReportRequest:
    """The request checked (concepts, models, position, strengths), every model exists and
    has the requested layers, read from its config without its weights (refused before Ray
    starts or a model loads; issue 21: ``--layers 99``); every concept's dataset loads."""
    from pipeline.datasets import load_dataset
    from pipeline.models.layers import check_layers
    if not spec.concepts or not spec.models:
        raise GnomonError("a report needs at least one concept and one model")
    if spec.position not in POSITIONS[:2]:
        raise GnomonError(f"position must be last or mean, not {spec.position!r}")
    if len(spec.strengths) < 7:
        raise GnomonError(f"give at least 7 strengths for the dose-response, got {len(spec.strengths)}")
    models = []
    for model in spec.models:
        ms = ModelSpec(id=model, revision=spec.revision).resolved(home)   # the one resolution of the model
        shape = model_shape(ms, home)
        layers = spec.layers if shape is None else check_layers(
            list(spec.layers) if spec.layers is not None else None, shape.num_layers, model)
        models.append(ReportModel(ms, layers))
    datasets = {c: load_dataset(c, home=home) for c in spec.concepts}
    concepts = {ds.name: concept_record(ds.name, home, dataset=ds) for ds in datasets.values()}
    return ReportRequest(tuple(models), datasets, concepts)
