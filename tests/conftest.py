"""Shared fixtures: a gnomon home per test, tiny models, one Ray instance per session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh gnomon home, also exported as GNOMON_HOME."""
    h = tmp_path / "gnomon-home"
    h.mkdir()
    monkeypatch.setenv("GNOMON_HOME", str(h))
    return h


@pytest.fixture(scope="session")
def tiny_models() -> Callable[[str], Any]:
    """Cache of ``load_model("tiny:...")`` results (random seeded weights, char tokenizer)."""
    from pipeline.models import load_model

    cache: dict[str, Any] = {}

    def get(model_id: str = "tiny:llama") -> Any:
        if model_id not in cache:
            cache[model_id] = load_model(model_id)
        return cache[model_id]

    return get


@pytest.fixture
def tiny_lm(tiny_models: Callable[[str], Any]) -> Any:
    return tiny_models("tiny:llama")


def write_dataset(path: Path, n_pairs: int = 12, labels: tuple[str, str] = ("pos", "neg")) -> Path:
    """A small paired dataset of varied-length sentences, as JSONL."""
    words = ["good", "bad", "sunny", "rainy", "bright", "dark", "warm", "cold", "the day", "a film"]
    rows = []
    for i in range(n_pairs):
        stem = " ".join(words[(i + k) % len(words)] for k in range(1 + i % 5))
        for lab in labels:
            rows.append({"id": f"{lab}-{i}", "text": f"{stem} is {lab} number {i}", "label": lab, "pair": f"p{i}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "toy.jsonl")


@pytest.fixture(scope="session")
def ray_instance() -> Iterator[Any]:
    """One real local Ray instance for the whole test session (starting one costs ~3 s)."""
    from jobs.runtime.ray_runtime import ensure_ray

    ray = ensure_ray(num_cpus=2, object_store_memory=256 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated MLflow SQLite database per session (migrations cost ~5 s); copy it."""
    from catalog import Catalog

    h = tmp_path_factory.mktemp("mlflow-template")
    Catalog(home=h).concepts()
    return h / "mlflow.db"


@pytest.fixture
def catalog_home(home: Path, mlflow_template: Path) -> Path:
    """``home`` with a ready MLflow SQLite catalog in it."""
    import shutil

    shutil.copyfile(mlflow_template, home / "mlflow.db")
    return home
