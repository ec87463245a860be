"""Serving: the batched decode loop behind ``gnomon serve`` (no web framework here; the HTTP
layer lives in :mod:`jobs.serve`)."""

from pipeline.serve.engine import Row, Watch, run_batch

__all__ = ["Row", "Watch", "run_batch"]
