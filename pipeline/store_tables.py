"""The tables the activation store holds: a shard's rows (``activation_table``: example id,
position, token index and a fixed-size list of float16/float32 per row, NaN refused), the
examples table, and reading vectors back as numpy without per-row work."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.types import SPLITS, GnomonError, check_positions

__all__ = ["EXAMPLE_SCHEMA", "activation_table", "vectors_to_numpy"]

_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
_META_COLUMNS = ["example_id", "position", "token_index"]

EXAMPLE_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("messages", pa.string()),
    ("label", pa.string()), ("pair", pa.string()), ("split", pa.string()),
])
"""Examples as stored: ``messages`` is the chat list as JSON text, ``pair`` a string."""


def activation_table(example_ids: Sequence[str], positions: Sequence[str] | str, token_index: np.ndarray,
                     acts: np.ndarray, dtype: str = "float16", where: str = "") -> pa.Table:
    """Rows for one shard: ``acts`` (n, d) becomes a ``FixedSizeList<dtype>[d]`` column.

    ``positions`` is one string per row, or one string for every row. ``token_index`` is
    the token's index for ``tok``, the last real token's for ``last``, -1 for ``mean``.
    NaN/inf rows are refused, naming the example (and ``where``, e.g. ``layer 3``).
    """
    if dtype not in _DTYPES:
        raise GnomonError(f"dtype {dtype!r} must be one of {sorted(_DTYPES)}")
    acts = np.asarray(acts)
    if acts.ndim != 2:
        raise GnomonError(f"acts must be (n, d), got shape {acts.shape}")
    n, d = acts.shape
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused below with its example
        flat = np.ascontiguousarray(acts, dtype=np.dtype(dtype)).reshape(-1)  # (n*d,)
    pos = [positions] * n if isinstance(positions, str) else list(positions)
    tok = np.asarray(token_index, dtype=np.int32)
    if len(example_ids) != n or len(pos) != n or tok.shape != (n,):
        raise GnomonError(f"example_ids, positions and token_index need {n} entries (one per row of acts)")
    check_positions(pos or ["last"])
    _check_finite(acts, flat.reshape(n, d), example_ids, pos, dtype, where)
    values = pa.Array.from_buffers(_DTYPES[dtype], n * d, [None, pa.py_buffer(flat)])  # zero-copy
    return pa.table({
        "example_id": pa.array(list(example_ids), pa.string()),
        "position": pa.array(pos, pa.string()),
        "token_index": pa.array(tok, pa.int32()),
        "act": pa.FixedSizeListArray.from_arrays(values, d),
    })


def _check_finite(acts: np.ndarray, stored: np.ndarray, example_ids: Sequence[str], pos: Sequence[str],
                  dtype: str, where: str) -> None:
    """Refuse NaN or infinite vectors (a model with NaN weights, a float16 overflow), and
    values the storage dtype cannot hold, naming the first example affected: a store of
    NaN rows would silently poison every fit and query that reads them."""
    if acts.size == 0:
        return
    bad_in = ~np.isfinite(acts).all(axis=1)
    bad_out = ~np.isfinite(stored).all(axis=1)
    if bad_in.any():
        i = int(np.argmax(bad_in))
        raise GnomonError(f"the model produced NaN or infinite activations {where + ' ' if where else ''}"
                          f"for example {example_ids[i]!r} (position {pos[i]}; {int(bad_in.sum())} of "
                          f"{len(bad_in)} rows): check the weights "
                          "and the compute dtype (--model-dtype float32)")
    if bad_out.any():
        i = int(np.argmax(bad_out))
        peak = float(np.abs(acts[i]).max())
        raise GnomonError(f"activations {where + ' ' if where else ''}of example {example_ids[i]!r} "
                          f"(position {pos[i]}) reach {peak:.3g}, "
                          f"beyond {dtype}'s range; store them with --dtype float32")


def vectors_to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A (fixed-size) list column of floats as an (n, d) float32 array, no per-row work."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        width = arr.type.list_size if pa.types.is_fixed_size_list(arr.type) else 0
        return np.zeros((0, width), np.float32)
    if arr.null_count:
        raise GnomonError("activation column has null vectors")
    flat = arr.flatten()  # respects slicing offsets
    if len(flat) % n:
        raise GnomonError("activation vectors have different lengths")
    return flat.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, len(flat) // n)


def _check_shard_table(table: pa.Table, positions: list[str]) -> pa.FixedSizeListType:
    want = {"example_id": pa.string(), "position": pa.string(), "token_index": pa.int32()}
    for name, typ in want.items():
        if name not in table.column_names or table.schema.field(name).type != typ:
            raise GnomonError(f"shard table needs column {name!r} of type {typ} (build it with activation_table)")
    act = table.schema.field("act").type if "act" in table.column_names else pa.null()
    if not (isinstance(act, pa.FixedSizeListType) and act.value_type in _DTYPES.values()):
        raise GnomonError("shard column 'act' must be a fixed-size list of float16 or float32")
    present = pc.unique(table.column("position")).to_pylist()
    if not set(present) <= set(positions):
        raise GnomonError(f"shard has positions {present} not in the declared positions {positions}")
    return act


def _normalise_examples(table: pa.Table, dataset: str) -> pa.Table:
    if "id" not in table.column_names or "label" not in table.column_names:
        raise GnomonError(f"examples for {dataset!r} need 'id' and 'label' columns")
    cols = []
    for field in EXAMPLE_SCHEMA:
        if field.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, pa.string()))
            continue
        col = table.column(field.name)
        if field.name == "messages" and not pa.types.is_string(col.type) and not pa.types.is_null(col.type):
            col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
        cols.append(pc.cast(col, pa.string()))
    new = pa.Table.from_arrays(cols, schema=EXAMPLE_SCHEMA).combine_chunks()
    if new.column("id").null_count or new.column("label").null_count:
        raise GnomonError(f"examples for {dataset!r} have empty 'id' or 'label' values")
    if pc.count_distinct(new.column("id")).as_py() != new.num_rows:
        raise GnomonError(f"examples for {dataset!r} have duplicate ids")
    bad = set(pc.unique(new.column("split").drop_null()).to_pylist()) - set(SPLITS)
    if bad:
        raise GnomonError(f"examples for {dataset!r} have unknown splits {sorted(bad)}; use {list(SPLITS)}")
    return new
