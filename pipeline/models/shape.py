"""A model's layer count and width without loading it: what input checks need.

``--layers 99`` used to be refused only after the model had loaded (51-59 s on SmolLM2
under load; issue 21). Everything needed to refuse it is on disk beside the weights: the
identity recorded at an earlier load, a Hugging Face ``config.json``, or the metadata at
the head of a GGUF file. This module reads those with the standard library only (no torch,
no transformers, no weight bytes), and answers ``None`` when it cannot tell (a config it
does not know), in which case the check happens after the load as before.

A folder whose ``config.json`` asks for custom code (``auto_map``) for an architecture
gnomon has no adapter for is refused here too, naming ``--trust-remote-code``: loading it
would fail anyway, after importing transformers, with its own multi-line ValueError.

>>> model_shape(ModelSpec("tiny:llama:2x64"))     # doctest: +SKIP
ModelShape(num_layers=2, hidden_size=64)
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.home import gnomon_home
from pipeline.models.adapters import check_custom_code
from pipeline.models.generic import encoder_decoder_error
from pipeline.models.loading import BUNDLED_ID, ModelSpec, _gguf_cache_dir, bundled_gguf, model_identity
from pipeline.models.tiny import parse_tiny
from pipeline.types import GnomonError

# lazy: pipeline.models.layers (tests patch it at the source)

__all__ = ["ModelShape", "check_custom_code", "check_width", "config_shape", "gguf_shape", "model_shape"]

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")


@dataclass(frozen=True)
class ModelShape:
    """Blocks (valid layers are ``0..num_layers``) and residual width."""

    num_layers: int
    hidden_size: int


def model_shape(spec: Any, home: str | Path | None = None) -> ModelShape | None:
    """``spec``'s (a :class:`~pipeline.models.ModelSpec` or id) shape, read without weights;
    ``None`` when nothing on disk says. Raises GnomonError for an unknown model id and for a
    folder that needs custom code without ``trust_remote_code``."""
    spec = ModelSpec(id=spec) if isinstance(spec, str) else spec
    home_p = gnomon_home(home)
    source = spec.resolved_source(home_p)
    if source == "tiny":
        _, layers, hidden = parse_tiny(spec.id)
        return ModelShape(layers, hidden)
    if source in ("hf_dir", "registered"):
        folder = Path(spec.id).expanduser() if source == "hf_dir" else home_p / "models" / spec.id
        check_custom_code(folder, spec.trust_remote_code)
    ident = model_identity(spec, home_p)
    if ident is not None:
        return ModelShape(ident.num_layers, ident.hidden_size)
    if source in ("hf_dir", "registered"):
        return config_shape(folder / "config.json")
    gguf = bundled_gguf() if spec.id == BUNDLED_ID else Path(spec.id).expanduser()
    cached = _gguf_cache_dir(gguf, home_p) / "config.json" if gguf.is_file() else None
    if cached is not None and cached.is_file():
        return config_shape(cached)
    if not gguf.is_file():
        return None
    check_gguf_header(gguf)   # a file that is not a GGUF is refused before any load starts
    return gguf_shape(gguf)


def check_gguf_header(path: Path) -> None:
    """Refuse a file whose first bytes are not a GGUF v2/v3 header, in one line."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF":
        raise GnomonError(f"{path} is not a GGUF model transformers can load (no GGUF magic at its start)")
    (version,) = struct.unpack("<I", head[4:8]) if len(head) == 8 else (0,)
    if version not in (2, 3):
        raise GnomonError(f"{path} is not a GGUF model transformers can load (GGUF v{version}; "
                          "this reader handles v2 and v3)")


def _config(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None   # the loader says what is wrong with it
    return doc if isinstance(doc, dict) else None


def config_shape(path: Path) -> ModelShape | None:
    """Layer count and width from a Hugging Face ``config.json`` (``None`` if it lacks them)."""
    doc = _config(path)
    if doc is None:
        return None
    if doc.get("is_encoder_decoder"):   # refused here, before a load, as the adapter would after one
        raise encoder_decoder_error(doc.get("model_type"))
    layers = next((doc[k] for k in _LAYER_KEYS if isinstance(doc.get(k), int)), None)
    width = next((doc[k] for k in _WIDTH_KEYS if isinstance(doc.get(k), int)), None)
    return ModelShape(layers, width) if layers is not None and width is not None else None


# GGUF value types (gguf spec): scalar struct formats by type id; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_MAX_KV = 100_000


def gguf_shape(path: Path) -> ModelShape | None:
    """``<arch>.block_count`` and ``<arch>.embedding_length`` from a GGUF file's header,
    reading only the key-value section up to them (milliseconds; gguf's reader parses every
    tensor's header first, ~4 s on SmolLM2)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return None
            version, _n_tensors, n_kv = struct.unpack("<IQQ", f.read(20))
            if version < 2 or n_kv > _MAX_KV:
                return None
            found: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _gguf_str(f)
                (kind,) = struct.unpack("<I", f.read(4))
                value = _gguf_value(f, kind)
                if key == "general.architecture" or key.endswith((".block_count", ".embedding_length")):
                    found[key] = value
                arch = found.get("general.architecture")
                if arch and f"{arch}.block_count" in found and f"{arch}.embedding_length" in found:
                    return ModelShape(int(found[f"{arch}.block_count"]), int(found[f"{arch}.embedding_length"]))
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return None   # the loader says what is wrong with the file
    return None


def _gguf_str(f: BinaryIO) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 1 << 24:
        raise ValueError("string too long")
    return f.read(n).decode("utf-8")


def _gguf_value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = "<" + _SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        return _gguf_str(f)
    if kind == 9:   # arrays (the tokenizer's vocabulary) are skipped, not kept
        (item, n) = struct.unpack("<IQ", f.read(12))
        if item in _SCALARS:
            f.seek(n * struct.calcsize("<" + _SCALARS[item]), 1)
        elif item == 8:
            for _ in range(n):
                (m,) = struct.unpack("<Q", f.read(8))
                f.seek(m, 1)
        else:
            for _ in range(n):
                _gguf_value(f, item)
        return None
    raise ValueError(f"unknown GGUF value type {kind}")


def check_width(directions: Any, model: Any, home: str | Path | None = None) -> None:
    """Refuse directions whose hidden size differs from ``model``'s (an id or a
    :class:`~pipeline.models.ModelSpec`), before it loads (no ``--force`` can apply a vector
    of another width), and directions read at a layer the model does not have: the one
    check of each direction's layer against this model, from its config."""
    from pipeline.models.layers import check_layers

    shape = model_shape(model, home)
    model_id = getattr(model, "id", model)
    if shape is None:
        return
    for d in directions:
        p = d.provenance
        if p.hidden_size and int(p.hidden_size) != shape.hidden_size:
            raise GnomonError(f"{p.concept or 'the direction'} (layer {p.layer}, fitted on {p.model_id}) has hidden "
                              f"size {p.hidden_size}, but {model_id} has {shape.hidden_size}: use a direction fitted "
                              f"on {model_id} (e.g. CONCEPT@best --model {model_id}) or a model of width "
                              f"{p.hidden_size}")
        check_layers([d.layer], shape.num_layers, model_id)
