"""Numeric versions of one model: the same weights in bfloat16, float16, or int8-quantized.

- ``bfloat16`` / ``float16``: weights rounded and *stored* in that dtype; ``load_model``
  runs them in it (lineage ``settings.dtype``), on CPU too (torch 2.13 has CPU kernels for
  both). Their fingerprints differ from the parent's because rounding changes the values.
- ``int8``: torch dynamic quantization (``torch.ao.quantization.quantize_dynamic``), method
  ``int8_dynamic_mixed``: int8 weights with per-channel scales for the Linears that read the
  residual width (attention, MLP gate/up), activations quantized per batch at run time, the
  MLP's down projection (outlier features) kept float32; see
  :data:`pipeline.models.quantize.QUANTIZE_CHOICES`. Packed int8 modules cannot be saved as
  safetensors, so the version stores the parent's float32 weights plus
  ``settings.quantize = "int8_dynamic_mixed"`` and
  ``load_model`` quantizes at load time (on CPU: the kernels exist only there). Its
  fingerprint is the float32 fingerprint mixed with the method
  (:func:`~pipeline.models.quantize.quantized_fingerprint`).

The float32 member of a numeric set is the parent itself (``smollm2-base``): no copy.

>>> build_numeric("smollm2-base", "bfloat16")      # doctest: +SKIP
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pipeline.fleet.registry import (
    LINEAGE_FILE,
    Lineage,
    read_lineage,
    register_version,
    version_dir,
)
from pipeline.fleet.versions import (
    FINGERPRINT_FILE,
    is_built,
    save_version,
    staging_dir,
)
from pipeline.models.loading import ModelSpec, load_model
from pipeline.models.quantize import quantized_fingerprint
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["NUMERIC", "Numeric", "build_numeric", "numeric_id"]

Numeric = Literal["bfloat16", "float16", "int8"]
NUMERIC: dict[str, str] = {"bfloat16": "bf16", "float16": "fp16", "int8": "int8"}
INT8_METHOD = "int8_dynamic_mixed"
"""How ``int8`` versions are quantized (a lineage setting, so a changed recipe rebuilds)."""
"""Numeric kind -> suffix of the version id (``<prefix>-bf16``...)."""


def numeric_id(prefix: str, numeric: str) -> str:
    return f"{prefix}-{NUMERIC[numeric]}"


def build_numeric(parent: str, numeric: str, version_id: str | None = None,
                  home: str | Path | None = None) -> Lineage:
    """Register ``parent`` in ``numeric`` precision as ``version_id`` (skipped if already built)."""
    import torch

    if numeric not in NUMERIC:
        raise GnomonError(f"unknown numeric version {numeric!r}: one of {', '.join(NUMERIC)}")
    plin = read_lineage(parent, home)
    vid = version_id or numeric_id(parent.removesuffix("-base"), numeric)
    settings = {"quantize": INT8_METHOD} if numeric == "int8" else {"dtype": numeric}
    recipe = Lineage(id=vid, kind="numeric", fingerprint="", parent=parent,
                     parent_fingerprint=plin.fingerprint, series="numeric", settings=settings)
    done = is_built(recipe, home)
    if done:
        return done
    if numeric == "int8":
        # Same float32 weights as the parent: hard-link them, quantize at load time.
        src = version_dir(parent, home)
        fp = quantized_fingerprint(plin.fingerprint, INT8_METHOD)
        staged = staging_dir(vid, home)
        try:
            for f in src.iterdir():
                if f.is_file() and f.name not in (LINEAGE_FILE, FINGERPRINT_FILE):
                    try:
                        (staged / f.name).hardlink_to(f)
                    except OSError:
                        shutil.copy2(f, staged / f.name)
            (staged / FINGERPRINT_FILE).write_text(f'{{"fingerprint": "{fp}"}}')
            register_version(staged, Lineage(**{**recipe.to_json(), "fingerprint": fp, "family": plin.family,
                                                "hidden_size": plin.hidden_size,
                                                "num_layers": plin.num_layers}), home)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return read_lineage(vid, home)
    lm = load_model(ModelSpec(id=parent, dtype="float32"), home=home)
    model = lm.model.to(getattr(torch, numeric))
    return save_version(model, lm.tokenizer, recipe, home)
