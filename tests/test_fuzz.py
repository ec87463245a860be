"""Issue 11: property-based fuzzing of every input gnomon reads.

Dataset files (bytes, encodings, shapes), TOML job specs, direction-file headers and CLI
argument vectors. The property: the outcome is success or a GnomonError / one-line
``gnomon CMD: error: ...`` with exit code 2, never a traceback (an ``internal error``,
exit 1) or a hang; and a home holding a store and a catalog, set up once, is byte-for-byte
unchanged after every refused example. Example counts stay modest so the suite stays
fast; ``CASES`` counts what ran (printed at the end of the module with ``-s``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.cli import main as cli
from pipeline.types import GnomonError

CASES: Counter[str] = Counter()
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> Iterator[Path]:
    """A home with a store (examples + shards) and a catalog holding one direction."""
    from catalog import Catalog
    from pipeline.direction import Direction, Provenance
    from pipeline.store import ActivationStore, activation_table

    home = tmp_path_factory.mktemp("fuzz") / "home"
    home.mkdir()
    shutil.copyfile(mlflow_template, home / "mlflow.db")
    store = ActivationStore(home)
    ids = [f"e{i}" for i in range(8)]
    store.write_examples("toy", pa.table({"id": ids, "label": ["a", "b"] * 4, "text": ids}))
    store.write_shard("org/m", "main", "toy", 1, 0,
                      activation_table(ids, "last", np.zeros(8), np.ones((8, 4)), "float32"),
                      fingerprint="fp", positions=["last"])
    prov = Provenance(model_id="tiny:llama", revision="main", fingerprint="f" * 16, hidden_size=4, layer=1,
                      concept="toy", positive="a", negative="b", method="mean_diff", dataset="toy",
                      dataset_hash="h" * 16)
    Catalog(home=home).register(Direction(vector=torch.arange(1.0, 5.0), provenance=prov, pos_mean=1.0,
                                          neg_mean=-1.0, spread=0.5, resid_norm=2.0, metrics={"val_auroc": 0.9}))
    yield home
    print(f"\nfuzz cases tried: {dict(CASES)}, total {sum(CASES.values())}")


def snapshot(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = cli(argv)
    except SystemExit as e:  # argparse: usage line(s), then "gnomon ...: error: ..."
        rc = int(e.code or 0)
    err = capsys.readouterr().err
    return rc, err


def check_outcome(rc: int, err: str, home: Path, before: dict[str, str]) -> None:
    assert "Traceback" not in err and "internal error" not in err, err[-2000:]
    assert rc in (0, 2), (rc, err[-2000:])
    if rc == 2:
        last = err.strip().splitlines()[-1]
        assert last.startswith("gnomon") and ": error: " in last, err[-2000:]
        assert snapshot(home) == before, "a refused command changed the home"


# ---- dataset files ------------------------------------------------------------------------
_VALUES = st.one_of(st.none(), st.text(max_size=8), st.integers(-3, 3), st.booleans(),
                    st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(0, 2), max_size=2),
                    st.sampled_from(["train", "val", "test", "pos", "neg", "a", ""]))
_ROWS = st.lists(st.dictionaries(st.sampled_from(["id", "text", "label", "pair", "split", "messages", "x"]),
                                 _VALUES, max_size=6), max_size=8)


def _encode(rows: list[dict[str, Any]], fmt: str, encoding: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows).encode(encoding, "replace")
    if fmt == "csv":
        out = io.StringIO()
        names = list(dict.fromkeys(k for r in rows for k in r)) or ["id"]
        w = csv.DictWriter(out, fieldnames=names)
        w.writeheader()
        w.writerows(rows)
        return out.getvalue().encode(encoding, "replace")
    buf = io.BytesIO()
    try:
        pq.write_table(pa.Table.from_pylist(rows), buf)
    except (pa.ArrowException, TypeError, ValueError):
        return b"PAR1" + json.dumps(rows, default=str).encode() + b"PAR1"
    return buf.getvalue()


@FUZZ
@given(content=st.one_of(st.binary(max_size=400), st.tuples(_ROWS, st.sampled_from(["jsonl", "csv", "parquet"]),
                                                           st.sampled_from(["utf-8", "latin-1", "utf-16"]))),
       suffix=st.sampled_from([".jsonl", ".csv", ".parquet"]))
def test_fuzz_dataset_files(fuzz_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch, content: Any, suffix: str) -> None:
    CASES["dataset files"] += 1
    monkeypatch.setenv("GNOMON_HOME", str(fuzz_home))
    if isinstance(content, tuple):
        rows, fmt, encoding = content
        data, suffix = _encode(rows, fmt, encoding), "." + fmt
    else:
        data = content
    path = tmp_path / f"fz{suffix}"
    path.write_bytes(data)
    for argv in (["concepts", "show", str(path)], ["concepts", "add", str(path), "--name", "fuzzed"]):
        before = snapshot(fuzz_home)
        rc, err = run_cli(argv, capsys)
        check_outcome(rc, err, fuzz_home, before)
    shutil.rmtree(fuzz_home / "concepts" / "fuzzed", ignore_errors=True)


# ---- job specs ------------------------------------------------------------------------------
_TOML_VALUE = st.one_of(st.integers(-2, 40), st.text(max_size=6).map(json.dumps), st.sampled_from(["true", "false"]),
                        st.lists(st.sampled_from(['"smollm2"', '"mean_diff"', "3", '"last"', '"x"']), max_size=3)
                        .map(lambda xs: "[" + ", ".join(xs) + "]"), st.just("nan"), st.just("inf"))
_TOML_KEYS = st.sampled_from(["name", "models", "revision", "executor", "concepts", "methods", "positions", "layers",
                              "select_metric", "register", "concept", "strengths", "unit", "n_prompts", "bogus"])
_TOML = st.lists(st.tuples(st.sampled_from(["[job]", "[fit]", "[[evaluate]]", "[other]", ""]),
                           st.lists(st.tuples(_TOML_KEYS, _TOML_VALUE), max_size=4)), max_size=4)


@FUZZ
@given(sections=_TOML, junk=st.binary(max_size=40))
def test_fuzz_job_specs(fuzz_home: Path, tmp_path: Path, sections: list, junk: bytes) -> None:
    from jobs.runtime.spec import load_job

    CASES["job specs"] += 1
    text = "\n".join(h + "\n" + "\n".join(f"{k} = {v}" for k, v in kv) for h, kv in sections)
    path = tmp_path / "job.toml"
    path.write_bytes(text.encode() + (junk if len(sections) % 2 else b""))
    before = snapshot(fuzz_home)
    try:
        load_job(path)
    except GnomonError as e:
        assert "\n" not in str(e).strip()
    assert snapshot(fuzz_home) == before


# ---- direction headers ---------------------------------------------------------------------
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                               st.text(max_size=5)),
                     lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=4), kids,
                                                                                          max_size=3)), max_leaves=8)
_FIELDS = ["model_id", "revision", "fingerprint", "hidden_size", "layer", "site", "position", "concept", "method",
           "params", "split_sizes", "dataset_hash"]


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(["provenance", "scale", "metrics", "top"]),
                                st.sampled_from(_FIELDS + ["pos_mean", "spread", "format_version", "extras"]),
                                _JSON), max_size=3),
       width=st.sampled_from([0, 3, 4, 5]), signed=st.booleans(), raw=st.one_of(st.none(), st.binary(max_size=60)))
def test_fuzz_direction_headers(tmp_path: Path, edits: list, width: int, signed: bool, raw: bytes | None) -> None:
    from safetensors.torch import save_file

    from pipeline.direction import Direction, Provenance, content_sha256

    CASES["direction headers"] += 1
    path = tmp_path / "d.safetensors"
    if raw is not None and not edits:
        path.write_bytes(raw)
    else:
        d = Direction(vector=torch.arange(1.0, 5.0), provenance=Provenance.minimal(hidden_size=4, layer=1))
        meta: dict[str, Any] = d.metadata()
        for where, key, value in edits:
            (meta if where == "top" else meta[where] if isinstance(meta.get(where), dict) else meta)[key] = value
        text = json.dumps(meta)
        tensors = {"vector": torch.ones(width)} if width else {"other": torch.ones(2)}
        header = {"gnomon": text, **({"gnomon_sha256": content_sha256(tensors, text)} if signed else {})}
        save_file(tensors, str(path), metadata=header)
    try:
        Direction.load(path)
    except GnomonError as e:
        assert "\n" not in str(e).strip()


# ---- CLI argument vectors ------------------------------------------------------------------
_TOKENS = st.one_of(
    st.sampled_from(["sql", "catalog", "ls", "show", "concepts", "collect", "fit", "steer", "monitor", "compare",
                     "export-gguf", "orthogonalize", "alias", "register-pending", "--json", "--limit", "-1", "0",
                     "--model", "tiny:llama:0x8", "tiny:nope", "/etc/passwd", "--dataset", "missing.jsonl",
                     "--layers", "3-1", "x", "--strength", "nan", "--threshold", "--memory-limit", "bogus",
                     "--methods", ",", "--positions", "tok,last", "--executor", "local", "toy@best", "toy/99",
                     "SELECT * FROM glob('gnomon-store:///**')", "SELECT 1", "--home", "--tracking-uri",
                     "sqlite:////nonexistent/x.db", "http://127.0.0.1:9", "--help"]),
    st.text(max_size=12))


@FUZZ
@given(argv=st.lists(_TOKENS, min_size=1, max_size=7))
def test_fuzz_cli_argv(fuzz_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                       argv: list[str]) -> None:
    CASES["cli argv"] += 1
    if "--home" in argv:  # keep every example on the fuzzed home
        argv = [a for a in argv if a != "--home"]
    if "http://127.0.0.1:9" in argv:  # a dead server: answer within seconds, not minutes
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("GNOMON_HOME", str(fuzz_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = snapshot(fuzz_home)
    rc, err = run_cli(argv, capsys)
    check_outcome(rc, err, fuzz_home, before)
