"""Files the catalog writes: the on-disk copy of every direction, pending-registration
markers, and the layer-sweep curve (JSON + PNG).

Every direction is saved under ``<home>/directions/<concept>/`` *before* MLflow is
contacted, and a marker under ``<home>/directions/.pending/`` records how to register
it. The marker is removed once MLflow holds the version, so a dead tracking server or a
killed process loses nothing: ``gnomon catalog register-pending`` finishes the job.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.atomic import move_into_place, temp_beside, write_json
from pipeline.direction import Direction, recorded_content_sha256
from pipeline.plots import curve_figure
from pipeline.store import sha256_file
from pipeline.types import GnomonError


def _part(text: str, n: int | None = None) -> str:
    """A filename-safe piece; empty provenance fields (hand-made directions) read ``na``."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text[:n] if n else text).strip("_.") or "na"


def local_name(direction: Direction) -> str:
    p = direction.provenance
    return (f"{_part(p.fingerprint, 12)}-L{p.layer}-{_part(p.position)}-{_part(p.method)}-"
            f"{_part(p.dataset_hash, 8)}.safetensors")


def identity(direction: Direction) -> str:
    """The direction's identity: a hash of its whole provenance (model fingerprint, layer,
    position, method and parameters, dataset hash, code version...). A refit of the same
    identity may differ in the last bits (float summation order), so registration and
    pending markers dedupe on this, not only on the file's sha256."""
    text = json.dumps(direction.provenance.to_json(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def drop_superseded(home: Path, keep: Path, ident: str) -> None:
    """Remove pending markers (not files) of other saved copies of the same identity: a
    rerun after a crash re-saves its directions, and only the newest copy is registered."""
    for marker, req in read_pending(home):
        if Path(req.path) == keep:
            continue
        try:
            other = Direction.load(req.path)
        except GnomonError:
            continue  # register-pending reports it
        if identity(other) == ident:
            marker.unlink(missing_ok=True)


def save_local(direction: Direction, home: Path) -> Path:
    """Save atomically to ``<home>/directions/<concept>/<fp12>-L<layer>-<pos>-<method>-<ds8>``.

    If a *different* direction already holds that name (same provenance, other method
    parameters), the new file gets a content-hash suffix instead of overwriting it: the
    older file may still be waiting for registration.
    """
    target = home / "directions" / direction.provenance.concept / local_name(direction)
    tmp = direction.save(temp_beside(target))
    try:
        # Compare contents, not bytes: safetensors writes its metadata map in no fixed order, so
        # two saves of one direction can differ byte for byte. The content hash is in the metadata.
        if target.exists() and _content_sum(target) != _content_sum(tmp):
            target = target.with_name(f"{target.stem}-{sha256_file(tmp)[:8]}.safetensors")
        return move_into_place(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _content_sum(path: Path) -> str:
    """What a direction file holds: its recorded content hash, else its bytes' sha256."""
    return recorded_content_sha256(path) or sha256_file(path)


@dataclass(frozen=True)
class PendingRegistration:
    """How to register one saved direction: the arguments of :meth:`Catalog.register`."""

    path: str
    curve: dict[str, list[float]] | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    set_best: bool = True
    best_metric: str = "val_auroc"
    tracking_uri: str | None = None
    """The catalog this registration was meant for (None in markers written before it was
    recorded: the catalog that reads the marker)."""

    @classmethod
    def of(cls, path: Path, curve: Mapping[str, Sequence[float]] | None,
           extra_tags: Mapping[str, str] | None, set_best: bool, best_metric: str,
           tracking_uri: str | None = None) -> PendingRegistration:
        return cls(str(path), check_curve(curve) if curve else None,
                   {str(k): str(v) for k, v in (extra_tags or {}).items()}, set_best, best_metric,
                   tracking_uri)


def _pending_dir(home: Path) -> Path:
    return home / "directions" / ".pending"


def write_pending(home: Path, req: PendingRegistration) -> Path:
    d = _pending_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    p = Path(req.path)
    marker = d / f"{p.parent.name}--{p.stem}.json"
    return write_json(marker, asdict(req), indent=1)


def rehome(req: PendingRegistration, home: Path) -> PendingRegistration:
    """A marker written before its home was copied or moved names the old home's file
    and catalog (absolute paths): point it at this home's copy of the file and, when it
    was meant for the old home's own SQLite catalog, at this home's (never re-create a
    catalog where the home used to be)."""
    p = Path(req.path)
    if p.is_relative_to(home) or len(p.parts) < 4 or p.parent.parent.name != "directions":
        return req
    here = home / "directions" / p.parent.name / p.name
    if not here.is_file():
        return req
    old_home = p.parent.parent.parent
    uri = req.tracking_uri
    if uri == f"sqlite:///{old_home / 'mlflow.db'}":
        uri = f"sqlite:///{home / 'mlflow.db'}"
    return replace(req, path=str(here), tracking_uri=uri)


def read_pending(home: Path) -> list[tuple[Path, PendingRegistration]]:
    """Markers in name order (re-homed: see :func:`rehome`); an unreadable marker is an
    error naming the file to delete."""
    out = []
    for marker in sorted(_pending_dir(home).glob("*.json")):
        try:
            try:
                doc = json.loads(marker.read_text())
            except FileNotFoundError:
                continue   # listed, then completed and removed by another process: nothing pending
            req = PendingRegistration(**doc)
            if not isinstance(req.path, str) or not isinstance(req.tracking_uri, (str, type(None))):
                raise TypeError("path and tracking_uri must be strings")
            out.append((marker, rehome(req, home)))
        except (OSError, ValueError, TypeError, RecursionError) as e:
            raise GnomonError(f"pending registration {marker} is unreadable ({e}); delete it and "
                              "register its direction again") from e
    return out


def check_curve(curve: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """The curve as plain float lists, refused before anything is written if its series
    differ in length or its ``layer`` series is not whole numbers."""
    series = {str(k): [float(x) for x in v] for k, v in curve.items()}
    lengths = {len(v) for v in series.values()}
    if len(lengths) > 1:
        raise GnomonError(f"curve series have different lengths {sorted(lengths)}; "
                          "give one value per swept layer in every series")
    if not all(x.is_integer() for x in series.get("layer", [])):
        raise GnomonError("curve 'layer' series must hold whole layer numbers")
    return series


def write_curve(curve: Mapping[str, Sequence[float]], out_dir: Path, title: str,
                selected_layer: int | None = None) -> list[Path]:
    """Write ``curve.json`` and ``curve.png`` (:func:`pipeline.plots.curve_figure`: AUROC,
    accuracy and d' on separate axes, the selected layer marked)."""
    series = check_curve(curve)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "curve.json"
    js.write_text(json.dumps(series, indent=1))
    png = curve_figure(series, title, selected_layer, out_dir / "curve.png")
    return [js, png]


def curve_steps(curve: Mapping[str, Sequence[float]]) -> list[tuple[str, float, int]]:
    """``(metric_name, value, step)`` triples logging each series as a metric history over
    layers, so the MLflow UI charts the sweep natively."""
    xs: Any = curve.get("layer")
    out = []
    for name, ys in curve.items():
        if name == "layer":
            continue
        for i, y in enumerate(ys):
            out.append((f"curve.{name}", float(y), int(xs[i]) if xs is not None else i))
    return out
