"""Control-vector GGUF and safetensors export: header, numbering, round trip."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from pipeline.direction import Direction, Provenance
from pipeline.gguf_io import (
    gguf_index,
    read_control_vector,
    read_safetensors,
    write_control_vector,
    write_safetensors,
)
from pipeline.types import GnomonError

D = 16


def make(layer, seed, concept="c", **kw):
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    prov = Provenance.minimal(D, layer=layer, model_id="tiny:llama", fingerprint="ab" * 16, concept=concept)
    stats = dict(pos_mean=2.0, neg_mean=0.5, spread=1.0, resid_norm=7.0)
    stats.update(kw)
    return Direction(vector=v, provenance=prov, **stats)


def test_header_and_llama_cpp_numbering(tmp_path):
    dirs = [make(2, 0), make(5, 1)]
    path = write_control_vector(dirs, tmp_path / "cv.gguf", strength=1.0, unit="raw", model_hint="llama")
    r = gguf.GGUFReader(str(path))
    arch = r.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = r.get_field("controlvector.model_hint")
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = r.get_field("controlvector.layer_count")
    assert int(count.parts[count.data[0]][0]) == 2
    assert count.types == [gguf.GGUFValueType.UINT32]
    # gnomon layer L (output of block L-1) is llama.cpp's direction.{L-1}.
    tensors = {t.name: t for t in r.tensors}
    assert set(tensors) == {"direction.1", "direction.4"}
    for d in dirs:
        t = tensors[f"direction.{d.layer - 1}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), d.vector.numpy())


@pytest.mark.parametrize("unit,strength", [("raw", 1.0), ("separation", 3.0), ("resid_norm", -0.5)])
def test_round_trip_returns_the_steering_vectors(tmp_path, unit, strength):
    dirs = [make(3, 0, "a"), make(4, 1, "b")]
    scale = {"raw": lambda d: float(d.vector.norm()), "separation": lambda d: d.separation,
             "resid_norm": lambda d: d.resid_norm}[unit]
    for write, read, name in ((write_control_vector, read_control_vector, "cv.gguf"),
                              (write_safetensors, read_safetensors, "cv.safetensors")):
        back = read(write(dirs, tmp_path / name, strength=strength, unit=unit))
        assert [b.layer for b in back] == [3, 4]
        for d, b in zip(dirs, back):
            torch.testing.assert_close(b.vector, d.unit * strength * scale(d), atol=1e-6, rtol=1e-6)
            assert b.provenance.concept == d.provenance.concept
            assert b.provenance.fingerprint == d.provenance.fingerprint
            assert b.hidden_size == D


def test_same_layer_directions_are_summed(tmp_path):
    a, b = make(3, 0, "a"), make(3, 1, "b")
    (back,) = read_control_vector(write_control_vector([a, b], tmp_path / "cv.gguf", unit="raw"))
    torch.testing.assert_close(back.vector, a.vector + b.vector, atol=1e-6, rtol=1e-6)
    assert back.provenance.concept == "a+b" and back.provenance.fingerprint == ""


def test_refusals(tmp_path):
    with pytest.raises(GnomonError, match="layer 1"):
        write_control_vector([make(1, 0)], tmp_path / "x.gguf", unit="raw")
    with pytest.raises(GnomonError, match="layer 0"):
        gguf_index(0)
    with pytest.raises(GnomonError, match="separation"):
        write_control_vector([make(2, 0, pos_mean=float("nan"))], tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    # A GGUF that is not a control vector, and a control vector with a direction.0 tensor.
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((2, D), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GnomonError, match="not a control vector"):
        read_control_vector(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "zero.gguf"), "controlvector")
    w.add_tensor("direction.0", np.ones(D, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(GnomonError, match="direction.0"):
        read_control_vector(tmp_path / "zero.gguf")


def test_reads_a_repeng_style_file(tmp_path):
    """repeng's export: model_hint + layer_count, tensors keyed by 0-based block index."""
    vec = np.arange(D, dtype=np.float32) + 1
    w = gguf.GGUFWriter(str(tmp_path / "repeng.gguf"), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_uint32("controlvector.layer_count", 1)
    w.add_tensor("direction.7", vec)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    (d,) = read_control_vector(tmp_path / "repeng.gguf")
    assert d.layer == 8 and d.provenance.model_id == "llama"
    np.testing.assert_array_equal(d.vector.numpy(), vec)


def test_cli_export(tmp_path, capsys):
    from jobs.cli import main

    a, b = make(3, 0, "a"), make(6, 1, "b")
    pa, pb = a.save(tmp_path / "a.safetensors"), b.save(tmp_path / "b.safetensors")
    assert main(["export-gguf", str(pa), str(pb), str(tmp_path / "cv.gguf"), "--strength", "2"]) == 0
    out = capsys.readouterr().out
    assert "a@L3 -> direction.2" in out
    # the exact llama.cpp arguments: scale 1 = what was written, blocks counted from 0 (layers 3, 6 -> 2..5)
    line = next(x for x in out.splitlines() if x.startswith("llama.cpp: llama-cli "))
    args = line.split()[2:]
    assert args[args.index("--control-vector-scaled") + 1:][:2] == [str(tmp_path / "cv.gguf"), "1"]
    assert args[args.index("--control-vector-layer-range") + 1:][:2] == ["2", "5"]
    assert "gnomon layer 3 = block 2" in out and "SCALE X/2" in out
    back = read_control_vector(tmp_path / "cv.gguf")
    for d, r in zip((a, b), back):
        torch.testing.assert_close(r.vector, 2 * d.separation * d.unit, atol=1e-6, rtol=1e-6)
    assert main(["export-gguf", str(pa), str(tmp_path / "cv.safetensors"), "--unit", "raw"]) == 0
    torch.testing.assert_close(read_safetensors(tmp_path / "cv.safetensors")[0].vector, a.vector)
    assert main(["export-gguf", str(pa), str(tmp_path / "cv.bin")]) == 2
