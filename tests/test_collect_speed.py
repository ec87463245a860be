"""The speed machinery keeps the results: token-budget batches, the model cache, the
recorded model identity (a fully stored collect loads nothing), the automatic executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.runtime.engine import AutoExecutor, LocalExecutor, make_executor
from pipeline.collect import collect, length_batches
from pipeline.models import cached_model, clear_model_cache, model_identity
from pipeline.types import GnomonError

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 64), st.integers(1, 2000))
def test_token_budget_batches_cover_each_text_once_within_budget(lengths: list[int], rows: int,
                                                                 budget: int) -> None:
    batches = length_batches(lengths, rows, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # packed in length order: little padding
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) <= rows
        assert len(b) == 1 or len(b) * longest <= budget  # only a lone text may exceed the budget
    for b, nxt in zip(batches, batches[1:]):  # a batch closes only when the next text would not fit
        grown = (len(b) + 1) * lengths[nxt[0]]
        assert len(b) == rows or grown > budget


def test_tiny_token_budget_gives_the_same_rows_as_one_text_at_a_time(tiny_lm: Any) -> None:
    texts = ["hello world", "a", "the quick brown fox jumps over", "xy z", "no", "a b c d e f g"]
    ids = [f"e{i}" for i in range(len(texts))]
    packed = collect(tiny_lm, ids, texts, positions=["last", "mean"], token_budget=24)
    single = collect(tiny_lm, ids, texts, positions=["last", "mean"], batch_size=1)
    for layer in packed:
        a, b = packed[layer].arrays(), single[layer].arrays()
        got = {(e, p): v for e, p, v in zip(a[0], a[1], a[3])}
        want = {(e, p): v for e, p, v in zip(b[0], b[1], b[3])}
        assert got.keys() == want.keys()
        for k in got:
            np.testing.assert_allclose(got[k], want[k], atol=2e-5, rtol=1e-4)


def test_float16_output_is_the_rounded_float32_output(tiny_lm: Any) -> None:
    texts, ids = ["some text", "more text here"], ["a", "b"]
    f32 = collect(tiny_lm, ids, texts, layers=[1, 3])
    f16 = collect(tiny_lm, ids, texts, layers=[1, 3], out_dtype="float16")
    for layer in (1, 3):
        assert f16[layer].arrays()[3].dtype == np.float16
        np.testing.assert_array_equal(f16[layer].arrays()[3], f32[layer].arrays()[3].astype(np.float16))


def test_model_cache_reuses_a_load_and_can_be_turned_off(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clear_model_cache()
    a = cached_model("tiny:llama", home)
    assert cached_model("tiny:llama", home) is a
    assert cached_model("tiny:gpt2", home) is not a and cached_model("tiny:llama", home) is not a  # capacity 1
    monkeypatch.setenv("GNOMON_MODEL_CACHE", "0")
    assert cached_model("tiny:llama", home) is not cached_model("tiny:llama", home)
    clear_model_cache()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A tiny llama saved as a Hugging Face directory (a model with weights on disk)."""
    from pipeline.models.tiny import tiny_model

    model, tok = tiny_model("tiny:llama")
    path = tmp_path / "tiny-llama-dir"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_fully_stored_collect_loads_no_model_and_imports_no_torch(home: Path, small_dataset: Path,
                                                                  model_dir: Path) -> None:
    spec = CollectSpec(model=str(model_dir), dataset=str(small_dataset), layers=(1, 2), shard_size=10)
    first = run_collection(spec, LocalExecutor(), home)
    assert first["written_files"] == 3 * 2
    ident = model_identity(str(model_dir), home)
    assert ident is not None and ident.fingerprint == first["fingerprint"] and ident.num_layers == first["num_layers"]
    script = (
        "import json, sys\n"
        "from jobs.stages.collect_job import CollectSpec, run_collection\n"
        "from jobs.runtime.engine import make_executor\n"
        f"s = run_collection(CollectSpec(model={str(model_dir)!r}, dataset={str(small_dataset)!r}, layers=(1, 2), "
        "shard_size=10), make_executor('auto'))\n"
        "print(json.dumps({**s, 'torch': 'torch' in sys.modules, 'ray': 'ray' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "GNOMON_HOME": str(home),
                                                               "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=120, check=True)
    again = json.loads(out.stdout.strip().splitlines()[-1])
    assert again["written_files"] == 0 and again["skipped_files"] == 3 * 2
    assert again["executor"] == "none" and again["fingerprint"] == first["fingerprint"]
    assert again["torch"] is False and again["ray"] is False
    # a layer that is not stored yet is collected (the model is loaded then)
    more = run_collection(CollectSpec(model=str(model_dir), dataset=str(small_dataset), layers=(1, 2, 3),
                                      shard_size=10), LocalExecutor(), home)
    assert more["written_files"] == 3 and more["skipped_files"] == 6


def test_recorded_identity_is_dropped_when_the_weights_change(home: Path, model_dir: Path) -> None:
    from pipeline.models import load_model

    load_model(str(model_dir), home)
    assert model_identity(str(model_dir), home) is not None
    weights = next(model_dir.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert model_identity(str(model_dir), home) is None
    assert model_identity("tiny:llama", home) is None  # built in memory: always loaded


def test_layers_out_of_range_are_refused_from_the_recorded_identity(home: Path, small_dataset: Path,
                                                                    model_dir: Path) -> None:
    run_collection(CollectSpec(model=str(model_dir), dataset=str(small_dataset), layers=(1,)), LocalExecutor(), home)
    with pytest.raises(GnomonError, match="out of range"):
        run_collection(CollectSpec(model=str(model_dir), dataset=str(small_dataset), layers=(99,)),
                       LocalExecutor(), home)


def test_auto_executor_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert make_executor().__class__ is AutoExecutor
    assert AutoExecutor(address="ray://head:10001").pool_choice()[0] == "ray"
    import jobs.runtime.engine as je

    monkeypatch.setattr(je, "_gpu_count", lambda: 2)
    assert AutoExecutor().pool_choice() == ("ray", "2 GPUs, one actor each")
    monkeypatch.setattr(je, "_gpu_count", lambda: 1)
    monkeypatch.setattr(je.os, "cpu_count", lambda: 2)
    assert AutoExecutor().pool_choice()[0] == "local"
    monkeypatch.setattr(je.os, "cpu_count", lambda: 64)
    assert AutoExecutor().pool_choice()[0] == "local"  # a GPU node: one process on the GPU
    monkeypatch.setattr(je, "_gpu_count", lambda: 0)
    assert AutoExecutor().pool_choice()[0] == "ray"    # many cores, no GPU
    ex = AutoExecutor()
    assert ex.map(lambda x: x * 2, [1, 2]) == [2, 4]      # two items: in-process, no Ray
    assert ex.name == "local" and "2 task(s)" in ex.choice
    with pytest.raises(GnomonError, match="unknown executor"):
        make_executor("slurm")


def test_auto_collect_runs_in_process_here_and_says_so(home: Path, small_dataset: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs.runtime.engine as je

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(je, "_gpu_count", lambda: 0)
    monkeypatch.setattr(je.os, "cpu_count", lambda: 2)
    s = run_collection(CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1,)), make_executor("auto"), home)
    assert s["executor"] == "local" and s["executor_choice"].startswith("local (auto: one node, 2 CPUs")
    assert s["written_files"] == 1
