"""Model loading, fingerprints and per-family layer adapters."""

from pipeline.models.adapters import ADAPTERS, LayerAdapter, adapter_for
from pipeline.models.loading import (
    BUNDLED_ID,
    LoadedModel,
    ModelSpec,
    bundled_gguf,
    default_device,
    fingerprint_model,
    load_model,
)

__all__ = ["ADAPTERS", "BUNDLED_ID", "LayerAdapter", "LoadedModel", "ModelSpec", "adapter_for",
           "bundled_gguf", "default_device", "fingerprint_model", "load_model"]
