"""The Direction value type: file round trip, refusal of bad files, arithmetic."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from pipeline.direction import Direction, Provenance
from pipeline.types import GnomonError

D = 8


def prov(hidden_size: int = D, layer: int = 2, **kw: Any) -> Provenance:
    return Provenance(model_id="tiny", revision="r1", fingerprint="abc123", hidden_size=hidden_size,
                      layer=layer, concept=kw.pop("concept", "sentiment"), positive="pos",
                      negative="neg", method="mean_diff", params={"l2": 0.1, "tags": ["a", "b"]},
                      dataset="toy", dataset_hash="h", split_sizes={"train": 10, "val": 4}, **kw)


def make(seed: int = 0, hidden_size: int = D, layer: int = 2, **kw: Any) -> Direction:
    g = torch.Generator().manual_seed(seed)
    return Direction(vector=torch.randn(hidden_size, generator=g), provenance=prov(hidden_size, layer),
                     pos_mean=kw.pop("pos_mean", 2.0), neg_mean=kw.pop("neg_mean", -1.0),
                     spread=0.5, resid_norm=12.0, **kw)


# ---- save / load ---------------------------------------------------------------------
def test_round_trip_keeps_vector_metadata_and_extras(tmp_path: Path) -> None:
    extras = {"leace_u": torch.randn(D), "leace_v": torch.randn(D), "leace_mean": torch.randn(D)}
    d = make(metrics={"val_auroc": 0.9, "test_dprime": 2.5}, extras=extras)
    back = Direction.load(d.save(tmp_path / "sub" / "d.safetensors"))
    assert back == d
    assert torch.equal(back.vector, d.vector) and back.vector.dtype == torch.float32
    assert back.provenance == d.provenance and back.provenance.params["tags"] == ["a", "b"]
    assert (back.pos_mean, back.neg_mean, back.spread, back.resid_norm) == (2.0, -1.0, 0.5, 12.0)
    assert dict(back.metrics) == {"val_auroc": 0.9, "test_dprime": 2.5}
    assert all(torch.equal(back.extras[k], t) for k, t in extras.items())
    assert not list(tmp_path.glob("sub/.*tmp"))  # the temporary file was renamed away


def test_missing_statistics_round_trip_as_nan(tmp_path: Path) -> None:
    d = Direction.from_vector(torch.ones(D), Provenance.minimal(hidden_size=D))
    back = Direction.load(d.save(tmp_path / "d.safetensors"))
    assert math.isnan(back.pos_mean) and math.isnan(back.resid_norm)
    assert back == d
    # JSON has no NaN: the file stores null, so any JSON reader can parse it.
    assert d.metadata()["scale"]["spread"] is None


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: Any | None) -> Path:
    """A hand-made file with a valid checksum, so the structural checks are what refuses it."""
    from pipeline.direction import content_sha256

    text = None if meta is None else json.dumps(meta)
    header = None if text is None else {"gnomon": text, "gnomon_sha256": content_sha256(tensors, text)}
    save_file(tensors, str(path), metadata=header)
    return path


@pytest.mark.parametrize("breakage, message", [
    (lambda t, m: m.update(format_version=99), "unsupported direction format"),
    (lambda t, m: t.pop("vector"), "missing tensor 'vector'"),
    (lambda t, m: m.pop("scale"), "incomplete direction metadata"),
    (lambda t, m: m["provenance"].pop("hidden_size"), "incomplete direction metadata"),
    (lambda t, m: m["provenance"].update(colour="red"), "incomplete direction metadata"),
    (lambda t, m: m["provenance"].update(hidden_size=D + 1), "hidden_size"),
    (lambda t, m: t.pop("extra.leace_u"), "do not match metadata"),
    (lambda t, m: m.update(extras=["leace_u", "other"]), "do not match metadata"),
])
def test_load_refuses_inconsistent_files(tmp_path: Path, breakage: Any, message: str) -> None:
    d = make(extras={"leace_u": torch.ones(D)})
    tensors = {"vector": d.vector, "extra.leace_u": torch.ones(D)}
    meta = d.metadata()
    breakage(tensors, meta)
    with pytest.raises(GnomonError, match=message):
        Direction.load(_write(tmp_path / "bad.safetensors", tensors, meta))


def test_load_refuses_foreign_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(GnomonError, match="no gnomon metadata"):
        Direction.load(_write(tmp_path / "plain.safetensors", {"vector": torch.ones(D)}, None))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"definitely not safetensors")
    with pytest.raises(GnomonError, match="not a readable safetensors"):
        Direction.load(junk)
    with pytest.raises(GnomonError, match="no direction file"):
        Direction.load(tmp_path / "absent.safetensors")


def test_load_refuses_corrupt_metadata_json(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.safetensors"
    from pipeline.direction import content_sha256

    t = {"vector": torch.ones(D)}
    save_file(t, str(path), metadata={"gnomon": "{not json", "gnomon_sha256": content_sha256(t, "{not json")})
    with pytest.raises(GnomonError, match="not valid JSON"):
        Direction.load(path)


# ---- construction ----------------------------------------------------------------
@pytest.mark.parametrize("vector, message", [
    (torch.ones(D + 1), "hidden_size"),
    (torch.ones(2, D), "1-D"),
    (torch.zeros(D), "zero"),
    (torch.tensor([math.nan] + [1.0] * (D - 1)), "NaN"),
])
def test_construction_refuses_bad_vectors(vector: torch.Tensor, message: str) -> None:
    with pytest.raises(GnomonError, match=message):
        Direction(vector=vector, provenance=prov())


def test_vector_is_stored_detached_float32() -> None:
    v = torch.randn(D, dtype=torch.float64, requires_grad=True)
    d = Direction(vector=v, provenance=prov())
    assert d.vector.dtype == torch.float32 and not d.vector.requires_grad


# ---- arithmetic ------------------------------------------------------------------
def test_add_and_subtract() -> None:
    a, b = make(0), make(1)
    assert torch.allclose((a + b).vector, a.vector + b.vector)
    assert torch.allclose((a - b).vector, a.vector - b.vector)
    s = a + b
    # A sum has a new meaning: class statistics are unknown, the residual scale is kept.
    assert math.isnan(s.pos_mean) and s.resid_norm == a.resid_norm
    assert s.provenance.method == "(sentiment+sentiment)" and s.provenance.params == {}


def test_scalar_multiplication_keeps_projections_on_the_unit() -> None:
    d = make()
    for t in (3 * d, d * 3, d / 0.5):
        assert torch.allclose(t.unit, d.unit, atol=1e-6)
        assert (t.pos_mean, t.neg_mean, t.provenance.positive) == (2.0, -1.0, "pos")
    assert torch.allclose((2.5 * d).vector, 2.5 * d.vector)
    with pytest.raises(GnomonError, match="by 0"):
        0 * d


def test_negation_flips_labels_and_means() -> None:
    d = make(pos_mean=2.0, neg_mean=-1.0)
    n = -d
    assert torch.equal(n.vector, -d.vector)
    assert (n.provenance.positive, n.provenance.negative) == ("neg", "pos")
    assert (n.pos_mean, n.neg_mean) == (1.0, -2.0)  # the new positive class projects higher
    assert n.pos_mean > n.neg_mean and n.separation == d.separation
    acts = torch.randn(5, D)
    assert torch.allclose(n.project(acts), -d.project(acts), atol=1e-6)
    assert -n == d
    m = -2.0 * d
    assert (m.pos_mean, m.neg_mean) == (1.0, -2.0) and torch.allclose(m.vector, -2 * d.vector)


def test_normalize_and_cosine() -> None:
    d = 5 * make()
    n = d.normalize()
    assert float(n.vector.norm()) == pytest.approx(1.0, abs=1e-6)
    assert (n.pos_mean, n.neg_mean, n.provenance) == (d.pos_mean, d.neg_mean, d.provenance)
    assert d.cosine(n) == pytest.approx(1.0, abs=1e-6)
    assert d.cosine(-d) == pytest.approx(-1.0, abs=1e-6)
    e = Direction(vector=torch.eye(D)[0], provenance=prov())
    f = Direction(vector=torch.eye(D)[0] + torch.eye(D)[1], provenance=prov(layer=5))
    assert e.cosine(f) == pytest.approx(1 / math.sqrt(2), abs=1e-6)  # across layers is allowed


def test_mismatched_hidden_size_and_layer_are_refused() -> None:
    a, b = make(hidden_size=D), make(hidden_size=D + 2)
    for op in (lambda: a + b, lambda: a - b, lambda: a.cosine(b)):
        with pytest.raises(GnomonError, match="hidden size"):
            op()
    with pytest.raises(GnomonError, match="different layers"):
        make(layer=1) + make(layer=2)


def test_to_returns_a_new_value() -> None:
    d = make(extras={"leace_mean": torch.ones(D)})
    moved = d.to("cpu")
    assert moved is not d and moved == d
    assert moved.extras is not d.extras
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.vector = torch.ones(D)  # type: ignore[misc]


def test_project_and_scale_properties() -> None:
    d = Direction(vector=torch.tensor([3.0, 4.0] + [0.0] * (D - 2)), provenance=prov(),
                  pos_mean=3.0, neg_mean=1.0)
    acts = torch.zeros(2, D, dtype=torch.float16)
    acts[0, 0], acts[1, 1] = 5.0, 5.0
    assert d.project(acts).tolist() == pytest.approx([3.0, 4.0])
    assert (d.separation, d.midpoint, d.hidden_size, d.layer) == (2.0, 2.0, D, 2)


def _rewrite(path: Path, edit: Any) -> None:
    """Edit a saved direction's tensors or metadata in place, keeping its old checksum."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    meta = json.loads(header["gnomon"])
    edit(tensors, meta)
    header["gnomon"] = json.dumps(meta)
    save_file(tensors, str(path), metadata=header)


@pytest.mark.parametrize("edit", [
    lambda t, m: t["vector"].view(torch.int32).__setitem__(0, t["vector"].view(torch.int32)[0] ^ 0x1000),
    lambda t, m: t["vector"].__setitem__(1, 1e38),
    lambda t, m: m["provenance"].update(layer=m["provenance"]["layer"] + 1),
    lambda t, m: m["scale"].update(resid_norm=123.0),
    lambda t, m: t["extra.leace_u"].__setitem__(0, 5.0),
])
def test_tampered_files_are_refused(tmp_path: Path, edit: Any) -> None:
    path = make(extras={"leace_u": torch.ones(D)}).save(tmp_path / "d.safetensors")
    Direction.load(path)
    _rewrite(path, edit)
    with pytest.raises(GnomonError, match="checksum"):
        Direction.load(path)


@pytest.mark.parametrize("field, value", [("layer", "abc"), ("layer", -1), ("layer", True), ("hidden_size", "8"),
                                          ("concept", 5), ("params", [1]), ("split_sizes", {"train": "x"})])
def test_wrong_metadata_types_are_one_line_errors(tmp_path: Path, field: str, value: Any) -> None:
    d = make()
    meta = d.metadata()
    meta["provenance"][field] = value
    with pytest.raises(GnomonError, match="wrong type|hidden_size"):
        Direction.load(_write(tmp_path / "bad.safetensors", {"vector": d.vector}, meta))


def test_wrong_scale_and_metric_types_are_one_line_errors(tmp_path: Path) -> None:
    d = make()
    for key, sub in (("scale", "spread"), ("metrics", "val_auroc")):
        meta = d.metadata()
        meta[key] = {sub: "high"}
        with pytest.raises(GnomonError, match="numbers"):
            Direction.load(_write(tmp_path / "bad.safetensors", {"vector": d.vector}, meta))
