"""The requests of the evaluate and report stages, as plain dataclasses: their defaults are
decided here once, and read by the stages, the CLI and a job spec's ``[[evaluate]]`` and
``[[report]]`` tables (:mod:`jobs.runtime.spec`), which import this module without the stages'
heavy dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EvalSpec", "ReportSpec"]


@dataclass(frozen=True)
class EvalSpec:
    ref: str
    """Catalog reference (``sentiment@best``) or a ``.safetensors`` direction file."""
    models: tuple[Any, ...] = ()
    """Checkpoints to evaluate (default: the direction's own model): ids, or the
    :class:`~pipeline.models.ModelSpec` s :func:`check_models` resolved (trusted, not resolved again)."""
    strengths: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    unit: str = "separation"
    n_prompts: int = 16
    max_new_tokens: int = 24
    scorer: str | None = None
    """Default: the concept's scorer (VADER for sentiment), else no steering score."""
    probe: bool = True
    monitor: bool = True
    n_probe: int = 120
    """Texts per class at most for the ablation probe's training split."""
    chat: bool = False
    """Wrap neutral prompts in the chat template before generating."""
    fleet: str | None = None
    """Evaluate on every version of this fleet (``<home>/fleets/<name>.json``) and log each to MLflow."""


@dataclass(frozen=True)
class ReportSpec:
    """A report request (also the ``[[report]]`` table of a TOML job spec)."""

    concepts: tuple[str, ...]
    models: tuple[str, ...] = ("smollm2",)
    revision: str = "main"
    layers: tuple[int, ...] | None = None
    """``None``: every layer 0..num_layers."""
    position: str = "last"
    control: bool = True
    """Dose-response and interpolation on the live model."""
    compose: bool = True
    """Composition of every pair of concepts (needs two or more)."""
    strengths: tuple[float, ...] = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
    n_prompts: int = 16
    max_new_tokens: int = 12
    """Continuation length for the behavioural scores (VADER text, word log-odds)."""
    score: str = "auto"
    """``auto`` (VADER for sentiment, word log-odds otherwise), ``vader`` or ``log-odds``."""
    name: str | None = None
    """Folder under ``<home>/reports/`` (default: the concepts joined)."""
