"""Concept datasets: read, validate, split and hash labelled examples.

A dataset is JSONL, CSV or Parquet, one example a row: ``id``, ``text`` (or ``messages``,
a chat list rendered with the model's chat template), ``label``, optional ``pair`` (two
rows with different labels form a contrast pair) and optional ``split``. Rows without a
split get one from a hash of their pair (or id), 70/15/15, so a pair never straddles
train and test and a dataset splits the same way on every machine.

>>> ds = load_dataset("sentiment")
>>> ds.default_contrast
('positive', 'negative')
>>> sum(ds.split_counts().values()) == ds.n
True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import publish, write_text
from pipeline.chat import render_rows
from pipeline.concepts import CONCEPTS, DATA_DIR
from pipeline.dataset_files import as_str, canonical_messages, check_pairs, read_rows_file
from pipeline.home import pull_shared, push_shared
from pipeline.types import SPLITS, GnomonError, Split

COLUMNS = ("id", "text", "messages", "label", "pair", "split")
SCHEMA = pa.schema([(c, pa.string()) for c in COLUMNS])
FORMATS = (".jsonl", ".ndjson", ".csv", ".parquet", ".pq")
SPLIT_BOUNDS = (0.70, 0.85)
"""Cumulative split fractions: train below 0.70, val below 0.85, test above."""
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HASH_VERSION = b"gnomon-concept-dataset-v1\n"


def assign_split(key: str) -> Split:
    """Deterministic 70/15/15 split of a pair (or id) key, the same on every machine."""
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "train" if u < SPLIT_BOUNDS[0] else "val" if u < SPLIT_BOUNDS[1] else "test"


@dataclass(frozen=True, eq=False)
class ConceptDataset:
    """A validated concept dataset. Equality is by name and content hash."""

    name: str
    """The concept name (shipped, registered, or the file's stem)."""
    table: pa.Table
    """Columns ``id, text, messages, label, pair, split`` (strings; ``messages`` is JSON,
    ``text`` is null on chat rows, ``pair`` null when unpaired, ``split`` always set)."""
    labels: tuple[str, ...]
    """Distinct labels, sorted."""
    content_hash: str
    """sha256 of the canonical rows (sorted by id, splits resolved): same for any file format."""
    source: str
    """Where it was read from."""
    contrast: tuple[str, str] | None = None
    """(positive, negative) declared when the dataset was registered (``concepts add --positive``)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConceptDataset):
            return NotImplemented
        return (self.name, self.content_hash) == (other.name, other.content_hash)

    def __hash__(self) -> int:
        return hash((self.name, self.content_hash))

    @property
    def n(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> list[str]:
        return self.table.column("id").to_pylist()

    def label_counts(self) -> dict[str, int]:
        counts = Counter(self.table.column("label").to_pylist())
        return {label: counts[label] for label in self.labels}

    def split_counts(self) -> dict[str, int]:
        counts = Counter(self.table.column("split").to_pylist())
        return {s: counts[s] for s in SPLITS}

    @property
    def pairs_count(self) -> int:
        return len({p for p in self.table.column("pair").to_pylist() if p is not None})

    @property
    def default_contrast(self) -> tuple[str, str]:
        """(positive, negative): declared at registration, else the shipped metadata's, else the
        first two labels sorted."""
        if self.contrast is not None:
            return self.contrast
        info = CONCEPTS.get(self.name)
        if info is not None and {info.positive, info.negative} <= set(self.labels):
            return info.positive, info.negative
        return self.labels[0], self.labels[1]

    def texts(self, tokenizer: Any = None, *, add_generation_prompt: bool = False) -> list[str]:
        """The model input of every row: ``text``, or ``messages`` through the chat template.

        ``add_generation_prompt`` appends the assistant header, i.e. reads the model at the
        moment it is about to answer (where Arditi et al. 2024 read the refusal direction).
        """
        return render_rows(self.table.column("text").to_pylist(), self.table.column("messages").to_pylist(),
                           tokenizer, self.name, add_generation_prompt=add_generation_prompt,
                           ids=self.table.column("id").to_pylist())

    def split_texts(self, split: str, label: str, tokenizer: Any = None, n: int | None = None) -> list[str]:
        """Rendered texts of one label in one split, in table order (at most ``n``)."""
        rows = self.table.select(["label", "split"]).to_pylist()
        out = [t for t, r in zip(self.texts(tokenizer), rows) if r["split"] == split and r["label"] == label]
        return out[:n] if n else out


def validate_contrast(ds: ConceptDataset, positive: str, negative: str) -> None:
    """Raise unless ``positive`` and ``negative`` are two different labels of ``ds``."""
    for label in (positive, negative):
        if label not in ds.labels:
            raise GnomonError(f"label {label!r} is not in concept {ds.name!r}; "
                              f"labels present: {', '.join(ds.labels)}")
    if positive == negative:
        raise GnomonError(f"positive and negative are both {positive!r}; contrast two different labels")


def load_dataset(spec: str | Path, name: str | None = None,
                 home: str | Path | None = None) -> ConceptDataset:
    """Load a dataset from a file, a shipped concept name, or a registered concept name."""
    text = str(spec)
    path = Path(text).expanduser()
    if isinstance(spec, Path) or path.suffix.lower() in FORMATS or os.sep in text or path.is_file():
        if not path.is_file():
            raise GnomonError(f"no such dataset file: {path}")
        return _from_rows(*read_rows_file(path), name=name or path.stem, source=str(path))
    if text in CONCEPTS:
        ds = _shipped(text)
        return ds if name in (None, text) else dataclasses.replace(ds, name=name)
    registered = pull_shared("concepts", home) / f"{text}.parquet"   # object storage: any node's registrations
    if registered.is_file():
        ds = _from_rows(*read_rows_file(registered), name=name or text, source=str(registered))
        return dataclasses.replace(ds, contrast=_read_contrast(registered.with_suffix(".contrast.json"), ds))
    available = [c.name for c in list_concepts(home)]
    raise GnomonError(f"unknown concept {text!r}; available: {', '.join(available)} "
                      "(or give a .jsonl/.csv/.parquet path, or run 'gnomon concepts add')")


def _read_contrast(path: Path, ds: ConceptDataset) -> tuple[str, str] | None:
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    pair = (str(doc.get("positive")), str(doc.get("negative")))
    return pair if set(pair) <= set(ds.labels) else None


def register_dataset(path: str | Path, name: str, home: str | Path | None = None,
                     *, overwrite: bool = False, positive: str | None = None,
                     negative: str | None = None) -> ConceptDataset:
    """Validate ``path`` and store it as ``<home>/concepts/<name>.parquet`` (atomically);
    ``positive``/``negative`` (the label that should project higher, and the other) are
    kept beside it in ``<name>.contrast.json`` and become the dataset's default contrast."""
    if not _SLUG.match(name):
        raise GnomonError(f"concept name {name!r} is not a slug; use lowercase letters, digits, '-' or '_'")
    if name in CONCEPTS:
        raise GnomonError(f"{name!r} is a shipped concept; register under another name")
    ds = load_dataset(Path(path), name=name)
    if positive is not None or negative is not None:
        pos = positive or next((x for x in ds.labels if x != negative), "")
        neg = negative or next((x for x in ds.labels if x != pos), "")
        validate_contrast(ds, pos, neg)
        ds = dataclasses.replace(ds, contrast=(pos, neg))
    dest = pull_shared("concepts", home) / f"{name}.parquet"
    sidecar = dest.with_suffix(".contrast.json")
    if dest.exists() and not overwrite:
        existing = load_dataset(name, home=home)
        if existing.content_hash == ds.content_hash:
            if ds.contrast is not None and ds.contrast != existing.contrast:
                _write_contrast(sidecar, ds.contrast)
                return dataclasses.replace(existing, contrast=ds.contrast)
            return existing
        raise GnomonError(f"concept {name!r} is already registered with different content; "
                          "pick another name or pass --overwrite")
    publish(dest, lambda tmp: pq.write_table(ds.table, tmp))
    if ds.contrast is not None:
        push_shared(_write_contrast(sidecar, ds.contrast), home)
    else:
        sidecar.unlink(missing_ok=True)
    push_shared(dest, home)   # a home on object storage: the data last, so a reader never sees it without its labels
    return dataclasses.replace(ds, source=str(dest))


def _write_contrast(path: Path, contrast: tuple[str, str]) -> Path:
    """The labels into the dataset's metadata file, keeping what else it declares (readout
    words, a scorer: ``pipeline.concepts.behaviour.readout``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    return write_text(path, json.dumps({**doc, "positive": contrast[0], "negative": contrast[1]}) + "\n")


def list_concepts(home: str | Path | None = None) -> list[ConceptDataset]:
    """Shipped concepts (in metadata order), then registered ones (by name)."""
    out = [_shipped(name) for name in CONCEPTS]
    folder = pull_shared("concepts", home)
    for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        ds = _from_rows(*read_rows_file(path), name=path.stem, source=str(path))
        # the declared contrast (--positive/--negative), as load_dataset reads it
        out.append(dataclasses.replace(ds, contrast=_read_contrast(path.with_suffix(".contrast.json"), ds)))
    return out


def neutral_prompts(name: str, home: str | Path | None = None) -> list[str]:
    """Prompts that commit to neither label: for steering continuations and side effects.

    Shipped concepts have ``data/<name>_neutral.txt``; a registered concept may have
    ``<home>/concepts/<name>_neutral.txt``. One prompt a line; blank lines are skipped.
    """
    path = DATA_DIR / f"{name}_neutral.txt" if name in CONCEPTS else (
        pull_shared("concepts", home) / f"{name}_neutral.txt" if _SLUG.match(name) else None)
    if path is None or not path.is_file():
        raise GnomonError(f"no neutral prompts for concept {name!r}; shipped concepts have them "
                          f"({', '.join(CONCEPTS)}); for a registered one write "
                          f"<home>/concepts/{name}_neutral.txt, one prompt a line")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@functools.cache
def _shipped(name: str) -> ConceptDataset:
    path = DATA_DIR / f"{name}.jsonl"
    return _from_rows(*read_rows_file(path), name=name, source=str(path))


def _from_rows(columns: list[str], raw: list[dict[str, Any]], *, name: str, source: str) -> ConceptDataset:
    """Validate rows and build the dataset; every problem is one GnomonError naming its fix."""
    if not raw:
        raise GnomonError(f"{source}: dataset is empty; add at least one row per label")
    for column in ("id", "label"):
        if column not in columns:
            raise GnomonError(f"{source}: missing column {column!r}; columns are id, text or messages, "
                              "label, and optional pair, split")
    if "text" not in columns and "messages" not in columns:
        raise GnomonError(f"{source}: missing column 'text' (or 'messages' for chat rows)")
    rows: list[dict[str, Any]] = []
    first_row: dict[str, int] = {}
    for i, r in enumerate(raw, 1):
        rid = as_str(r.get("id"), "id", f"{source}: row {i}", required=True)
        assert rid is not None
        where = f"{source}: row {i} (id {rid!r})"
        if rid in first_row:
            raise GnomonError(f"{source}: duplicate id {rid!r} (rows {first_row[rid]} and {i}); ids must be unique")
        first_row[rid] = i
        text = as_str(r.get("text"), "text", where, required=False)
        messages = canonical_messages(r.get("messages"), where)
        if (text is None) == (messages is None):
            raise GnomonError(f"{where}: give exactly one of 'text' or 'messages'")
        split = as_str(r.get("split"), "split", where, required=False)
        if split is not None and split not in SPLITS:
            raise GnomonError(f"{where}: invalid split {split!r}; use train, val or test (or leave it empty)")
        pair = as_str(r.get("pair"), "pair", where, required=False)
        rows.append({"id": rid, "text": text, "messages": messages,
                     "label": as_str(r.get("label"), "label", where, required=True),
                     "pair": pair, "split": split or assign_split(pair if pair is not None else rid)})
    labels = tuple(sorted({r["label"] for r in rows}))
    if len(labels) < 2:
        raise GnomonError(f"{source}: concept has only the label {labels[0]!r}; a concept needs at least two labels")
    check_pairs(rows, source)
    canonical = _HASH_VERSION + "\n".join(
        json.dumps([r[c] for c in COLUMNS], ensure_ascii=False, separators=(",", ":"))
        for r in sorted(rows, key=lambda r: r["id"])).encode("utf-8")
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return ConceptDataset(name=name, table=table, labels=labels,
                          content_hash=hashlib.sha256(canonical).hexdigest(), source=source)
