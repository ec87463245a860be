"""Collection: vectors equal a plain forward pass, batched == unbatched, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import torch

from jobs.stages.collect_job import CollectSpec, run_collection
from jobs.runtime.engine import LocalExecutor
from pipeline.collect import SINK_RATIO, collect, mean_pool
from pipeline.steer import Op, applying
from pipeline.store import ActivationStore

FAMILIES = ["tiny:llama", "tiny:gpt2", "tiny:gpt_neox", "tiny:bert"]


def reference(lm: Any, text: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the last-token and mean-over-non-special vectors of an unbatched forward
    pass with ``output_hidden_states``; the last HF entry is after the final norm, so ours
    gets the norm applied before comparing (see DESIGN.md)."""
    enc = lm.tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        hs = lm.model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                      output_hidden_states=True).hidden_states
    keep = ~enc.special_tokens_mask[0].bool()
    return [h[0, -1] for h in hs], [_sink_free_mean(h[0, keep]) for h in hs]


def _sink_free_mean(h: torch.Tensor) -> torch.Tensor:
    """The documented ``mean`` rule, written out for one example's content tokens (T, D):
    the first is always left out when there is another."""
    return h[1:].mean(0) if len(h) > 1 else h.mean(0)


def _undo_final_norm(lm: Any, layer: int, v: torch.Tensor) -> torch.Tensor:
    norm = lm.adapter.get_final_norm(lm.model)
    if layer == lm.num_layers and norm is not None:
        with torch.no_grad():
            return norm(v[None])[0]
    return v


@pytest.mark.parametrize("family", FAMILIES)
def test_collect_matches_hidden_states_batched_and_unbatched(tiny_models: Any, family: str) -> None:
    lm = tiny_models(family)
    texts = ["hello world", "a", "the quick brown fox jumps over", "xy z", "no"]
    ids = [f"e{i}" for i in range(len(texts))]
    batched = collect(lm, ids, texts, positions=["last", "mean"], batch_size=len(texts))
    single = collect(lm, ids, texts, positions=["last", "mean"], batch_size=1)
    for layer in range(lm.num_layers + 1):
        b_ids, b_pos, _, b_acts = batched[layer].arrays()
        s_ids, s_pos, _, s_acts = single[layer].arrays()
        b = {(e, p): a for e, p, a in zip(b_ids, b_pos, b_acts)}
        s = {(e, p): a for e, p, a in zip(s_ids, s_pos, s_acts)}
        assert b.keys() == s.keys() == {(e, p) for e in ids for p in ("last", "mean")}
        for k in b:
            np.testing.assert_allclose(b[k], s[k], atol=2e-5, rtol=1e-4)
        for i, text in enumerate(texts):
            last, mean = reference(lm, text)
            ours_last = _undo_final_norm(lm, layer, torch.from_numpy(b[(ids[i], "last")]))
            ours_mean = torch.from_numpy(b[(ids[i], "mean")])
            torch.testing.assert_close(ours_last, last[layer], atol=2e-5, rtol=1e-4)
            if layer < lm.num_layers or lm.adapter.get_final_norm(lm.model) is None:
                torch.testing.assert_close(ours_mean, mean[layer], atol=2e-5, rtol=1e-4)


def test_tok_positions_cover_every_real_token(tiny_lm: Any) -> None:
    texts = ["abc", "hello there"]
    rows = collect(tiny_lm, ["a", "b"], texts, layers=[2], positions=["tok"], batch_size=2)
    ids, pos, ti, acts = rows[2].arrays()
    n_tokens = [len(tiny_lm.tokenizer(t).input_ids) for t in texts]
    assert ids.count("a") == n_tokens[0] and ids.count("b") == n_tokens[1]
    assert ti[np.array(ids) == "b"].tolist() == list(range(n_tokens[1]))
    assert acts.shape == (sum(n_tokens), tiny_lm.hidden_size)


@pytest.mark.parametrize("dtype,atol", [("float32", 2e-5), ("float16", 2e-2)])
def test_store_holds_reference_vectors(home: Path, small_dataset: Path, tiny_lm: Any, dtype: str,
                                       atol: float) -> None:
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), dtype=dtype, batch_size=5, shard_size=7)
    summary = run_collection(spec, LocalExecutor(), home)
    n_layers = tiny_lm.num_layers + 1
    assert summary["rows"] == 24 * 2 * n_layers
    store = ActivationStore(home)
    rows = [json.loads(line) for line in small_dataset.read_text().splitlines()]
    for layer in range(n_layers):
        for position in ("last", "mean"):
            ids, acts = store.read_layer("tiny:llama", "main", "toy", layer, position)
            assert sorted(ids) == sorted(r["id"] for r in rows)
            got = dict(zip(ids, acts))
            for r in rows[:6]:
                last, mean = reference(tiny_lm, r["text"])
                ref = (last if position == "last" else mean)[layer]
                ours = torch.from_numpy(got[r["id"]].astype(np.float32))
                if position == "last":
                    ours = _undo_final_norm(tiny_lm, layer, ours)
                elif layer == tiny_lm.num_layers:
                    continue  # HF's last mean includes the final norm per token; not comparable
                torch.testing.assert_close(ours, ref, atol=atol, rtol=1e-3)


def _one_row_each(home: Path, n_examples: int, n_layers: int) -> None:
    with duckdb.connect() as con:
        counts = con.execute(
            "SELECT example_id, layer, position, count(*) AS n FROM read_parquet($glob, hive_partitioning=true) "
            "GROUP BY ALL", {"glob": str(home / "activations" / "**" / "*.parquet")}).fetchall()
    assert len(counts) == n_examples * n_layers * 2
    assert {c[3] for c in counts} == {1}


def test_crash_midway_then_resume_gives_exactly_one_row_each(home: Path, small_dataset: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.collect as cj

    real = cj.collect
    calls = {"n": 0}

    def flaky(*a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash in shard 2")
        return real(*a, **kw)

    monkeypatch.setattr(cj, "collect", flaky)
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), batch_size=4, shard_size=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_collection(spec, LocalExecutor(), home)
    done_before = len(ActivationStore(home).manifest())
    assert 0 < done_before < 5 * 5
    monkeypatch.setattr(cj, "collect", real)
    summary = run_collection(spec, LocalExecutor(), home)
    assert summary["skipped_files"] == done_before
    _one_row_each(home, 24, 5)
    again = run_collection(spec, LocalExecutor(), home)
    assert again["written_files"] == 0 and again["skipped_files"] == 25
    _one_row_each(home, 24, 5)


def test_truncated_shard_is_detected_and_redone(home: Path, small_dataset: Path) -> None:
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(1, 2), shard_size=8)
    run_collection(spec, LocalExecutor(), home)
    victim = sorted((home / "activations").rglob("part-00001.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    summary = run_collection(spec, LocalExecutor(), home)
    assert summary["written_files"] == 1
    _one_row_each(home, 24, 2)


def test_duckdb_reads_the_store_directly(home: Path, small_dataset: Path) -> None:
    spec = CollectSpec(model="tiny:llama", dataset=str(small_dataset), layers=(0, 3))
    run_collection(spec, LocalExecutor(), home)
    glob = str(home / "activations" / "**" / "*.parquet")
    with duckdb.connect() as con:
        n = con.execute(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning=true) WHERE layer=3").fetchall()
    assert n == [(24 * 2,)]


def test_mean_pool_leaves_out_the_first_content_token_of_every_row() -> None:
    """One rule for every row (issue 20): the first content token is out whatever its norm
    (the old rule kept row 1's, whose norm was under 4x the median, and so pooled rows of
    one layer differently); a row with one content token keeps it."""
    h = torch.ones(3, 5, 4)                                   # (B, T, D), every norm 2
    h[0, 1] = 30.0                                            # row 0: first content token norm 60 (30x)
    h[1, 1] = 3.0                                             # row 1: 3x: out all the same
    h[2, 4] = 50.0                                            # row 2: one content token: kept
    content = torch.tensor([[0, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    first = torch.tensor([1, 1, 4])
    out = mean_pool(h, content, first)
    torch.testing.assert_close(out[0], torch.ones(4))
    torch.testing.assert_close(out[1], torch.ones(4))
    torch.testing.assert_close(out[2], torch.full((4,), 50.0))
    old = mean_pool(h, content, first, sink_ratio=SINK_RATIO)  # the earlier rule, for the benchmark
    torch.testing.assert_close(old[1], torch.full((4,), 6.0 / 4))


def test_collected_mean_leaves_out_a_sink_first_token(tiny_lm: Any) -> None:
    """A first content token blown up to 100x at layer 2 (as attention sinks are) does not
    enter that layer's mean, batched or not; ``last`` is unaffected."""
    texts = ["abcdef", "uvwxyz", "qrstuv"]                   # same length: no padding, BOS at 0
    ids = ["a", "b", "c"]

    class Sink(Op):
        layers = (2,)

        def __call__(self, h: torch.Tensor, state: Any) -> torch.Tensor:
            h = h.clone()
            h[:, 1] *= 100.0                                  # index 1: first token after BOS
            return h

    with applying(tiny_lm, [Sink()]):
        batched = collect(tiny_lm, ids, texts, layers=[2], positions=["mean"], batch_size=3)
        single = collect(tiny_lm, ids, texts, layers=[2], positions=["mean"], batch_size=1)
    for rows in (batched, single):
        got = dict(zip(rows[2].example_ids, rows[2].acts[0] if len(rows[2].acts) == 1 else
                       np.concatenate(rows[2].acts)))
        for ex, text in zip(ids, texts):
            enc = tiny_lm.tokenizer(text, return_tensors="pt")
            with torch.no_grad():
                h = tiny_lm.model(**enc, output_hidden_states=True).hidden_states[2][0]  # (T, D), no sink
            np.testing.assert_allclose(got[ex], h[2:].mean(0).numpy(), atol=2e-5, rtol=1e-4)
