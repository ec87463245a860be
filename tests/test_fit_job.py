"""The fitting job on a tiny model: sweep, best layer by validation, executors agree, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from jobs.runtime.engine import LocalExecutor
from jobs.runtime.ray_executor import RayExecutor
from jobs.stages.fit_job import FitSpec, run_fit, sweep_curves
from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError
from tests.conftest import write_dataset

FAST = ("mean_diff", "lda", "leace")


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """40 pairs: enough for hash-assigned train/val/test splits to all be non-empty."""
    return write_dataset(tmp_path / "toy.jsonl", n_pairs=40)


def test_sweep_picks_the_best_validation_layer_not_test() -> None:
    def d(layer: int, val: float, test: float) -> Direction:
        return Direction(torch.ones(4), Provenance.minimal(hidden_size=4, layer=layer, method="m", position="last"),
                         metrics={"val_auroc": val, "test_auroc": test})

    ds = [d(0, 0.99, 0.99), d(1, 0.9, 0.7), d(2, 0.9, 0.8), d(3, 0.9, 0.9), d(4, float("nan"), 1.0)]
    s = sweep_curves(ds, "val_auroc", num_layers=4)[("m", "last")]
    # layer 0 (embeddings) never wins; ties on val go to mid-depth; test and NaN ignored
    assert s["best"].layer == 2 and s["eligible"]
    assert s["curve"]["layer"] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert s["curve"]["val_auroc"][:3] == [0.99, 0.9, 0.9]


def test_sweep_at_chance_is_marked_ineligible() -> None:
    ds = [Direction(torch.ones(4), Provenance.minimal(hidden_size=4, layer=layer, method="m", position="last"),
                    metrics={"val_auroc": 0.55}) for layer in (1, 2, 3)]
    assert not sweep_curves(ds, "val_auroc", num_layers=3)[("m", "last")]["eligible"]


def test_fit_job_local_end_to_end(home: Path, toy: Path) -> None:
    spec = FitSpec(model="tiny:llama", dataset=str(toy), positive="pos", negative="neg",
                   methods=FAST, positions=("last", "mean"), register="none")
    out = run_fit(spec, LocalExecutor(), home)
    assert out["concept"] == "toy" and out["groups"] == 3 * 2 * 5
    assert out["collect"]["written_files"] == 5  # collected first: 80 rows, one shard x 5 layers
    assert {(b["method"], b["position"]) for b in out["best"]} == {(m, p) for m in FAST for p in ("last", "mean")}
    sweep = json.loads(Path(out["sweep"]).read_text())
    for key, entry in sweep.items():
        curve = entry["curve"]
        assert entry["select_metric"] == "val_auroc"
        vals = [v if v == v and layer >= 1 else -1 for v, layer in zip(curve["val_auroc"], curve["layer"])]
        assert entry["best_layer"] >= 1  # never the embedding output
        if entry["eligible"]:  # within the tie tolerance of the best non-embedding layer
            assert vals[curve["layer"].index(entry["best_layer"])] >= max(vals) - 0.011
    again = run_fit(spec, LocalExecutor(), home)  # activations are reused, not recollected
    assert again["collect"]["written_files"] == 0 and again["collect"]["skipped_files"] == 5


def test_ray_fan_out_gives_the_same_directions(ray_instance: Any, home: Path, toy: Path, tmp_path: Path,
                                               tiny_models: Any) -> None:
    """Separate homes, so the Ray run collects and fits its own store (nothing is reused)."""
    import torch

    from jobs.stages.fit_tasks import GroupTask, fit_layer
    from pipeline.datasets import load_dataset

    spec = FitSpec(model="tiny:gpt2", dataset=str(toy), positive="pos", negative="neg",
                   methods=("mean_diff", "pca"), layers=(1, 2, 3), positions=("mean",), register="none")
    ray_home = tmp_path / "ray-home"
    local = run_fit(spec, LocalExecutor(), home)
    remote = run_fit(spec, RayExecutor(num_workers=2), ray_home)
    assert remote["executor"] == "ray" and remote["collect"]["written_files"] > 0
    assert len(local["best"]) == 2
    for a, b in zip(local["best"], remote["best"], strict=True):
        assert a == b
    lm, ds = tiny_models("tiny:gpt2"), load_dataset(str(toy))
    vectors = []
    for h, ex in ((home, LocalExecutor()), (ray_home, RayExecutor(num_workers=2))):
        tasks = [GroupTask(home=str(h), model=spec.model, revision="main", dataset=ds.name, concept=ds.name,
                           positive="pos", negative="neg", layer=layer, position="mean", methods=spec.methods,
                           params={}, fingerprint=lm.fingerprint, hidden_size=lm.hidden_size,
                           dataset_hash=ds.content_hash) for layer in spec.layers or ()]
        vectors.append([d.vector for r in ex.map(fit_layer, tasks) for d in r.directions])
    assert len(vectors[0]) == 6
    for a, b in zip(*vectors, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_registers_best_directions_in_the_catalog(catalog_home: Path, toy: Path) -> None:
    from catalog import Catalog

    cat = Catalog(home=catalog_home)
    spec = FitSpec(model="tiny:llama", dataset=str(toy), positive="pos", negative="neg",
                   methods=("mean_diff", "logistic"), layers=(1, 2, 4), positions=("last",))
    out = run_fit(spec, LocalExecutor(), catalog_home, catalog=cat)
    assert out["registered"] == 2
    best = {b["method"]: b for b in out["best"]}
    d = cat.load(best["logistic"]["ref"])
    assert d.layer == best["logistic"]["layer"] and d.provenance.method == "logistic"
    assert d.provenance.concept == "toy" and d.provenance.model_id == "tiny:llama"
    assert d.provenance.fingerprint  # provenance carries the model fingerprint
    assert cat.resolve("toy@best").ref in {b["ref"] for b in out["best"]}


def test_one_class_contrast_and_bad_requests_fail_clearly(home: Path, tmp_path: Path, toy: Path) -> None:
    one = write_dataset(tmp_path / "one.jsonl", labels=("pos", "pos2"))
    with pytest.raises(GnomonError, match="neg"):
        run_fit(FitSpec(model="tiny:llama", dataset=str(one), positive="pos", negative="neg",
                        register="none"), LocalExecutor(), home)
    with pytest.raises(GnomonError, match="unknown method 'svm'"):
        run_fit(FitSpec(model="tiny:llama", dataset=str(toy), methods=("svm",), register="none"),
                LocalExecutor(), home)
    with pytest.raises(GnomonError, match="layer 7 is out of range"):
        run_fit(FitSpec(model="tiny:llama", dataset=str(toy), layers=(7,), register="none"),
                LocalExecutor(), home)


def test_layer_not_in_store_is_named(home: Path, toy: Path) -> None:
    from jobs.stages.collect_job import CollectSpec, run_collection
    from jobs.stages.fit_tasks import GroupTask, fit_layer

    run_collection(CollectSpec(model="tiny:llama", dataset=str(toy), layers=(1, 2)), LocalExecutor(), home)
    task = GroupTask(home=str(home), model="tiny:llama", revision="main", dataset="toy", concept="toy",
                     positive="pos", negative="neg", layer=3, position="last", methods=("mean_diff",), params={},
                     fingerprint="x", hidden_size=32, dataset_hash="h")
    with pytest.raises(GnomonError, match=r"layer 3.*stored layers: \[1, 2\]"):
        fit_layer(task)
