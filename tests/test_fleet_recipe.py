"""The fine-tune recipe of issue 22: openings masked out of the loss, several seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.fleet.corpora import corpus_from_texts, diary_openings, shipped_corpus
from pipeline.fleet.train import TrainConfig, lm_batch, train_until
from pipeline.models.tiny import tiny_model
from pipeline.types import GnomonError


def test_openings_carry_no_loss() -> None:
    _, tok = tiny_model("tiny:llama:2x32")
    c = shipped_corpus("negative", 4)
    assert c.prefix_chars == tuple(len(o) for o in diary_openings(4))
    full = lm_batch(tok, c.texts, 160, "cpu")
    masked = lm_batch(tok, c.texts, 160, "cpu", prefix_chars=c.prefix_chars)
    assert torch.equal(full["input_ids"], masked["input_ids"])
    for i, (t, k) in enumerate(zip(c.texts, c.prefix_chars)):
        kept = masked["labels"][i][masked["labels"][i] != -100]
        # What is left to learn is the text after the opening, token for token.
        assert tok.decode(kept).strip() == t[k:].strip()
        n_open = int(((full["labels"][i] != -100) & (masked["labels"][i] == -100)).sum())
        assert n_open >= len(tok(t[:k], add_special_tokens=False)["input_ids"])


def test_masking_needs_openings() -> None:
    """A continuation-only loss without opening lengths, or lengths that do not fit the
    texts, is one clear line, not a silent full-text loss."""
    model, tok = tiny_model("tiny:llama:2x32")
    named = list(model.named_parameters())
    cfg = TrainConfig(lr=1e-3, batch_size=2, max_length=64, loss_on="continuation")
    with pytest.raises(GnomonError, match="prefix_chars"):
        next(train_until(model, tok, ["a b"], named, cfg, 0, [1]))
    bad = pytest.raises(GnomonError, match="opening length")
    with bad:
        corpus_from_texts("x", ["abc"], "test", [4])


def test_seeds_plan_and_group(home: Path) -> None:
    from jobs.stages.drift_job import series_group
    from jobs.stages.fleet_job import build_fleet, plan_for, planned_ids

    plan = plan_for(tiny=True, seeds=(0, 1), finetune={"steps": 2, "every": 2, "batch_size": 2, "max_length": 48,
                                                       "train_blocks": 1, "n_texts": 6})
    ids = planned_ids(plan, home)
    assert "tiny-ftneg-s0002" in ids and "tiny-ftneg-seed1-s0002" in ids and "tiny-ftctl-seed1-s0002" in ids
    assert series_group("ft-negative-seed1") == ("ft-negative", 1) and series_group("ft-negative") == ("ft-negative", None)
    build_fleet(plan, home, only=("base", "ft-negative"), log=lambda _s: None)
    from pipeline.fleet.registry import read_lineage

    a, b = read_lineage("tiny-ftneg-s0002", home), read_lineage("tiny-ftneg-seed1-s0002", home)
    assert (a.series, b.series) == ("ft-negative", "ft-negative-seed1")
    assert a.settings["seed"] == 0 and b.settings["seed"] == 1 and a.settings["loss_on"] == "continuation"
    assert a.fingerprint != b.fingerprint and a.data_sha256 != b.data_sha256
    with pytest.raises(GnomonError, match="distinct"):
        build_fleet(plan_for(tiny=True, seeds=(1, 1)), home, only=("base",), log=lambda _s: None)
