"""Numeric versions of a model: dynamic int8 quantization of its blocks, and the
fingerprint a quantized run records (``gnomon fleet build`` makes such versions)."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

from pipeline.models.generic import adapter_for
from pipeline.types import GnomonError

# lazy: torch (heavy; imported where used)

__all__ = ["QUANTIZE_CHOICES", "quantize", "quantized_device", "quantized_fingerprint"]


QUANTIZE_CHOICES = ("int8_dynamic", "int8_dynamic_mixed")
"""``int8_dynamic``: every ``nn.Linear`` of the blocks in int8 (per-tensor weight scale).
``int8_dynamic_mixed`` (what ``gnomon fleet build`` makes): int8 with per-channel weight
scales for the Linears that read the residual-stream width (attention q/k/v/o, MLP
gate/up), while the MLP's down projection, which reads the wide intermediate activations
where LLMs' outlier features live (Dettmers et al. 2022, "LLM.int8()"), stays float32.
On SmolLM2 the all-int8 recipe turns the sentiment direction by cos 0.87-0.89 at layers
17-28 and triples neutral perplexity; the mixed one keeps cos >= 0.98 there
(``bench/fleet_figures.py``)."""


def quantized_device(method: str, device: str) -> str:
    """torch's dynamic int8 Linear kernels (fbgemm/qnnpack) exist on CPU only."""
    if method not in QUANTIZE_CHOICES:
        raise GnomonError(f"unknown quantization {method!r} in lineage settings: one of {', '.join(QUANTIZE_CHOICES)}")
    return "cpu"


def quantize(model: Any, method: str) -> None:
    """Dynamic int8 quantization of the blocks' ``nn.Linear`` modules, in place (see
    :data:`QUANTIZE_CHOICES` for what each method quantizes).

    Activations are quantized on the fly per batch. Embeddings and the (often tied) LM
    head stay float32: quantizing the 49k-row head of SmolLM2 moves logits by tens of
    nats, which is a different experiment.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig

    adapter = adapter_for(model)
    width = int(getattr(model.config, "hidden_size", 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in adapter.get_blocks(model):
            if method == "int8_dynamic":
                torch.ao.quantization.quantize_dynamic(block, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
                continue
            chosen = {name: per_channel_dynamic_qconfig for name, m in block.named_modules()
                      if isinstance(m, torch.nn.Linear) and m.in_features == width}
            if chosen:
                torch.ao.quantization.quantize_dynamic(block, chosen, dtype=torch.qint8, inplace=True)


def quantized_fingerprint(float_fingerprint: str, method: str) -> str:
    """Fingerprint of a version run quantized: its stored weights' fingerprint plus the method."""
    return hashlib.sha256(f"{float_fingerprint}|{method}".encode()).hexdigest()[:32]
