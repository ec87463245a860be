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

Method = str
"""A registered fitting method's name: ``pipeline.methods`` holds the registry (built-ins:
mean_diff, pca, logistic, lda, ccs, leace; a new method registers itself there)."""

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

MEAN_RULE = "drop-first-content-v2"
"""The ``mean`` pooling rule (see ``pipeline.collect``), part of every shard's content
digest: shards pooled by an earlier rule are collected again rather than mixed with these."""
POSITIONS: tuple[Position, ...] = ("last", "mean", "tok")


class GnomonError(Exception):
    """A user-facing error: its message names what to fix, in one line."""


def parse_layers(spec: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """The one layer-spec parser (``--layers`` on every command, ``layers =`` in a job spec):
    ``None``/``"all"`` -> None (every layer), ``3``, ``"0,4,8"``, ``"2-6"`` (inclusive),
    ``"0,2-4"`` or a list of ints. Whether a layer exists is the model's to say
    (``pipeline.models.layers.check_layers``), once, where the request is resolved.

    >>> parse_layers("0,2-4"), parse_layers("all"), parse_layers(3)
    ((0, 2, 3, 4), None, (3,))
    """
    if spec is None or spec == "all":
        return None
    if isinstance(spec, bool):
        raise GnomonError(f"bad layers {spec!r}: use all, 3, 0,4,8 or 2-6")
    if isinstance(spec, int):
        return (spec,)
    if not isinstance(spec, str):
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in spec):
            raise GnomonError(f"bad layers {list(spec)!r}: use whole numbers")
        return tuple(spec)
    out: list[int] = []
    try:
        for part in spec.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                if int(b) < int(a):
                    raise GnomonError(f"bad --layers {spec!r}: range {part.strip()} runs backwards; write {b}-{a}")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise GnomonError(f"bad --layers {spec!r}: use all, 3, 0,4,8 or 2-6") from None
    return tuple(out)


def check_positions(positions: Sequence[str]) -> list[Position]:
    """Requested positions, validated, in the canonical order (importable without torch)."""
    bad = [p for p in positions if p not in POSITIONS]
    if bad or not positions:
        raise GnomonError(f"unknown position {bad[0] if bad else '(none)'}: choose from {', '.join(POSITIONS)}")
    return [p for p in POSITIONS if p in positions]
