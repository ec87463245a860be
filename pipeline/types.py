"""Names for the choices gnomon makes, as ``Literal`` aliases checked by mypy."""

from __future__ import annotations

from typing import Literal, Sequence

Position = Literal["last", "mean", "tok"]
"""Which token positions a row summarises: the last token, the mean over non-special
tokens (leaving out an outlier first token, see ``pipeline.collect``), or every token (one
row per token, ``token_index`` set)."""

Site = Literal["block_output"]
"""Where a vector is read and written. ``block_output`` at layer L is the residual stream
after block L (layer 0: the embedding output), before any final norm."""

StoreDType = Literal["float16", "float32"]

Method = Literal["mean_diff", "pca", "logistic", "lda", "ccs", "leace"]
METHODS: tuple[Method, ...] = ("mean_diff", "pca", "logistic", "lda", "ccs", "leace")

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

MEAN_RULE = "drop-first-content-v2"
"""The ``mean`` pooling rule (see ``pipeline.collect``), part of every shard's content
digest: shards pooled by an earlier rule are collected again rather than mixed with these."""
POSITIONS: tuple[Position, ...] = ("last", "mean", "tok")


class GnomonError(Exception):
    """A user-facing error: its message names what to fix, in one line."""


def check_positions(positions: Sequence[str]) -> list[Position]:
    """Requested positions, validated, in the canonical order (importable without torch)."""
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise GnomonError(f"unknown position {bad[0] if bad else '(none)'}: choose from {', '.join(POSITIONS)}")
    return [p for p in POSITIONS if p in positions]
