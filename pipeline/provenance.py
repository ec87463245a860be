"""A direction's provenance, and how a direction file records it: the metadata checksum,
its format version and the type checks a loaded header must pass (``pipeline.direction``
reads and writes the files)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipeline.types import GnomonError

# lazy: safetensors (heavy; imported where used); importlib.metadata (optional dependency)

__all__ = ["FORMAT_VERSION", "Provenance", "code_version", "content_sha256", "recorded_content_sha256"]

FORMAT_VERSION = 2
"""2: the header carries ``gnomon_sha256`` over the tensors and the metadata."""
_META_KEY = "gnomon"
_SUM_KEY = "gnomon_sha256"
_STR_FIELDS = ("model_id", "revision", "fingerprint", "site", "position", "concept", "positive", "negative",
               "method", "dataset", "dataset_hash", "code_version")


def content_sha256(tensors: Mapping[str, torch.Tensor], meta_json: str) -> str:
    """sha256 of the metadata text and of every tensor (name, dtype, shape, bytes), in name
    order: what a direction file must still hold when it is loaded. Any flipped byte,
    edited value or header field changes it."""
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def code_version() -> str:
    try:
        from importlib.metadata import version

        return version("gnomon")
    except Exception:  # not installed (source checkout)
        return "0+unknown"


def recorded_content_sha256(path: str | Path) -> str | None:
    """The content hash (tensors + gnomon metadata) a direction file records, read from its
    header alone; ``None`` when the file has none. Two saves of one direction may differ byte
    for byte (safetensors writes its metadata map in no fixed order); this does not."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get(_SUM_KEY)
    except Exception:  # noqa: BLE001 - not a readable safetensors file
        return None


@dataclass(frozen=True)
class Provenance:
    """Where a direction came from: enough to reproduce it and to refuse misuse."""

    model_id: str
    """The model's id as given to gnomon (``smollm2``, a path, an HF id)."""
    revision: str
    """Model revision (checkpoint name, git sha, ``main``)."""
    fingerprint: str
    """Hash of the model's config and weights; identifies the exact weights."""
    hidden_size: int
    """Width of the residual stream the direction lives in."""
    layer: int
    """HF ``hidden_states`` numbering: 0 is the embedding output, L the output of block L."""
    site: str = "block_output"
    """Hook point the activations were read at (and interventions write to)."""
    position: str = "last"
    """Position policy of the training rows (``last``, ``mean``, ``tok``)."""
    concept: str = ""
    """Concept name; the catalog registers versions under it."""
    positive: str = ""
    """Label that projects higher."""
    negative: str = ""
    """Label that projects lower."""
    method: str = ""
    """Fitting method (``mean_diff``, ``pca``, ...)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Method parameters."""
    dataset: str = ""
    """Dataset name in the store."""
    dataset_hash: str = ""
    """Content hash of the dataset the direction was fitted on."""
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    """Rows per split used (``train``, ``val``, ``test``)."""
    code_version: str = field(default_factory=code_version)
    """gnomon version that produced it."""

    @classmethod
    def minimal(cls, hidden_size: int, layer: int = 0, **kw: Any) -> Provenance:
        """Provenance for hand-made directions (tests, arithmetic on raw vectors)."""
        return cls(model_id=kw.pop("model_id", ""), revision=kw.pop("revision", ""),
                   fingerprint=kw.pop("fingerprint", ""), hidden_size=hidden_size,
                   layer=layer, **kw)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["params"] = dict(self.params)
        d["split_sizes"] = dict(self.split_sizes)
        return d


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _check_types(prov: Provenance, scale: Any, metrics: Any, extras: Any, source: str) -> None:
    """Refuse metadata of the wrong types (``layer: "abc"``) with one line, before use."""
    bad = [f for f in _STR_FIELDS if not isinstance(getattr(prov, f), str)]
    if not _is_int(prov.layer) or prov.layer < 0:
        bad.append("layer")
    if not _is_int(prov.hidden_size) or prov.hidden_size < 1:
        bad.append("hidden_size")
    if not isinstance(prov.params, Mapping):
        bad.append("params")
    if not isinstance(prov.split_sizes, Mapping) or not all(_is_int(v) for v in prov.split_sizes.values()):
        bad.append("split_sizes")
    if bad:
        raise GnomonError(f"{source}: provenance field(s) {bad} have the wrong type or value")
    if not isinstance(scale, Mapping) or not all(_is_num(v) for v in scale.values()):
        raise GnomonError(f"{source}: scale statistics must be numbers or null")
    if not isinstance(metrics, Mapping) or not all(_is_num(v) for v in metrics.values()):
        raise GnomonError(f"{source}: metrics must be numbers or null")
    if not isinstance(extras, list) or not all(isinstance(e, str) for e in extras):
        raise GnomonError(f"{source}: 'extras' must be a list of names")


def _f(x: float) -> float | None:
    """JSON has no NaN: store missing statistics as null."""
    x = float(x)
    return None if math.isnan(x) else x


def _unf(x: float | None) -> float:
    return math.nan if x is None else float(x)
