"""Model loading, fingerprints and per-family layer adapters."""

from pipeline.models.adapters import ADAPTERS, LayerAdapter
from pipeline.models.cache import cached_model, clear_model_cache
from pipeline.models.generic import adapter_for
from pipeline.models.loading import (
    BUNDLED_ID,
    LoadedModel,
    ModelIdentity,
    ModelSpec,
    bundled_gguf,
    default_device,
    fingerprint_model,
    load_model,
    model_identity,
)

__all__ = ["ADAPTERS", "BUNDLED_ID", "LayerAdapter", "LoadedModel", "ModelIdentity", "ModelSpec", "adapter_for",
           "bundled_gguf", "cached_model", "clear_model_cache", "default_device", "fingerprint_model",
           "load_model", "model_identity"]
