"""A model's fingerprint: what says two loads hold the same weights (recorded in every
shard manifest and direction's provenance)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# lazy: torch (heavy; imported where used)

__all__ = ["fingerprint_model"]


def fingerprint_model(model: Any) -> str:
    """sha256 over the config (minus volatile keys) and every parameter's bytes."""
    import torch

    h = hashlib.sha256()
    cfg = model.config.to_dict()
    for k in ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures"):
        cfg.pop(k, None)
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]
