"""A request is resolved once, at the edge: one ``gnomon fit`` checks its layers once,
resolves the model's source once and loads the dataset once (issue 24 counted 16 layer
checks from 9 places, 7 model resolutions and 3 dataset loads); everything below trusts
the resolved request (``Layers``, ``CollectSpec.model`` with its source, the dataset handed down).
So do ``gnomon report`` (before: 4 resolutions, 2 layer checks, 2 dataset loads) and
``gnomon evaluate`` (before: 7 resolutions, 2 neutral-prompt reads).

Not counted as a layer check: :func:`pipeline.steer.interventions.check_direction`, the
guard every edit runs against the model it is applied to (a library caller needs it; it
checks a direction's layer, not the request's)."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_dataset


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    import traceback

    import pipeline.datasets as D
    import pipeline.models.layers as LY
    import pipeline.models.loading as L

    n: collections.Counter[str] = collections.Counter()
    check, source, load, neutral = LY.check_layers, L.ModelSpec.resolved_source, D.load_dataset, D.neutral_prompts

    def check_layers(*a: Any, **k: Any) -> Any:
        if not any(f.name == "check_direction" for f in traceback.extract_stack()):
            n["check_layers"] += 1
        return check(*a, **k)

    def neutral_prompts(*a: Any, **k: Any) -> Any:
        n["neutral_prompts"] += 1
        return neutral(*a, **k)

    def resolved_source(self: Any, *a: Any, **k: Any) -> Any:
        if not self.source:          # a spec that carries its source is not resolved again
            n["resolve_source"] += 1
        return source(self, *a, **k)

    def load_dataset(*a: Any, **k: Any) -> Any:
        n["load_dataset"] += 1
        return load(*a, **k)

    monkeypatch.setattr(LY, "check_layers", check_layers)
    monkeypatch.setattr(L.ModelSpec, "resolved_source", resolved_source)
    monkeypatch.setattr(D, "load_dataset", load_dataset)
    monkeypatch.setattr(D, "neutral_prompts", neutral_prompts)
    return n


FIT = ["fit", "--positions", "last", "--methods", "mean_diff", "--register", "none"]


@pytest.mark.parametrize("argv,layers,files", [(FIT, "1-2", 2), (FIT, "all", 3), (["collect"], "1-2", 2)])
def test_one_command_checks_layers_resolves_the_model_and_loads_the_dataset_once(
        home: Path, tmp_path: Path, counts: collections.Counter[str], capsys: pytest.CaptureFixture[str],
        argv: list[str], layers: str, files: int) -> None:
    from jobs.cli import main

    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=20)
    rc = main([*argv, "--model", "tiny:llama:2x16", "--dataset", str(data), "--layers", layers,
               "--executor", "local", "--json"])
    out = json.loads(capsys.readouterr().out)
    written = out["collect"]["written_files"] if argv[0] == "fit" else out["written_files"]
    assert rc == 0 and written == files
    assert dict(counts) == {"check_layers": 1, "resolve_source": 1, "load_dataset": 1}


def test_report_resolves_its_request_once(home: Path, counts: collections.Counter[str],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """One model, one concept: the model's source resolved once, its layers checked once
    against its config, the dataset loaded once (for the collection and the analysis) and
    the concept's prompts read once (for the live checks)."""
    from jobs.cli import main

    rc = main(["report", "sentiment", "--model", "tiny:llama:2x16", "--layers", "1-2", "--no-compose", "--no-mlflow",
               "--prompts", "2", "--max-new-tokens", "2", "--strengths=-3,-2,-1,0,1,2,3", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and [e["layer"] for e in doc["results"][0]["layers"]] == [1, 2]
    assert doc["results"][0]["control"] is not None          # the live checks ran on the record's prompts
    assert dict(counts) == {"check_layers": 1, "resolve_source": 1, "load_dataset": 1, "neutral_prompts": 1}


def test_evaluate_resolves_its_request_once(home: Path, counts: collections.Counter[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The checkpoint's source resolved once (the command, the plan, the width check and
    the load all trust it), the direction's layer checked once against the model's config,
    and the concept read once (neutral prompts, words, scorer) for every task."""
    import numpy as np
    import torch

    from jobs.cli import main
    from pipeline.direction import Provenance
    from pipeline.fit import fit_direction

    g = np.random.default_rng(0)
    base = Provenance(model_id="tiny:llama:2x16", revision="main", fingerprint="", hidden_size=16, layer=1,
                      position="last", concept="sentiment", positive="positive", negative="negative")
    d = fit_direction("mean_diff", torch.tensor(g.normal(1, 1, (20, 16)), dtype=torch.float32),
                      torch.tensor(g.normal(0, 1, (20, 16)), dtype=torch.float32), base=base)
    d.save(home / "d.safetensors")
    rc = main(["evaluate", str(home / "d.safetensors"), "--models", "tiny:llama:2x16", "--strengths=-2,0,2",
               "--prompts", "2", "--max-new-tokens", "2", "--no-probe", "--no-monitor", "--executor", "local",
               "--json"])
    out = json.loads(capsys.readouterr().out)
    (c,) = out["checkpoints"]
    assert rc == 0 and c["sweep"] is not None and "logodds_slope" in c["metrics"]   # scorer and words both used
    assert dict(counts) == {"check_layers": 1, "resolve_source": 1, "neutral_prompts": 1}


def test_resolved_layers_are_trusted_only_for_the_same_depth() -> None:
    import pickle

    from pipeline.models.layers import Layers, check_layers, ensure_layers
    from pipeline.types import GnomonError

    got = check_layers(None, 4, "m")
    assert got == (0, 1, 2, 3, 4) and isinstance(got, Layers) and got.num_layers == 4
    assert ensure_layers(got, 4, "m") is got                       # trusted, not re-checked
    with pytest.raises(GnomonError, match="valid layers are 0..2"):
        ensure_layers(got, 2, "other")                              # another model's depth: checked
    back = pickle.loads(pickle.dumps(got))                          # travels to Ray workers intact
    assert back == got and back.num_layers == 4


def test_a_resolved_spec_is_the_same_cached_model_and_pool(home: Path) -> None:
    """Carrying the resolved source must not make a second identity: the model cache and
    the worker pools key a spec the same whether or not its source was resolved."""
    from jobs.stages.shards import model_pool
    from pipeline.models import ModelSpec, cached_model, clear_model_cache

    plain = ModelSpec(id="tiny:llama:2x16")
    resolved = plain.resolved(home)
    assert resolved.source == "tiny" and plain.source is None
    clear_model_cache()
    try:
        assert cached_model(plain, home) is cached_model(resolved, home)
    finally:
        clear_model_cache()
    assert model_pool(plain, str(home))[0] == model_pool(resolved, str(home))[0]


def test_a_collect_spec_states_its_model_once(home: Path) -> None:
    """``CollectSpec.model`` is the one statement of the model: a plain id becomes a
    ``ModelSpec``, the loose command-line fields go into it, and the cache answers for the
    resolved and the unresolved spec alike (``is_cached`` once keyed them apart)."""
    from jobs.stages.collect_job import CollectSpec
    from pipeline.models import ModelSpec, cached_model, clear_model_cache
    from pipeline.models.cache import is_cached

    plain: Any = "tiny:llama:2x16"   # a plain id is coerced (the field's type is ModelSpec)
    assert CollectSpec(plain, "d").model == ModelSpec(id="tiny:llama:2x16")
    spec = CollectSpec.of("tiny:llama:2x16", "d", revision="v2", model_dtype="float32", seed=3, layers=(1,))
    assert spec.model == ModelSpec(id="tiny:llama:2x16", revision="v2", dtype="float32", seed=3)
    assert spec.layers == (1,) and not hasattr(spec, "revision") and not hasattr(spec, "resolved_model")
    clear_model_cache()
    try:
        cached_model(spec.model, home)
        assert is_cached(spec.model, home) and is_cached(spec.model.resolved(home), home)
        assert not is_cached(ModelSpec(id="tiny:llama:2x16", seed=4), home)
    finally:
        clear_model_cache()


def test_drift_resolves_each_version_once(catalog_home: Path, counts: collections.Counter[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``gnomon drift`` over a base and two 3-checkpoint series: each of the 7 versions is
    resolved once (before: 15, the base's collection and every load resolving again), the
    concept's record (labels, prompts, scorer) read once, its dataset loaded once (by the
    base's collection). Its layer is checked per version as each one reads it (other models)."""
    import pipeline.models.loading as L
    from jobs.stages.drift_job import DriftSpec, run_drift
    from jobs.runtime.engine import LocalExecutor
    from tests.test_fleet_drift import _ft_fleet

    _ft_fleet(catalog_home)
    counts.clear()
    ids: collections.Counter[str] = collections.Counter()
    counting = L.ModelSpec.resolved_source

    def by_id(self: Any, *a: Any, **k: Any) -> Any:
        ids[self.id] += not self.source
        return counting(self, *a, **k)

    monkeypatch.setattr(L.ModelSpec, "resolved_source", by_id)
    out = run_drift(DriftSpec("sentiment", "ft", layer=1, n_prompts=4, max_new_tokens=4, screen_samples=40,
                              n_boot=100, log=False), LocalExecutor(), catalog_home, log=lambda m: None)
    assert out["layer"] == 1 and out["behaviour_score"] == "vader" and len(out["drift"]["series"]) == 2
    assert set(ids.values()) == {1} and len(ids) == 7 and counts["resolve_source"] == 7
    assert counts["neutral_prompts"] == 1 and counts["load_dataset"] == 1
