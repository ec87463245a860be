"""Typed stage results, carried from one stage to the next.

A stage hands the next one what it established, so nothing is re-derived: the collection
says which layers and positions it made complete for which model fingerprint and dataset
content, and fitting plans its groups from exactly that. ``to_dict()`` is the JSON form
printed by ``--json`` and written into the DAG's stage records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CollectResult", "FitResult", "GroupResult", "StageRecord"]


@dataclass(frozen=True)
class CollectResult:
    """One (model, dataset) collection: what is complete in the store after it."""

    model: str
    revision: str
    dataset: str
    """Name in the store."""
    dataset_hash: str
    fingerprint: str
    hidden_size: int
    num_layers: int
    layers: tuple[int, ...]
    """The layers collected (checked against the model once, here)."""
    positions: tuple[str, ...]
    shards: int = 0
    written_files: int = 0
    skipped_files: int = 0
    rows: int = 0
    bytes: int = 0
    examples: int = 0
    tokens: int = 0
    seconds: float = 0.0
    collect_seconds: float = 0.0
    """The executor's part only: model loads, forward passes, writes."""
    executor: str = "none"
    executor_choice: str = "none (everything already stored)"
    store: str = ""
    stored: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["positions"] = list(self.layers), list(self.positions)
        return d


@dataclass
class GroupResult:
    """One (layer, position) group: its contrast set read once, every method fitted on it."""

    layer: int
    position: str
    directions: list[Any] = field(default_factory=list)
    """Fitted ``Direction`` values, one per method that produced one."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(method, why) for methods that produced no direction here."""
    read_seconds: float = 0.0
    fit_seconds: float = 0.0
    scores: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    """Method -> split (``val``, ``test``) -> (positive, negative) projections on its unit
    vector (float32 arrays): what the search-corrected selection (:mod:`pipeline.confirm`) needs."""


@dataclass
class FitResult:
    """One (model, concept) fit: the sweep, the chosen directions and their catalog refs."""

    concept: str
    model: str
    revision: str
    positive: str
    negative: str
    groups: int
    executor: str
    collect: dict[str, Any]
    seconds: dict[str, float]
    sweep: str
    registered: int
    best: list[dict[str, Any]]
    failed_groups: list[str]
    extra: dict[str, Any] = field(default_factory=dict)
    """Further summary fields a stage adds (kept in ``to_dict``)."""

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d.update(self.extra)
        return d


@dataclass(frozen=True)
class StageRecord:
    """What the DAG did with one stage: ran or skipped (inputs unchanged), and its time."""

    key: str
    kind: str
    status: str
    """``ran`` or ``skipped``."""
    seconds: float
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
