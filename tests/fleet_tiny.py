"""Tiny fleets for the fleet-analysis tests: tiny:llama models saved with save_pretrained
and registered with a lineage, independent of the real fleet builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.fleet.registry import (
    Fleet,
    FleetMember,
    Lineage,
    register_version,
    save_fleet,
)
from pipeline.models.loading import fingerprint_model
from pipeline.models.tiny import tiny_model


def add_version(home: Path, vid: str, model: Any, tok: Any, kind: str, parent: str | None = None,
                series: str | None = None, step: int | None = None, settings: dict | None = None,
                data_sha256: str | None = None) -> None:
    staged = home / "models" / ".staging" / vid
    staged.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staged)
    tok.save_pretrained(staged)
    lin = Lineage(id=vid, kind=kind, fingerprint=fingerprint_model(model), parent=parent, series=series, step=step,
                  data_sha256=data_sha256, settings=settings or {}, family=model.config.model_type, hidden_size=model.config.hidden_size,
                  num_layers=model.config.num_hidden_layers)
    register_version(staged, lin, home)


def perturbed(model_id: str, scale: float, seed: int, base_seed: int = 0) -> tuple[Any, Any]:
    """The tiny model of ``base_seed`` with seeded Gaussian noise of ``scale`` added to every weight."""
    model, tok = tiny_model(model_id, seed=base_seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-3))
    return model, tok


def build_tiny_fleet(home: Path, name: str = "tiny", scratch: bool = False, bert: bool = False) -> Fleet:
    """base + an identical copy + a perturbed version (width 32, 2 blocks); optionally a
    3-checkpoint scratch series (other seeds) and a width-24 BERT."""
    spec = "tiny:llama:2x32"
    model, tok = tiny_model(spec, seed=0)
    add_version(home, "t-base", model, tok, "base")
    add_version(home, "t-copy", model, tok, "numeric", parent="t-base", settings={"dtype": "float32"})
    m2, _ = perturbed(spec, 0.05, seed=1)
    add_version(home, "t-edit", m2, tok, "edited", parent="t-base")
    members = [FleetMember("t-base", kind="base"), FleetMember("t-copy", kind="numeric"),
               FleetMember("t-edit", kind="edited")]
    if scratch:
        prev = None
        for i, step in enumerate((1, 10, 100)):
            ms, ts = tiny_model("tiny:llama:2x24", seed=10 + i)
            add_version(home, f"t-scratch-s{step:05d}", ms, ts, "scratch", parent=prev, series="scratch", step=step)
            prev = f"t-scratch-s{step:05d}"
            members.append(FleetMember(prev, series="scratch", step=step, kind="scratch"))
    if bert:
        mb, tb = tiny_model("tiny:bert:2x16", seed=3)
        add_version(home, "t-bert", mb, tb, "import")
        members.append(FleetMember("t-bert", kind="import"))
    fleet = Fleet(name=name, members=tuple(members))
    save_fleet(fleet, home)
    return fleet


def register_small_sentiment(home: Path, n_pairs: int = 40, name: str = "senti") -> str:
    """The first ``n_pairs`` pairs of the shipped sentiment set registered as concept
    ``name`` (with the shipped neutral prompts), so tiny-fleet tests collect 2*n rows, not 480."""
    import json

    from pipeline.concepts import DATA_DIR
    from pipeline.datasets import register_dataset

    rows = [json.loads(line) for line in (DATA_DIR / "sentiment.jsonl").read_text().splitlines() if line.strip()]
    pairs = sorted({r["pair"] for r in rows})[:n_pairs]
    keep = [r for r in rows if r["pair"] in set(pairs)]
    src = home / f"{name}.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in keep))
    register_dataset(src, name, home)
    (home / "concepts" / f"{name}_neutral.txt").write_text((DATA_DIR / "sentiment_neutral.txt").read_text())
    return name
