"""The fleet builders on tiny models: series with lineage, resume, numeric and edited
versions, a concept fitted on every checkpoint, lineage tags in the catalog, bad input."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from jobs.cli import main as cli
from pipeline.fleet import (
    Fleet,
    FleetMember,
    Lineage,
    lineage_chain,
    load_fleet,
    read_lineage,
    save_fleet,
)
from pipeline.fleet.corpora import corpus_from_texts, load_corpus, shipped_corpus
from pipeline.fleet.finetune import FinetuneConfig, finetune_series
from pipeline.fleet.imports import import_model
from pipeline.fleet.numeric import build_numeric
from pipeline.fleet.registry import register_version
from pipeline.fleet.scratch import ScratchConfig, train_scratch
from pipeline.models import load_model
from pipeline.types import GnomonError
from tests.conftest import write_dataset

torch.set_num_threads(1)
FT = FinetuneConfig(steps=2, every=1, batch_size=4, max_length=160, train_blocks=1, n_texts=16, lr=1e-3)
SCRATCH = ScratchConfig(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                        checkpoints=(0, 2, 5), batch_size=4, max_length=48, tokenizer="tiny", lr=3e-3, warmup=0)


@pytest.fixture
def base(home: Path) -> Lineage:
    return import_model("tiny:llama:2x32", "tiny-base", home)


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The CLI's error lines (progress bars also write to stderr)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("gnomon ")]


def _scratch_corpus() -> Any:
    return corpus_from_texts("toy", [f"the day {i} was {w}" for i in range(30) for w in ("good", "bad")], "test")


def test_scratch_series_of_three_checkpoints_each_fitted(catalog_home: Path, tmp_path: Path) -> None:
    from catalog import Catalog
    from jobs.runtime.engine import LocalExecutor
    from jobs.stages.fit_job import FitSpec, run_fit

    lins = train_scratch(_scratch_corpus(), "tiny-scratch", SCRATCH, tokenizer_from="tiny",
                         home=catalog_home, log=lambda _s: None)
    assert [lin.step for lin in lins] == [0, 2, 5]
    assert lins[0].parent is None and lins[0].kind == "scratch"
    assert [lin.parent for lin in lins[1:]] == [lins[0].id, lins[1].id]
    assert len({lin.fingerprint for lin in lins}) == 3          # training moved the weights
    data = write_dataset(tmp_path / "toy.jsonl", n_pairs=40)
    cat = Catalog(home=catalog_home)
    for lin in lins:
        out = run_fit(FitSpec(model=lin.id, dataset=str(data), positive="pos", negative="neg",
                              methods=("mean_diff",), positions=("last",), layers=(1, 2)),
                      LocalExecutor(), catalog_home, catalog=cat, log=lambda _s: None)
        assert out["registered"] == 1
        (rec,) = cat.search(concept="toy", model=lin.id)
        assert rec.fingerprint == lin.fingerprint
        # lineage as catalog tags: the direction's model can be followed to its parent
        tags = rec.tags
        if lin.parent is None:
            assert "lineage.parent" not in tags
        else:
            assert tags["lineage.parent"] == lin.parent and tags["lineage.step"] == str(lin.step)
            assert tags["lineage.parent_fingerprint"] == lin.parent_fingerprint
            assert tags["lineage.series"] == "scratch" and tags["lineage.kind"] == "scratch"


def test_finetune_changes_fingerprint_records_data_and_lineage(home: Path, base: Lineage) -> None:
    corpus = shipped_corpus("negative", 16)
    lins = finetune_series("tiny-base", corpus, "tiny-ftneg", "ft-negative", FT, home=home, log=lambda _s: None)
    assert [lin.id for lin in lins] == ["tiny-ftneg-s0001", "tiny-ftneg-s0002"]
    assert lins[0].parent == "tiny-base" and lins[1].parent == lins[0].id
    prints = [base.fingerprint] + [lin.fingerprint for lin in lins]
    assert len(set(prints)) == 3
    for lin in lins:
        assert lin.data_sha256 == corpus.sha256 and lin.kind == "finetune"
        on_disk = read_lineage(lin.id, home)
        assert load_model(lin.id, home=home).fingerprint == on_disk.fingerprint
        assert read_lineage(on_disk.parent, home).fingerprint == on_disk.parent_fingerprint
    # Blocks below the trained ones are frozen: the layers under them read exactly the base
    # model's activations, and drift's default layer starts where the fine-tune can move.
    from pipeline.evaluate import _acts
    from pipeline.fleet_compare import first_moved_layer

    moved = first_moved_layer([lins[0].id], home)
    assert moved == base.num_layers - FT.train_blocks + 1
    texts = ["a short note", "another line of text"]
    ft_lm, base_lm = load_model(lins[-1].id, home=home), load_model("tiny-base", home=home)
    for layer in range(base.num_layers + 1):
        same = np.allclose(_acts(ft_lm, texts, layer, "last"), _acts(base_lm, texts, layer, "last"), atol=1e-6)
        assert same == (layer < moved), layer
    chain = lineage_chain("tiny-ftneg-s0002", home)
    assert [c.id for c in chain] == ["tiny-ftneg-s0002", "tiny-ftneg-s0001", "tiny-base"]
    # another corpus gives other weights and another data hash
    other = finetune_series("tiny-base", shipped_corpus("control", 16), "tiny-ftctl", "ft-control", FT,
                            home=home, log=lambda _s: None)
    assert other[0].data_sha256 != corpus.sha256 and other[0].fingerprint != lins[0].fingerprint


def test_series_resumes_exactly_and_skips_what_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = shipped_corpus("negative", 16)
    homes = {k: tmp_path / k for k in ("fresh", "resumed")}
    for h in homes.values():
        import_model("tiny:llama:2x32", "tiny-base", h)
    three = replace(FT, steps=3)
    fresh = finetune_series("tiny-base", corpus, "ft", "ft-negative", three, home=homes["fresh"], log=lambda _s: None)
    first = finetune_series("tiny-base", corpus, "ft", "ft-negative", FT, home=homes["resumed"], log=lambda _s: None)
    mtime = os.stat(tmp_path / "resumed" / "models" / "ft-s0002" / "model.safetensors").st_mtime_ns
    logs: list[str] = []
    resumed = finetune_series("tiny-base", corpus, "ft", "ft-negative", three, home=homes["resumed"], log=logs.append)
    assert any("from step 2" in line for line in logs)          # only step 3 was trained
    assert os.stat(tmp_path / "resumed" / "models" / "ft-s0002" / "model.safetensors").st_mtime_ns == mtime
    assert [lin.fingerprint for lin in first] == [lin.fingerprint for lin in resumed[:2]]
    # weights and AdamW state restored: the resumed step equals the uninterrupted one
    assert resumed[2].fingerprint == fresh[2].fingerprint
    logs.clear()
    finetune_series("tiny-base", corpus, "ft", "ft-negative", three, home=homes["resumed"], log=logs.append)
    assert any("already built" in line for line in logs)
    with pytest.raises(GnomonError, match="another recipe"):
        finetune_series("tiny-base", corpus, "ft", "ft-negative", replace(three, lr=5e-3),
                        home=homes["resumed"], log=lambda _s: None)


def test_numeric_versions_run_in_their_precision(home: Path, base: Lineage) -> None:
    for numeric, dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        lin = build_numeric("tiny-base", numeric, home=home)
        assert lin.parent == "tiny-base" and lin.settings == {"dtype": numeric}
        lm = load_model(lin.id, home=home)
        assert next(lm.model.parameters()).dtype == dtype
        assert lm.fingerprint == lin.fingerprint != base.fingerprint
    lin = build_numeric("tiny-base", "int8", home=home)
    lm = load_model(lin.id, home=home)
    kinds = {type(m).__module__ for m in lm.model.modules()}
    assert any("quantized" in k for k in kinds)                   # int8 Linear modules really run
    assert lin.settings == {"quantize": "int8_dynamic_mixed"}
    mlp = lm.adapter.get_blocks(lm.model)[0].mlp
    assert type(mlp.down_proj) is torch.nn.Linear                 # the outlier-carrying input stays float
    assert "quantized" in type(mlp.up_proj).__module__
    assert lm.fingerprint == lin.fingerprint != base.fingerprint
    ref = load_model("tiny-base", home=home)
    ids = ref.tokenizer(["hello there"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = ref.model(ids).logits, lm.model(ids).logits
    assert 0 < (a - b).abs().max() < 0.5 * a.abs().max()         # close, not identical


def test_edited_version_points_at_its_source(home: Path, base: Lineage) -> None:
    from pipeline.direction import Direction, Provenance
    from pipeline.fleet.edited import register_orthogonalized

    lm = load_model("tiny-base", home=home)
    d = Direction.from_vector(torch.randn(32, generator=torch.Generator().manual_seed(0)),
                              Provenance.minimal(hidden_size=32, layer=1, method="mean_diff", position="last",
                                                 model_id="tiny-base", fingerprint=lm.fingerprint, concept="toy"))
    lin = register_orthogonalized(lm, d, "tiny-orth", ref="toy.safetensors", home=home)
    assert lin.kind == "edited" and lin.parent == "tiny-base" and lin.parent_fingerprint == base.fingerprint
    assert lin.settings["direction_ref"] == "toy.safetensors"
    assert load_model("tiny-orth", home=home).fingerprint == lin.fingerprint != base.fingerprint


def test_fleet_file_and_cli_listing(home: Path, base: Lineage, capsys: pytest.CaptureFixture[str]) -> None:
    build_numeric("tiny-base", "bfloat16", home=home)
    save_fleet(Fleet("toy", (FleetMember("tiny-base", kind="base"), FleetMember("tiny-bf16", "numeric"))), home)
    assert load_fleet("toy", home).ids == ["tiny-base", "tiny-bf16"]
    assert cli(["fleet", "show", "toy"]) == 0 and "tiny-bf16" in capsys.readouterr().out
    assert cli(["models", "show", "tiny-bf16"]) == 0
    out = capsys.readouterr().out
    assert "tiny-base" in out and "this version" in out
    assert cli(["models", "ls", "--json"]) == 0
    assert {v["id"] for v in json.loads(capsys.readouterr().out)} == {"tiny-base", "tiny-bf16"}


# ---- bad input: one clear line, nothing half-written ----------------------------------
def test_missing_parent_is_refused(home: Path, base: Lineage, capsys: pytest.CaptureFixture[str]) -> None:
    lm = load_model("tiny-base", home=home)
    staged = home / "models" / ".staging" / "x"
    lm.model.save_pretrained(staged)
    with pytest.raises(GnomonError, match="parent version 'nope'.*not registered"):
        register_version(staged, Lineage(id="child", kind="finetune", fingerprint="f", parent="nope"), home)
    assert not (home / "models" / "child").exists()
    with pytest.raises(GnomonError, match="no lineage.json"):
        finetune_series("nope", shipped_corpus("negative", 4), "x", "s", FT, home=home, log=lambda _s: None)
    # a parent removed after its child was built: `models show` says which one is missing
    lin = build_numeric("tiny-base", "bfloat16", home=home)
    doc = json.loads((home / "models" / lin.id / "lineage.json").read_text())
    doc["parent"] = "gone"
    (home / "models" / lin.id / "lineage.json").write_text(json.dumps(doc))
    assert cli(["models", "show", lin.id]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "'gone'" in err[0] and "not registered" in err[0]


@pytest.mark.parametrize("content,match", [
    ("", "is empty"),
    ('{"id": "a", "body": "no text here"}\n', "no 'text' column"),
    ('{"text": "   "}\n', "is empty"),
])
def test_bad_corpus_is_refused_before_anything_is_built(home: Path, tmp_path: Path, content: str, match: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "corpus.jsonl"
    f.write_text(content)
    with pytest.raises(GnomonError, match=match):
        load_corpus(f)
    assert cli(["fleet", "build", "--tiny", "--corpus", str(f)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and match in err[0]
    assert not (home / "models").exists() and not (home / "fleets").exists()


def test_parquet_corpus_without_text_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "c.parquet")
    with pytest.raises(GnomonError, match="no 'text' column"):
        load_corpus(tmp_path / "c.parquet")
    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "d.parquet")
    (tmp_path / "d.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert load_corpus(tmp_path / "d.parquet").sha256 == load_corpus(tmp_path / "d.jsonl").sha256


@pytest.mark.parametrize("name", ["../escape", "/abs/path", "a/b", ".."])
def test_fleet_name_cannot_leave_the_home(home: Path, base: Lineage, name: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(GnomonError, match="fleet name"):
        save_fleet(Fleet(name, (FleetMember("tiny-base"),)), home)
    assert cli(["fleet", "build", "--tiny", "--name", name, "--only", "base"]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "fleet name" in err[0]
    assert not (home / "fleets").exists() and not (home.parent / "escape.json").exists()
    assert cli(["fleet", "show", name]) == 2


def test_self_control_corpus_is_the_parents_own_text_and_is_kept(base: Lineage, home: Path) -> None:
    """The default control corpus: the shared openings followed by the parent's samples; a
    second call reads the kept file (same texts, same hash), another parent samples anew."""
    from pipeline.fleet.corpora import diary_openings
    from pipeline.fleet.selfgen import self_corpus

    quiet = {"home": home, "log": lambda _s: None, "max_new_tokens": 6}
    first = self_corpus(base.id, 10, **quiet)
    openings = diary_openings(10)
    assert len(first.texts) == 10 and all(t.startswith(o) for t, o in zip(first.texts, openings))
    assert sum(len(t) > len(o) for t, o in zip(first.texts, openings)) >= 8   # the model wrote something
    assert openings == [s.split(".")[0] + "." for s in shipped_corpus("negative", 10).texts]  # shared prefix
    kept = list((home / "corpora").glob("self-*.jsonl"))
    assert len(kept) == 1 and base.fingerprint[:12] in kept[0].name
    again = self_corpus(base.id, 10, **quiet)
    assert again.texts == first.texts and again.sha256 == first.sha256 and again.source.startswith("self:tiny-base@")
    other = import_model("tiny:llama:2x48", "tiny-other", home)
    assert self_corpus(other.id, 10, **quiet).texts != first.texts
    with pytest.raises(GnomonError, match="nope"):
        self_corpus("nope", 4, **quiet)
