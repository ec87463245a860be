"""Serving: the decode loops behind ``gnomon serve`` (no web framework here; the HTTP layer
lives in :mod:`jobs.serve`): :func:`run_batch` generates a fixed batch, :func:`run_continuous`
lets rows join and leave a running one."""

from pipeline.serve.continuous import run_continuous
from pipeline.serve.engine import Row, Watch, run_batch

__all__ = ["Row", "Watch", "run_batch", "run_continuous"]
