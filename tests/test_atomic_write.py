"""The one atomic write (lakelog.lake.files): whole file or the old one, and no temporary file left behind."""

from __future__ import annotations

import pytest

from lakelog.lake.files import TEMP_SUFFIX, write_atomic, write_bytes_atomic, write_stream_atomic
from lakelog.lake.layout import Lake


def test_write_replaces_the_file_whole(tmp_path):
    target = tmp_path / "a.json"
    write_bytes_atomic(target, b"old")
    write_stream_atomic(target, lambda f: (f.write(b"new "), f.write(b"content")))
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("durable", [True, False])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, durable):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")

    def half_then_fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_stream_atomic(target, half_then_fail, durable=durable)
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}")) and not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))


def test_a_path_callback_gets_a_temporary_name_in_the_same_folder_and_the_mode_is_set(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("x")
        tmp.chmod(0o600)  # as safetensors does

    final = write_atomic(tmp_path / "m.safetensors", write, mode=0o644)
    assert seen[0].parent == tmp_path and seen[0].name.endswith(TEMP_SUFFIX) and not seen[0].exists()
    assert final.read_text() == "x" and final.stat().st_mode & 0o777 == 0o644


def test_the_lake_writes_local_files_through_it(tmp_path):
    lake = Lake.open(tmp_path)
    path = lake.join("run.json")
    lake.write_bytes_atomic(path, b"{}")
    assert lake.read_text(path) == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
