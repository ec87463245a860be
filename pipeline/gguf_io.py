"""Directions as llama.cpp control vectors (GGUF) and as plain safetensors.

The control-vector format is the one llama.cpp's ``--control-vector`` loads
(``common_control_vector_load_one`` in ``common/common.cpp``) and repeng's
``ControlVector.export_gguf`` writes: a GGUF with architecture ``controlvector``, keys
``controlvector.model_hint`` (string) and ``controlvector.layer_count`` (uint32), and one
1-D float32 tensor ``direction.<N>`` per layer. llama.cpp reads no metadata, rejects
``direction.0``, sums tensors of several files, and adds ``direction.N`` (times the
user's scale) to the output of 0-based block ``N`` at every position (``build_cvec`` after
the block's last residual add; repeng numbers its hooks on ``model.layers[N]`` the same way).

Layer numbering: gnomon layer ``L`` is the output of block ``L - 1`` (layer 0 is the
embedding output), so **gnomon layer L is written as ``direction.{L-1}``** and read back as
layer ``N + 1``. Layers 0 (embeddings) and 1 (block 0, which llama.cpp never steers) cannot
be expressed and are refused.

What is written is the *steering vector* llama.cpp adds: ``strength x scale(unit) x u`` (see
:func:`pipeline.steer.scale_of`); directions at the same layer are summed. Read back, each
tensor becomes a Direction whose ``vector`` is that steering vector, so
``add(lm, d, 1.0, unit="raw")`` reproduces llama.cpp's behaviour at scale 1.

>>> write_control_vector([d], "sentiment.gguf", strength=2.0)    # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.atomic import publish
from pipeline.direction import Direction, Provenance
from pipeline.steer.interventions import Unit, scale_of
from pipeline.types import GnomonError

# lazy: gguf, safetensors (heavy; imported where used)

ARCH = "controlvector"
_META = "gnomon.meta"


def gguf_index(layer: int) -> int:
    """gnomon layer -> llama.cpp ``direction.N`` index (``N = layer - 1``)."""
    if layer < 2:
        raise GnomonError(f"layer {layer} cannot be a llama.cpp control vector: llama.cpp steers block "
                          "outputs 1.. (gnomon layers 2..L); layer 0 is the embeddings and layer 1 "
                          "(block 0's output) is never steered")
    return layer - 1


def steering_vectors(directions: Sequence[Direction], strength: float = 1.0,
                     unit: Unit = "separation") -> dict[int, torch.Tensor]:
    """gnomon layer -> (d,) float32 vector to add there (same-layer directions summed)."""
    if not directions:
        raise GnomonError("no directions to export")
    sizes = {d.hidden_size for d in directions}
    if len(sizes) != 1:
        raise GnomonError(f"directions have different hidden sizes {sorted(sizes)}: one file holds one model's")
    out: dict[int, torch.Tensor] = {}
    for d in directions:
        # raw: strength x the fitted vector itself (bit-exact at strength 1, no renormalisation)
        if not math.isfinite(float(strength)):
            raise GnomonError(f"strength {strength} is not a finite number")
        v = d.vector.cpu() * float(strength) if unit == "raw" else d.unit.cpu() * (float(strength) * scale_of(d, unit))
        out[d.layer] = out[d.layer] + v if d.layer in out else v
    return dict(sorted(out.items()))


def _meta(directions: Sequence[Direction], strength: float, unit: str) -> str:
    layers: dict[str, list[dict[str, Any]]] = {}
    for d in directions:
        p = d.provenance
        layers.setdefault(str(d.layer), []).append(
            {"concept": p.concept, "model_id": p.model_id, "revision": p.revision,
             "fingerprint": p.fingerprint, "method": p.method, "positive": p.positive, "negative": p.negative})
    return json.dumps({"strength": strength, "unit": unit, "layer_base": "gnomon layer = N + 1",
                       "layers": layers})


def write_control_vector(directions: Sequence[Direction], path: str | Path, *, strength: float = 1.0,
                         unit: Unit = "separation", model_hint: str | None = None) -> Path:
    """Write a llama.cpp control-vector GGUF (atomically: temp file, then rename)."""
    import gguf

    vectors = steering_vectors(directions, strength, unit)
    idx = {layer: gguf_index(layer) for layer in vectors}
    hint = model_hint or directions[0].provenance.model_id or "unknown"

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), ARCH)
        try:
            writer.add_string(f"{ARCH}.model_hint", hint)
            writer.add_uint32(f"{ARCH}.layer_count", len(vectors))
            writer.add_string(_META, _meta(directions, strength, unit))
            for layer, v in vectors.items():
                writer.add_tensor(f"direction.{idx[layer]}", v.numpy().astype(np.float32))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return publish(path, write)


def _field_str(reader: Any, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None or not f.data:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8", errors="replace")


def _directions(vectors: dict[int, np.ndarray], meta: dict[str, Any], hint: str, source: str) -> list[Direction]:
    out = []
    for layer, vec in sorted(vectors.items()):
        srcs = meta.get("layers", {}).get(str(layer), [])
        one = srcs[0] if len(srcs) == 1 else {}
        concept = one.get("concept") or "+".join(s.get("concept", "") for s in srcs) or "control_vector"
        prov = Provenance.minimal(
            hidden_size=int(vec.shape[0]), layer=layer, model_id=one.get("model_id") or hint,
            revision=one.get("revision", ""), fingerprint=one.get("fingerprint", ""), concept=concept,
            method="control_vector", positive=one.get("positive", ""), negative=one.get("negative", ""),
            params={"source": source, "strength": meta.get("strength"), "unit": meta.get("unit")})
        out.append(Direction(vector=torch.from_numpy(np.array(vec, dtype=np.float32)), provenance=prov))
    return out


def read_control_vector(path: str | Path) -> list[Direction]:
    """Read a control-vector GGUF (ours, repeng's or llama.cpp's) into Directions, one per
    ``direction.N`` tensor at gnomon layer ``N + 1``, with minimal provenance (restored from
    gnomon's own metadata key when the file has it)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise GnomonError(f"no control vector file at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors on foreign files
        raise GnomonError(f"{path} is not a readable GGUF file: {e}") from e
    arch = _field_str(reader, "general.architecture")
    if arch != ARCH:
        raise GnomonError(f"{path} has architecture {arch!r}, not {ARCH!r}: not a control vector")
    hint = _field_str(reader, f"{ARCH}.model_hint") or ""
    meta = json.loads(_field_str(reader, _META) or "{}")
    vectors: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        name = t.name
        head, _, num = name.partition(".")
        if head != "direction" or not num.isdigit() or int(num) == 0:
            raise GnomonError(f"{path}: tensor {name!r} is not a valid 'direction.<N>' (N >= 1)")
        vectors[int(num) + 1] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if not vectors:
        raise GnomonError(f"{path} holds no direction tensors")
    return _directions(vectors, meta, hint, str(path))


def write_safetensors(directions: Sequence[Direction], path: str | Path, *, strength: float = 1.0,
                      unit: Unit = "separation") -> Path:
    """The same steering vectors as plain safetensors, keyed ``layer.<L>`` in gnomon numbering
    (every layer 0..L allowed), with the metadata JSON under the header key ``gnomon``."""
    from safetensors.torch import save_file

    vectors = steering_vectors(directions, strength, unit)
    hint = directions[0].provenance.model_id or "unknown"
    return publish(path, lambda tmp: save_file({f"layer.{k}": v.contiguous() for k, v in vectors.items()}, str(tmp),
                                               metadata={"gnomon": _meta(directions, strength, unit),
                                                         "model_hint": hint}))


def read_safetensors(path: str | Path) -> list[Direction]:
    """Read a file written by :func:`write_safetensors` back into Directions."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GnomonError(f"no steering-vector file at {path}")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        vectors = {int(k.split(".", 1)[1]): f.get_tensor(k).numpy() for k in f.keys() if k.startswith("layer.")}
    if not vectors:
        raise GnomonError(f"{path} holds no 'layer.<L>' tensors")
    return _directions(vectors, json.loads(header.get("gnomon", "{}")), header.get("model_hint", ""), str(path))


def llama_cpp_args(path: str | Path, directions: Sequence[Direction], strength: float, unit: str,
                   model_file: str | None = None) -> tuple[list[str], list[str]]:
    """The llama.cpp arguments that apply the control vector at ``path`` as written, and lines
    saying what they mean. ``--control-vector-scaled FILE SCALE`` multiplies what was written
    (SCALE 1 = ``strength`` x ``unit``; negative steers toward the negative label);
    ``--control-vector-layer-range START END`` is inclusive and counts llama.cpp's blocks from
    0, so gnomon layer L (the output of block L-1) is block ``L - 1``: passing gnomon's own
    layer number there steers nothing at that layer.

    >>> llama_cpp_args("s.gguf", [d16], 1.0, "separation")[0]    # doctest: +SKIP
    ['-m', 'MODEL.gguf', '--control-vector-scaled', 's.gguf', '1', '--control-vector-layer-range', '15', '15']
    """
    blocks = sorted({gguf_index(d.layer) for d in directions})
    args = ["-m", model_file or "MODEL.gguf", "--control-vector-scaled", str(path), "1",
            "--control-vector-layer-range", str(blocks[0]), str(blocks[-1])]
    layers = ", ".join(f"gnomon layer {b + 1} = block {b}" for b in blocks)
    what = f"{strength:g} x {unit}" if unit != "raw" else f"{strength:g} x the fitted vector"
    lines = [f"SCALE 1 adds what was written ({what} per direction); SCALE k adds k times that, "
             "a negative SCALE steers toward the negative label",
             f"--control-vector-layer-range is inclusive and counts blocks from 0 ({layers}); "
             "llama.cpp adds direction.N to block N's output at every position"]
    if unit == "separation" and strength:
        lines.append(f"`gnomon steer REF --strength X` (class-mean separations) is SCALE X/{strength:g}")
    return args, lines
