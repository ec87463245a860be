"""The one write helper: unique temp names, nothing half-written, folders swapped whole."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pipeline.atomic import build_dir, publish, temp_beside, write_bytes, write_json, write_text


def test_temp_names_are_unique_hidden_and_never_match_the_target_pattern(tmp_path: Path) -> None:
    target = tmp_path / "part-0.parquet"
    names = {temp_beside(target).name for _ in range(100)}
    assert len(names) == 100
    assert all(n.startswith(".") and not n.endswith(".parquet") for n in names)


def test_bytes_text_json_round_trip_and_leave_no_temp(tmp_path: Path) -> None:
    write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_text(tmp_path / "c.txt", "héllo")
    write_json(tmp_path / "d.json", {"x": [1, 2]}, indent=1)
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "d.json").read_text()) == {"x": [1, 2]}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.bin", "c.txt", "d.json"]


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = write_text(tmp_path / "t.txt", "old")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        publish(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    target = tmp_path / "same.json"
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for _ in range(20):
                write_json(target, {"writer": i, "pad": "x" * 5000})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["writer"] in range(4)   # whole, from one writer
    assert [p.name for p in tmp_path.iterdir()] == ["same.json"]


def test_build_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    build_dir(target, lambda d: (d / "old.txt").write_text("1"))
    build_dir(target, lambda d: (d / "new.txt").write_text("2"))
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    def fail(d: Path) -> None:
        (d / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        build_dir(target, fail)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
