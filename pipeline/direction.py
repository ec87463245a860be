"""The ``Direction``: a concept direction as a frozen value that carries its provenance.

A direction is stored as one safetensors file: the tensors (``vector`` and optional
``extra.*`` tensors such as a LEACE eraser) plus a JSON document under the header key
``gnomon`` holding the scale statistics and provenance. Never pickle.

>>> d = Direction.from_vector(torch.tensor([3.0, 4.0]), Provenance.minimal(hidden_size=2))
>>> float(d.unit.norm())
1.0
>>> (2 * d).vector.tolist()
[6.0, 8.0]
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from pipeline.atomic import publish
from pipeline.provenance import (
    _META_KEY,
    _SUM_KEY,
    FORMAT_VERSION,
    Provenance,
    _check_types,
    _f,
    _unf,
    code_version,
    content_sha256,
    recorded_content_sha256,
)
from pipeline.types import GnomonError

# lazy: safetensors (heavy; imported where used)

__all__ = ["FORMAT_VERSION", "Direction", "Provenance", "code_version", "content_sha256", "recorded_content_sha256"]

@dataclass(frozen=True)
class Direction:
    """A direction in the residual stream at one layer, with what its scale means.

    Projections below are ``x @ unit`` for activations ``x`` at ``provenance.layer``.
    """

    vector: torch.Tensor
    """(d,) float32: the fitted vector (method-specific scale; often the mean difference)."""
    provenance: Provenance
    pos_mean: float = math.nan
    """Mean projection of the positive class on the unit vector (training split)."""
    neg_mean: float = math.nan
    """Mean projection of the negative class on the unit vector (training split)."""
    spread: float = math.nan
    """Pooled standard deviation of the projections within a class."""
    resid_norm: float = math.nan
    """Mean L2 norm of the residual stream at this layer (the unit for ``strength``)."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Evaluation metrics, e.g. ``val_accuracy``, ``test_auroc``, ``test_dprime``."""
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)
    """Extra tensors a method needs at use time (LEACE: ``leace_u``, ``leace_v``, ``leace_mean``)."""

    def __post_init__(self) -> None:
        v = self.vector
        if isinstance(v, torch.Tensor):
            v = v.detach().to(torch.float32)
        if not isinstance(v, torch.Tensor) or v.ndim != 1:
            raise GnomonError(f"direction vector must be a 1-D tensor, got {getattr(v, 'shape', type(v))}")
        if v.shape[0] != self.provenance.hidden_size:
            raise GnomonError(
                f"direction vector has length {v.shape[0]} but provenance says hidden_size="
                f"{self.provenance.hidden_size}")
        if not torch.isfinite(v).all():
            raise GnomonError("direction vector contains NaN or infinite values")
        if float(v.norm()) == 0.0:
            raise GnomonError("direction vector is zero: the two classes have identical statistics")
        bad = [k for k, t in self.extras.items() if t.ndim == 0 or t.shape[-1] != v.shape[0]]
        if bad:
            raise GnomonError(f"extra tensor(s) {bad} do not match hidden_size={v.shape[0]}")
        object.__setattr__(self, "vector", v.to(torch.float32))
        # Frozen all the way down: callers' dicts are copied into read-only views.
        object.__setattr__(self, "metrics", MappingProxyType({k: float(x) for k, x in self.metrics.items()}))
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        if not isinstance(self.provenance.params, MappingProxyType):
            object.__setattr__(self.provenance, "params", MappingProxyType(dict(self.provenance.params)))
        if not isinstance(self.provenance.split_sizes, MappingProxyType):
            object.__setattr__(self.provenance, "split_sizes", MappingProxyType(dict(self.provenance.split_sizes)))

    # ---- derived quantities -------------------------------------------------
    @classmethod
    def from_vector(cls, vector: torch.Tensor, provenance: Provenance, **kw: Any) -> Direction:
        return cls(vector=vector, provenance=provenance, **kw)

    @property
    def unit(self) -> torch.Tensor:
        """(d,) the unit vector: what ablation projects out and steering adds."""
        return self.vector / self.vector.norm()

    @property
    def hidden_size(self) -> int:
        return self.provenance.hidden_size

    @property
    def layer(self) -> int:
        return self.provenance.layer

    @property
    def separation(self) -> float:
        """Distance between the class-mean projections (a steering unit)."""
        return self.pos_mean - self.neg_mean

    @property
    def midpoint(self) -> float:
        """Projection halfway between the classes: the natural 0.5-probability threshold."""
        return 0.5 * (self.pos_mean + self.neg_mean)

    def project(self, acts: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (...): projection of activations on the unit vector."""
        return acts.to(self.vector.device, torch.float32) @ self.unit

    def to(self, device: torch.device | str) -> Direction:
        """Return a copy whose tensors live on ``device`` (the value is never mutated)."""
        return dataclasses.replace(
            self, vector=self.vector.to(device),
            extras={k: t.to(device) for k, t in self.extras.items()})

    def cosine(self, other: Direction) -> float:
        self._check_compatible(other, "cosine")
        return float(self.unit @ other.unit.to(self.vector.device))

    def normalize(self) -> Direction:
        """Same direction with a unit-length vector (scale statistics unchanged: they are
        projections on the unit vector already)."""
        return dataclasses.replace(self, vector=self.unit)

    # ---- arithmetic -----------------------------------------------------------
    def _check_compatible(self, other: Direction, op: str) -> None:
        a, b = self.provenance, other.provenance
        if a.hidden_size != b.hidden_size:
            raise GnomonError(f"cannot {op} directions of hidden size {a.hidden_size} and {b.hidden_size}")
        if a.layer != b.layer and op != "cosine":
            raise GnomonError(f"cannot {op} directions at different layers ({a.layer} and {b.layer}); "
                              "mix them as separate interventions instead")

    def _combined(self, vector: torch.Tensor, label: str) -> Direction:
        prov = dataclasses.replace(self.provenance, method=label, params={})
        return Direction(vector=vector, provenance=prov, resid_norm=self.resid_norm)

    def __add__(self, other: Direction) -> Direction:
        self._check_compatible(other, "add")
        return self._combined(self.vector + other.vector.to(self.vector.device),
                              f"({self.provenance.concept or self.provenance.method}+"
                              f"{other.provenance.concept or other.provenance.method})")

    def __sub__(self, other: Direction) -> Direction:
        self._check_compatible(other, "subtract")
        return self._combined(self.vector - other.vector.to(self.vector.device),
                              f"({self.provenance.concept or self.provenance.method}-"
                              f"{other.provenance.concept or other.provenance.method})")

    def __mul__(self, scalar: float) -> Direction:
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        if scalar == 0:
            raise GnomonError("multiplying a direction by 0 leaves no direction")
        if scalar > 0:
            return dataclasses.replace(self, vector=self.vector * scalar)
        # A negative scale flips the unit vector: projections change sign and the
        # classes swap roles.
        prov = dataclasses.replace(self.provenance, positive=self.provenance.negative,
                                   negative=self.provenance.positive)
        return dataclasses.replace(self, vector=self.vector * scalar, provenance=prov,
                                   pos_mean=-self.neg_mean, neg_mean=-self.pos_mean)

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> Direction:
        if scalar == 0:
            raise GnomonError("cannot divide a direction by 0")
        return self * (1.0 / scalar)

    def __neg__(self) -> Direction:
        return self * -1.0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Direction):
            return NotImplemented
        return (self.metadata() == other.metadata()
                and torch.equal(self.vector.cpu(), other.vector.cpu())
                and self.extras.keys() == other.extras.keys()
                and all(torch.equal(t.cpu(), other.extras[k].cpu()) for k, t in self.extras.items()))

    __hash__ = None  # type: ignore[assignment]

    # ---- serialisation --------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata: everything but the tensors."""
        return {
            "format_version": FORMAT_VERSION,
            "provenance": self.provenance.to_json(),
            "scale": {"pos_mean": _f(self.pos_mean), "neg_mean": _f(self.neg_mean),
                      "spread": _f(self.spread), "resid_norm": _f(self.resid_norm)},
            "metrics": {k: _f(v) for k, v in self.metrics.items()},
            "extras": sorted(self.extras),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``) atomically: a temp file renamed when complete."""
        from safetensors.torch import save_file

        tensors = {"vector": self.vector.detach().cpu().contiguous()}
        tensors.update({f"extra.{k}": t.detach().cpu().contiguous() for k, t in self.extras.items()})
        meta = json.dumps(self.metadata())
        return publish(path, lambda tmp: save_file(
            tensors, str(tmp), metadata={_META_KEY: meta, _SUM_KEY: content_sha256(tensors, meta)}))

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> Direction:
        """Read a direction written by :meth:`save`, refusing missing or inconsistent metadata."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise GnomonError(f"no direction file at {path}")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own types for corrupt headers
            raise GnomonError(f"{path} is not a readable safetensors file: {e}") from e
        if _META_KEY not in header:
            raise GnomonError(f"{path} has no gnomon metadata: not a gnomon direction")
        if header.get(_SUM_KEY) != content_sha256(tensors, header[_META_KEY]):
            why = "has no checksum (written by an older gnomon)" if _SUM_KEY not in header else \
                "does not match its checksum: its tensors or metadata were changed after it was saved"
            raise GnomonError(f"{path} {why}; refit it or restore the original file")
        try:
            meta = json.loads(header[_META_KEY])
        except (ValueError, RecursionError) as e:
            raise GnomonError(f"{path}: gnomon metadata is not valid JSON ({e})") from e
        return cls.from_parts(tensors, meta, source=str(path))

    @classmethod
    def from_parts(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                   source: str = "<memory>") -> Direction:
        if not isinstance(meta, Mapping) or not isinstance(meta.get("scale"), Mapping) \
                or not isinstance(meta.get("provenance"), Mapping):
            raise GnomonError(f"{source}: incomplete direction metadata (need objects 'provenance' and 'scale')")
        if meta.get("format_version") != FORMAT_VERSION:
            raise GnomonError(f"{source}: unsupported direction format {meta.get('format_version')!r}")
        if "vector" not in tensors:
            raise GnomonError(f"{source}: missing tensor 'vector'")
        try:
            prov = Provenance(**meta["provenance"])
            scale = meta["scale"]
        except (KeyError, TypeError) as e:
            raise GnomonError(f"{source}: incomplete direction metadata ({e})") from e
        _check_types(prov, scale, meta.get("metrics", {}), meta.get("extras", []), source)
        extras = {k.removeprefix("extra."): t for k, t in tensors.items() if k.startswith("extra.")}
        hidden = prov.hidden_size
        bad = [k for k, t in extras.items() if t.ndim == 0 or t.shape[-1] != hidden]
        if bad:
            raise GnomonError(f"{source}: extra tensor(s) {bad} do not match hidden_size={hidden}")
        if sorted(extras) != sorted(meta.get("extras", [])):
            raise GnomonError(f"{source}: extra tensors {sorted(extras)} do not match metadata "
                              f"{sorted(meta.get('extras', []))}")
        return cls(vector=tensors["vector"], provenance=prov,
                   pos_mean=_unf(scale.get("pos_mean")), neg_mean=_unf(scale.get("neg_mean")),
                   spread=_unf(scale.get("spread")), resid_norm=_unf(scale.get("resid_norm")),
                   metrics={k: _unf(v) for k, v in meta.get("metrics", {}).items()},
                   extras=extras)
