"""``docs/store.md``'s pandas, polars and DuckDB examples, run as written on a tiny model's store
with a leftover shard (no manifest) and a hidden temporary file beside the real ones: each
reader's counts equal ``gnomon store ls`` / ``gnomon sql``'s, and a plain glob would not."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs.cli import main as cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "store.md"


def blocks() -> dict[str, str]:
    """The ```python blocks of the doc, by the heading above each."""
    out, heading = {}, ""
    for part in re.split(r"(^## .*$)", DOC.read_text(), flags=re.M):
        if part.startswith("## "):
            heading = part[3:].strip()
            continue
        code = re.findall(r"```python\n(.*?)```", part, flags=re.S)
        if code:
            out[heading] = "\n".join(code)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("store-docs")
    assert cli(["--home", str(home), "collect", "--model", "tiny:llama", "--dataset", "sentiment",
                "--layers", "1-2", "--executor", "local"]) == 0
    part = next((home / "activations").rglob("layer=2/part-00000.parquet"))
    shutil.copyfile(part, part.with_name("part-00099.parquet"))        # a leftover: no manifest
    (part.parent / ".part-00001.parquet.0123abcd.tmp").write_bytes(b"half a shard")  # a write in flight
    return home


def run_block(name: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("GNOMON_HOME", str(home))
    ns: dict[str, Any] = {}
    exec(compile(blocks()[name], f"{DOC}:{name}", "exec"), ns)  # noqa: S102 - the doc's own code
    return ns


def gnomon_counts(home: Path, capsys: pytest.CaptureFixture[str]) -> dict[tuple[int, str], int]:
    capsys.readouterr()
    assert cli(["--home", str(home), "sql", "--json", "SELECT a.layer, e.label, count(*) AS n FROM activations a "
                "JOIN examples e ON a.dataset = e.dataset AND a.example_id = e.id "
                "WHERE a.position = 'last' GROUP BY ALL"]) == 0
    return {(int(r["layer"]), r["label"]): int(r["n"]) for r in json.loads(capsys.readouterr().out)}


def test_doc_names_every_reader() -> None:
    assert set(blocks()) == {"pandas", "polars", "DuckDB"}


def test_store_ls_rows_count_both_positions(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli(["--home", str(store), "store", "ls", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["datasets"]
    assert row["rows_per_layer"] == 2 * 480                    # last + mean, as the doc says


def test_pandas_example(store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block("pandas", store, monkeypatch)
    want = gnomon_counts(store, capsys)
    assert {(int(k[0]), k[1]): v for k, v in ns["pandas_counts"].items() if v} == want
    assert want == {(1, "negative"): 240, (1, "positive"): 240, (2, "negative"): 240, (2, "positive"): 240}
    assert len(ns["x"]) == 480 and len(ns["x"][0]) == 32
    import pandas as pd

    glob = pd.read_parquet(store / "activations")              # the plain glob counts the leftover too
    assert len(glob) == 4 * 480 + 2 * 480


def test_polars_example(store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("polars", reason="polars is in the test extra: pip install -e '.[test]'")
    ns = run_block("polars", store, monkeypatch)
    got = {(int(r["layer"]), r["label"]): int(r["len"]) for r in ns["polars_counts"].to_dicts()}
    assert got == gnomon_counts(store, capsys)


def test_duckdb_example(store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block("DuckDB", store, monkeypatch)
    got = {(int(layer), label): n for layer, label, n, _norm in ns["duckdb_counts"]}
    assert got == gnomon_counts(store, capsys)
    assert all(norm > 0 for *_x, norm in ns["duckdb_counts"])
