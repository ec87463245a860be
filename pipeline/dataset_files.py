"""Reading a concept dataset file (JSONL, CSV, Parquet) into rows, and the per-row and
per-pair checks ``pipeline.datasets`` builds a dataset from: every problem is one line
naming the file, the row and the fix."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.types import GnomonError

# lazy: pyarrow (heavy; imported where used)

__all__ = ["as_str", "canonical_messages", "check_pairs", "read_rows_file"]


def read_rows_file(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, rows) of a JSONL, CSV or Parquet file; CSV empty cells are null.

    Any way a file can fail to parse (not UTF-8, binary, truncated or empty Parquet,
    JSON nested beyond Python's recursion limit, an unreadable path) is one line naming
    the file and what to fix, never a traceback.
    """
    import pyarrow as pa

    try:
        return _parse_file(path)
    except UnicodeDecodeError as e:
        raise GnomonError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except RecursionError:
        raise GnomonError(f"{path}: JSON nested too deeply; rows must be flat objects") from None
    except (pa.ArrowException, csv.Error) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise GnomonError(f"{path}: cannot read it as {path.suffix.lstrip('.').upper()} ({first})") from None
    except OSError as e:
        raise GnomonError(f"{path}: cannot read it ({e.strerror or e})") from None


def _parse_file(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GnomonError(f"{path}:{lineno}: invalid JSON ({e.msg}); write one JSON object a line") from e
            if not isinstance(row, dict):
                raise GnomonError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        return list(dict.fromkeys(k for r in rows for k in r)), rows
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            names = list(reader.fieldnames or [])
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:  # DictReader would keep the last one silently
                raise GnomonError(f"{path}: column(s) {dup} appear more than once in the header")
            rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
            return names, rows
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        dup = sorted({n for n in table.column_names if table.column_names.count(n) > 1})
        if dup:
            raise GnomonError(f"{path}: column(s) {dup} appear more than once")
        return table.column_names, table.to_pylist()
    raise GnomonError(f"{path}: unsupported format {suffix!r}; use .jsonl, .csv or .parquet")


def as_str(value: Any, column: str, where: str, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and value == ""):
        if required:
            raise GnomonError(f"{where} has no {column!r}; every row needs one")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise GnomonError(f"{where}: {column!r} must be a string, got {type(value).__name__} {value!r}")
    return str(value)


def canonical_messages(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise GnomonError(f"{where}: 'messages' is not valid JSON ({e.msg})") from e
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value)
    if not ok:
        raise GnomonError(f"{where}: 'messages' must be a non-empty list of {{role, content}} strings")
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in value],
                      ensure_ascii=False, separators=(",", ":"))


def check_pairs(rows: list[dict[str, Any]], source: str) -> None:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["pair"] is not None:
            groups[r["pair"]].append(r)
    for pair, members in groups.items():
        ids = ", ".join(repr(m["id"]) for m in members)
        if len(members) != 2:
            raise GnomonError(f"{source}: pair {pair!r} has {len(members)} row(s) ({ids}); "
                              "a pair is exactly two rows with different labels")
        a, b = members
        if a["label"] == b["label"]:
            raise GnomonError(f"{source}: pair {pair!r} has two rows labelled {a['label']!r} ({ids}); "
                              "give them different labels")
        if a["split"] != b["split"]:
            raise GnomonError(f"{source}: pair {pair!r} straddles splits ({a['id']!r}: {a['split']}, "
                              f"{b['id']!r}: {b['split']}); give both rows the same split")
