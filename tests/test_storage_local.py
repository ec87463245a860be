"""``pipeline.storage`` on a local root: listings with version stamps."""

from __future__ import annotations

from pathlib import Path

from pipeline.storage import Storage


def test_stamped_listing_takes_regular_files_and_skips_what_is_gone(tmp_path: Path) -> None:
    """The stamps come with a listing another process may be changing: a file removed between
    the listing and its stat is skipped, not an error; a link or a folder is no shard."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "part-0.json").write_text("{}")
    (tmp_path / "m" / "part-1.json").symlink_to(tmp_path / "m" / "part-0.json")   # a link
    (tmp_path / "m" / "part-2.json").symlink_to(tmp_path / "m" / "gone.json")     # listed, then missing
    (tmp_path / "m" / "part-3.json").mkdir()                                        # a folder
    st = Storage.open(tmp_path)
    assert st.glob("m/part-*.json") == [f"m/part-{i}.json" for i in range(4)]   # the listing itself is unchanged
    stamped = st.glob_stamps("m/part-*.json")
    assert [rel for rel, _ in stamped] == ["m/part-0.json"]
    assert stamped[0][1] == st.stamp("m/part-0.json") and stamped[0][1][-1] == 2   # size last
