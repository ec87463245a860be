"""``gnomon condition fit`` and ``gnomon steer --when`` on a tiny model and a real catalog: the
threshold is chosen on validation prompts and registered with its provenance, and the rule
steers condition-positive prompts exactly as the unconditional steer does and leaves the
negative ones alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.steer import add, generate


def _dataset(path: Path) -> tuple[Path, list[str], list[str]]:
    rng = np.random.default_rng(1)
    letters = list("abcdefghij")
    rows, texts = [], {"yes": [], "no": []}
    for i in range(40):
        split = "train" if i < 24 else "val" if i < 32 else "test"
        stem = "".join(rng.choice(letters, 6))
        for lab, end in (("yes", " yes"), ("no", " no!")):
            rows.append({"id": f"{lab}{i}", "text": stem + end, "label": lab, "pair": f"p{i}", "split": split})
            texts[lab].append(stem + end)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, texts["yes"], texts["no"]


def _register(catalog_home: Path, lm, data: Path, yes: list[str], no: list[str]) -> None:
    from catalog import Catalog
    from pipeline.collect import collect
    from pipeline.datasets import load_dataset

    ds = load_dataset(data)
    train_yes, train_no = yes[:24], no[:24]
    rows = collect(lm, [str(i) for i in range(48)], train_yes + train_no, layers=[1], positions=["last"])[1]
    got, _p, _t, acts = rows.arrays()
    x = acts[np.argsort([int(i) for i in got])].astype(np.float64)
    prov = Provenance(model_id=lm.model_id, revision="main", fingerprint=lm.fingerprint, hidden_size=lm.hidden_size,
                      layer=1, concept="yesno", positive="yes", negative="no", method="mean_diff",
                      dataset=ds.name, dataset_hash=ds.content_hash)
    v = torch.as_tensor(x[:24].mean(0) - x[24:].mean(0), dtype=torch.float32)
    d = Direction(vector=v, provenance=prov, pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=4.0)
    Catalog(home=catalog_home).register(d, set_best=False)


def test_condition_fit_registers_a_rule_and_steer_when_applies_it(catalog_home, tmp_path, capsys, tiny_lm):
    from catalog import Catalog
    from jobs.cli import main

    lm = tiny_lm
    data, yes, no = _dataset(tmp_path / "yesno.jsonl")
    _register(catalog_home, lm, data, yes, no)
    assert main(["condition", "fit", "yesno/1", "--dataset", str(data), "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["n_pos"] == 8 and fit["n_neg"] == 8 and fit["split"] == "val"
    assert fit["f1"] == 1.0 and fit["comparison"] == ">"
    tags = Catalog(home=catalog_home).resolve("yesno/1").tags
    assert float(tags["condition.threshold"]) == pytest.approx(fit["threshold"])
    assert tags["condition.fingerprint"] == lm.fingerprint and tags["condition.dataset_hash"]
    assert tags["condition.evidence_run"] == fit["evidence_run"]

    behaviour = tmp_path / "b.safetensors"
    g = torch.Generator().manual_seed(5)
    bdir = Direction(vector=torch.randn(lm.hidden_size, generator=g),
                     provenance=Provenance.minimal(lm.hidden_size, layer=2, model_id=lm.model_id,
                                                   fingerprint=lm.fingerprint, concept="b"),
                     pos_mean=1.5, neg_mean=-0.5, spread=0.7, resid_norm=4.0)
    bdir.save(behaviour)
    base = ["steer", str(behaviour), "--when", "yesno/1", "--strength", "3", "--no-fluency-check",
            "--max-new-tokens", "6", "--json"]
    steered_ref = add(lm, bdir, 3.0)
    for prompt, should in ((yes[-1], True), (no[-1], False), (yes[-2], True), (no[-2], False)):
        assert main([*base, prompt]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["condition"]["fired"] is should
        plain, steered = generate(lm, [prompt], 6)[0], generate(lm, [prompt], 6, interventions=[steered_ref])[0]
        assert plain != steered
        assert out["steered"] == (steered if should else plain)
        assert out["unsteered"] == plain

    # a direction with no fitted rule, and a file, are refused with what to do
    Catalog(home=catalog_home).register(Direction.load(behaviour).__class__(
        vector=bdir.vector, provenance=Provenance.minimal(lm.hidden_size, layer=2, model_id=lm.model_id,
                                                          fingerprint=lm.fingerprint, concept="plain"),
        pos_mean=1.0, neg_mean=-1.0, spread=1.0, resid_norm=4.0), set_best=False)
    assert main([*base[:3], "plain/1", *base[4:], "hi"]) == 2
    assert "gnomon condition fit plain/1" in capsys.readouterr().err
    assert main(["condition", "fit", str(behaviour)]) == 2
    assert "give a catalog REF" in capsys.readouterr().err
