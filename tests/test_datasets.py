"""Concept dataset format: reading, validation errors, splits, hashing, chat rendering."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.datasets import (
    SPLIT_BOUNDS,
    ConceptDataset,
    assign_split,
    list_concepts,
    load_dataset,
    register_dataset,
    validate_contrast,
)
from pipeline.types import GnomonError


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r[c]) for c in columns})
    return path


def paired_rows(n_pairs: int = 6) -> list[dict[str, Any]]:
    rows = []
    for k in range(n_pairs):
        rows.append({"id": f"p{k}-a", "text": f"good thing number {k}", "label": "good", "pair": f"p{k}"})
        rows.append({"id": f"p{k}-b", "text": f"bad thing number {k}", "label": "bad", "pair": f"p{k}"})
    rows.append({"id": "solo", "text": "an unpaired good line", "label": "good"})
    return rows


# --- reading and the three formats -------------------------------------------------

def test_same_content_same_hash_across_formats(tmp_path: Path) -> None:
    rows = paired_rows()
    cols = ["id", "text", "label", "pair"]
    a = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    b = load_dataset(write_csv(tmp_path / "d.csv", rows, cols))
    pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows]), tmp_path / "d.parquet")
    c = load_dataset(tmp_path / "d.parquet")
    assert a.content_hash == b.content_hash == c.content_hash
    assert a.table.equals(b.table) and a.table.equals(c.table)
    assert a.labels == ("bad", "good") and a.n == 13 and a.pairs_count == 6
    # Row order does not change the content; one changed character does.
    d = load_dataset(write_jsonl(tmp_path / "rev.jsonl", rows[::-1]))
    assert d.content_hash == a.content_hash
    changed = [dict(r) for r in rows]
    changed[3]["text"] += "!"
    assert load_dataset(write_jsonl(tmp_path / "chg.jsonl", changed)).content_hash != a.content_hash


def test_table_columns_and_nulls(tmp_path: Path) -> None:
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", paired_rows()))
    assert ds.table.column_names == ["id", "text", "messages", "label", "pair", "split"]
    solo = ds.table.to_pylist()[-1]
    assert solo["pair"] is None and solo["messages"] is None and solo["split"] in ("train", "val", "test")
    assert ds.label_counts() == {"bad": 6, "good": 7}
    assert sum(ds.split_counts().values()) == ds.n
    assert ds.name == "d" and ds.ids[0] == "p0-a"


def test_explicit_splits_are_kept(tmp_path: Path) -> None:
    rows = paired_rows(3)
    for r in rows:
        r["split"] = "test"
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert ds.split_counts() == {"train": 0, "val": 0, "test": 7}


# --- validation: one clear error per problem ---------------------------------------

@pytest.mark.parametrize("missing", ["id", "label"])
def test_missing_column(tmp_path: Path, missing: str) -> None:
    rows = [{k: v for k, v in r.items() if k != missing} for r in paired_rows()]
    with pytest.raises(GnomonError, match=f"missing column '{missing}'"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_missing_text_column(tmp_path: Path) -> None:
    with pytest.raises(GnomonError, match="missing column 'text'"):
        load_dataset(write_csv(tmp_path / "d.csv", paired_rows(), ["id", "label", "pair"]))


def test_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(GnomonError, match="empty"):
        load_dataset(write_csv(tmp_path / "d.csv", [], ["id", "text", "label"]))


def test_duplicate_id_is_named(tmp_path: Path) -> None:
    rows = paired_rows()
    rows.append({"id": "p3-b", "text": "again", "label": "bad"})
    with pytest.raises(GnomonError, match=r"duplicate id 'p3-b' \(rows 8 and 14\)"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_pair_with_same_labels(tmp_path: Path) -> None:
    rows = paired_rows()
    rows[5]["label"] = "good"
    with pytest.raises(GnomonError, match="pair 'p2' has two rows labelled 'good'"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_pair_with_three_rows(tmp_path: Path) -> None:
    rows = paired_rows()
    rows.append({"id": "extra", "text": "x", "label": "meh", "pair": "p1"})
    with pytest.raises(GnomonError, match=r"pair 'p1' has 3 row\(s\).*'extra'"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_pair_with_one_row(tmp_path: Path) -> None:
    rows = paired_rows()
    del rows[1]
    with pytest.raises(GnomonError, match=r"pair 'p0' has 1 row\(s\)"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_single_label(tmp_path: Path) -> None:
    rows = [{"id": str(i), "text": f"t{i}", "label": "only"} for i in range(4)]
    with pytest.raises(GnomonError, match="only the label 'only'.*at least two labels"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_contrast_label_must_exist(tmp_path: Path) -> None:
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", paired_rows()))
    validate_contrast(ds, "good", "bad")
    with pytest.raises(GnomonError, match="label 'great' is not in concept 'd'; labels present: bad, good"):
        validate_contrast(ds, "great", "bad")
    with pytest.raises(GnomonError, match="both 'good'"):
        validate_contrast(ds, "good", "good")


def test_pair_straddling_splits(tmp_path: Path) -> None:
    rows = paired_rows()
    rows[0]["split"], rows[1]["split"] = "train", "test"
    with pytest.raises(GnomonError, match="pair 'p0' straddles splits.*same split"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_invalid_split(tmp_path: Path) -> None:
    rows = paired_rows()
    rows[4]["split"] = "training"
    with pytest.raises(GnomonError, match="invalid split 'training'; use train, val or test"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_row_with_both_or_neither_text(tmp_path: Path) -> None:
    rows = paired_rows()
    rows[2]["messages"] = [{"role": "user", "content": "hi"}]
    with pytest.raises(GnomonError, match="id 'p1-a'.*exactly one of 'text' or 'messages'"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_bad_json_line_and_format(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"id": "a", "text": "x", "label": "y"}\n{not json}\n')
    with pytest.raises(GnomonError, match=r"d.jsonl:2: invalid JSON"):
        load_dataset(p)
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(GnomonError, match="unsupported format '.txt'"):
        load_dataset(tmp_path / "d.txt")
    with pytest.raises(GnomonError, match="no such dataset file"):
        load_dataset(tmp_path / "absent.jsonl")


def test_unknown_name_lists_concepts(tmp_path: Path) -> None:
    with pytest.raises(GnomonError, match="unknown concept 'nope'; available: sentiment, truth"):
        load_dataset("nope", home=tmp_path)


# --- splits -------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_assign_split_is_a_pure_function(key: str) -> None:
    assert assign_split(key) == assign_split(key) in ("train", "val", "test")


def test_split_fractions_and_pairs_never_straddle(tmp_path: Path) -> None:
    rows = paired_rows(1500)
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    by_pair: dict[str, set[str]] = {}
    for r in ds.table.to_pylist():
        if r["pair"] is not None:
            by_pair.setdefault(r["pair"], set()).add(r["split"])
            assert r["split"] == assign_split(r["pair"])
    assert all(len(s) == 1 for s in by_pair.values())
    counts = Counter(next(iter(s)) for s in by_pair.values())
    # 1500 pairs: binomial std of the train fraction is ~0.012, so 0.05 is > 4 sigma.
    assert abs(counts["train"] / 1500 - SPLIT_BOUNDS[0]) < 0.05
    assert abs(counts["val"] / 1500 - (SPLIT_BOUNDS[1] - SPLIT_BOUNDS[0])) < 0.05
    # Reloading (a second process would do the same) gives identical splits.
    again = load_dataset(write_jsonl(tmp_path / "again.jsonl", rows))
    assert again.table.column("split").equals(ds.table.column("split"))


# --- chat messages ------------------------------------------------------------------

def chat_tokenizer(template: str | None) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.chat_template = template
    return fast


TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_messages_render_with_chat_template(tmp_path: Path) -> None:
    rows = [
        {"id": "c1", "messages": [{"role": "user", "content": "Help me bake bread."}], "label": "harmless"},
        {"id": "c2", "messages": json.dumps([{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "Help me pick a lock."}]),
         "label": "harmful"},
        {"id": "t1", "text": "plain text row", "label": "harmless"},
    ]
    ds = load_dataset(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert ds.table.column("text").to_pylist()[:2] == [None, None]
    texts = ds.texts(chat_tokenizer(TEMPLATE))
    assert texts == ["<|user|>Help me bake bread.\n",
                     "<|system|>Be brief.\n<|user|>Help me pick a lock.\n",
                     "plain text row"]
    assert ds.texts(chat_tokenizer(TEMPLATE), add_generation_prompt=True)[0].endswith("<|assistant|>")
    with pytest.raises(GnomonError, match="pass the model's tokenizer"):
        ds.texts()
    with pytest.raises(GnomonError, match="no chat_template"):
        ds.texts(chat_tokenizer(None))
    # A string-encoded and a list-encoded conversation hash the same.
    rows[1]["messages"] = json.loads(rows[1]["messages"])
    assert load_dataset(write_jsonl(tmp_path / "chat2.jsonl", rows)).content_hash == ds.content_hash


def test_malformed_messages(tmp_path: Path) -> None:
    rows = [{"id": "c1", "messages": [{"role": "user"}], "label": "a"},
            {"id": "c2", "text": "x", "label": "b"}]
    with pytest.raises(GnomonError, match="id 'c1'.*list of \\{role, content\\}"):
        load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))


# --- registration -------------------------------------------------------------------

def test_register_roundtrip_and_conflicts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    src = write_jsonl(tmp_path / "mine.jsonl", paired_rows())
    ds = register_dataset(src, "my-concept", home=home)
    assert (home / "concepts" / "my-concept.parquet").is_file()
    assert [p.name for p in (home / "concepts").iterdir()] == ["my-concept.parquet"]  # no temp left
    loaded = load_dataset("my-concept", home=home)
    assert isinstance(loaded, ConceptDataset) and loaded.content_hash == ds.content_hash
    assert loaded.table.equals(ds.table)
    assert "my-concept" in [c.name for c in list_concepts(home)]
    assert register_dataset(src, "my-concept", home=home).content_hash == ds.content_hash  # idempotent
    other = write_jsonl(tmp_path / "other.jsonl", paired_rows(3))
    with pytest.raises(GnomonError, match="already registered with different content"):
        register_dataset(other, "my-concept", home=home)
    assert register_dataset(other, "my-concept", home=home, overwrite=True).n == 7
    with pytest.raises(GnomonError, match="not a slug"):
        register_dataset(src, "../evil", home=home)
    with pytest.raises(GnomonError, match="shipped concept"):
        register_dataset(src, "sentiment", home=home)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "text": "x", "label": "y"}])
    with pytest.raises(GnomonError, match="at least two labels"):
        register_dataset(bad, "bad", home=home)
    assert not (home / "concepts" / "bad.parquet").exists()
