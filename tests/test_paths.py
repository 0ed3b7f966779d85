"""The one path join of the lake (layout.join_path and the Lake methods built on it), local and object store."""

from __future__ import annotations

import os

import pyarrow.fs as pafs

from lakelog.lake.layout import Lake, join_path, partition_dir


def test_local_paths_use_the_os_join_and_object_stores_a_slash(tmp_path):
    assert join_path(True, "a", "b") == os.path.join("a", "b") and join_path(False, "a", "b") == "a/b"
    lake = Lake.open(tmp_path)
    assert lake.join("r", "run.json") == os.path.join(str(tmp_path), "r", "run.json")
    assert lake.location("r") == os.path.join(str(tmp_path), "r")
    parent, name = Lake.open(tmp_path / "r").parent()
    assert (parent.base, parent.root, name) == (str(tmp_path), str(tmp_path), "r")
    assert partition_dir("x", "scalars", 1, 0, local=False) == "x/scalars/epoch=1/rank=0"


def test_object_store_locations_keep_the_query_and_the_scheme():
    lake = Lake(
        "s3://bucket/runs?endpoint_override=localhost:9000", pafs.LocalFileSystem(), "bucket/runs", False
    )
    assert lake.join("a", "run.json") == "bucket/runs/a/run.json"
    assert lake.under("bucket/runs/a", "scalars") == "bucket/runs/a/scalars"
    assert lake.location("a") == "s3://bucket/runs/a?endpoint_override=localhost:9000"
    run_folder = Lake("s3://bucket/runs/a", pafs.LocalFileSystem(), "bucket/runs/a", False)
    parent, name = run_folder.parent()
    assert (parent.root, parent.base, name) == ("s3://bucket/runs", "bucket/runs", "a")
