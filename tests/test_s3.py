"""Lakes on object storage: a real S3-compatible server (moto) on 127.0.0.1, written and read back.

The server runs in this process on a free port; pyarrow's S3 filesystem talks to it over HTTP,
configured the three ways a user can: environment variables, URI options, or an S3FileSystem object.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import boto3
import moto.server as moto_server
import pyarrow.fs as pafs
import pytest

import lakelog

KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def endpoint() -> str:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket="lake")
    yield url
    server.stop()


@pytest.fixture
def s3_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point pyarrow (and a child process) at the server through the standard AWS variables."""
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return endpoint


def _objects(endpoint: str, prefix: str) -> list[str]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_run_written_to_s3_uri_is_read_by_connect_and_query(s3_env: str) -> None:
    root = "s3://lake/env-configured"
    for rank in (0, 1):  # two ranks of one run, as DDP writes them
        with lakelog.init(root, name="ddp", config={"lr": 0.1}, seed=7, rank=rank, world_size=2) as run:
            for step in range(1, 4):
                run.log({"loss": 1.0 / step + rank}, step=step)
                ids = [f"s{(step * 4 + i) % 6}" for i in range(4)]  # both ranks see the same ids: no sampler
                run.log_batch(sample_ids=ids, step=step)
            run.log_predictions(
                __import__("torch").eye(3), step=3, labels=[0, 1, 2], keys={"image": ["a", "b", "c"]}
            )

    keys = _objects(s3_env, "env-configured/ddp/")
    assert "env-configured/ddp/run.json" in keys
    assert any(k.startswith("env-configured/ddp/scalars/epoch=0/rank=1/part-") for k in keys)
    assert not [k for k in keys if k.endswith(".tmp")]

    con = lakelog.connect(root)
    run_row = con.execute("SELECT status, world_size, seed, config FROM runs WHERE run = 'ddp'").fetchone()
    assert run_row[:3] == ("finished", 2, 7) and json.loads(run_row[3]) == {"lr": 0.1}
    per_rank = con.execute(
        "SELECT rank, count(*), max(step) FROM scalars GROUP BY rank ORDER BY rank"
    ).fetchall()
    assert per_rank == [(0, 3, 3), (1, 3, 3)]
    dtypes = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE scalars)").fetchall())
    assert dtypes["rank"] == "BIGINT" and dtypes["epoch"] == "BIGINT"  # typed like the local views
    assert con.execute("SELECT list(image ORDER BY sample_idx) FROM predictions WHERE rank = 0").fetchone()[
        0
    ] == ["a", "b", "c"]

    overlap = lakelog.query("rank_sample_overlap", root=root, run="ddp")
    assert overlap.height == 1
    row = overlap.row(0, named=True)
    assert (row["rank_a"], row["rank_b"]) == (0, 1)
    assert row["identical_batches"] == 3 and row["overlap"] == 1.0


def test_uri_options_and_filesystem_object(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    host_port = endpoint.removeprefix("http://")

    uri = f"s3://lake/uri-configured?endpoint_override={host_port}&scheme=http"
    with lakelog.init(uri, name="a") as run:
        run.log({"loss": 0.5}, step=1)
    assert lakelog.connect(uri).execute("SELECT value FROM scalars").fetchone() == (0.5,)

    fs = pafs.S3FileSystem(
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        endpoint_override=endpoint,
        allow_delayed_open=True,
    )
    with lakelog.init("lake/object-configured", name="b", filesystem=fs) as run:
        run.log({"acc": 0.25}, step=2)
    assert "object-configured/b/run.json" in _objects(endpoint, "object-configured/")
    con = lakelog.connect("s3://lake/object-configured", filesystem=fs)
    assert con.execute("SELECT run, name, value FROM scalars").fetchall() == [("b", "acc", 0.25)]
    assert con.execute("SELECT status FROM runs").fetchone() == ("finished",)


WRITER = textwrap.dedent(
    """
    import sys
    import lakelog

    run = lakelog.init("s3://lake/killed", name="victim", flush_every_s=3600)
    for step in range(10):
        run.log({"loss": float(step)}, step=step)
        run.log_batch(sample_ids=[step, step + 1], step=step)
    run.flush()
    for step in range(10, 20):  # logged but never flushed: lost to SIGKILL, and nothing else is
        run.log({"loss": float(step)}, step=step)
    print("flushed", flush=True)
    sys.stdin.read()  # wait to be killed
    """
)


@pytest.mark.slow  # a writer process killed mid-run against an S3 server
def test_writer_killed_mid_run_leaves_what_it_flushed(s3_env: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "flushed", proc.stderr.read() if proc.poll() is not None else line
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -9

    con = lakelog.connect("s3://lake/killed")
    assert con.execute("SELECT status, finished FROM runs").fetchone() == ("running", None)
    steps = [s for (s,) in con.execute("SELECT step FROM scalars ORDER BY step").fetchall()]
    assert steps == list(range(10))
    assert con.execute("SELECT count(*), max(step) FROM batches").fetchone() == (10, 9)


@pytest.mark.slow  # compacts a many-file lake over S3
def test_compact_on_s3_keeps_every_row_and_cuts_files(s3_env: str) -> None:
    root = "s3://lake/compacted"
    for rank in (0, 1):
        with lakelog.init(root, name="ddp", rank=rank, world_size=2) as run:
            for step in range(12):
                run.log({"loss": float(step)}, step=step, epoch=step // 6)
                run.log_batch(sample_ids=[f"s{step}", f"t{step}"], step=step, epoch=step // 6)
                run.flush()

    def answers() -> list:
        con = lakelog.connect(root)
        return [
            con.execute(
                f"SELECT epoch, rank, count(*), sum(step) FROM {t} GROUP BY ALL ORDER BY ALL"
            ).fetchall()
            for t in ("scalars", "batches")
        ]

    before = answers()
    parts_before = [k for k in _objects(s3_env, "compacted/ddp/") if k.endswith(".parquet")]
    result = lakelog.compact(root)
    parts_after = [k for k in _objects(s3_env, "compacted/ddp/") if k.endswith(".parquet")]
    assert len(parts_before) == 2 * 2 * 2 * 6 and len(parts_after) == 2 * 2 * 2, result
    assert not [k for k in _objects(s3_env, "compacted/ddp/_compact")]
    assert answers() == before


def test_interrupted_compaction_on_s3_is_read_once_and_finished(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction committed (manifest written) but not cleaned up: readers use the manifest."""
    from lakelog.lake import compact as lake_compact
    from lakelog.lake import compact_protocol
    from lakelog.lake.layout import Lake

    root = "s3://lake/interrupted"
    with lakelog.init(root, name="a") as run:
        for step in range(6):
            run.log({"loss": float(step)}, step=step)
            run.flush()
    expected = lakelog.connect(root).execute("SELECT count(*), sum(step) FROM scalars").fetchone()
    lake = Lake.open(root)
    with monkeypatch.context() as patch:
        patch.setattr(compact_protocol, "finish", lambda *args: None)  # stop right after the commit point
        lake_compact.compact(root)
    assert any(k.endswith(".json") for k in _objects(s3_env, "interrupted/a/_compact/"))
    from lakelog.read.check import check

    noted = check(root)
    assert noted.ok and any("interrupted compaction" in n.reason for n in noted.notes), str(noted)
    assert lakelog.connect(root).execute("SELECT count(*), sum(step) FROM scalars").fetchone() == expected
    lake_compact.compact(root)  # recovers
    assert not _objects(s3_env, "interrupted/a/_compact/")
    assert lakelog.connect(root).execute("SELECT count(*), sum(step) FROM scalars").fetchone() == expected
    assert len([k for k in _objects(s3_env, "interrupted/a/scalars/") if k.endswith(".parquet")]) == 1
    assert lake.exists(lake.join("a", "run.json"))


def test_damaged_objects_on_s3_are_left_out_with_a_warning_and_listed_by_check(
    s3_env: str, caplog: pytest.LogCaptureFixture
) -> None:
    from lakelog.read.check import check

    root = "s3://lake/damaged"
    for name in ("a", "b"):
        with lakelog.init(root, name=name) as run:
            for step in range(4):
                run.log({"loss": float(step)}, step=step)
                run.flush()
    client = boto3.client(
        "s3",
        endpoint_url=s3_env,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    parts = sorted(k for k in _objects(s3_env, "damaged/b/scalars/") if k.endswith(".parquet"))
    client.put_object(Bucket="lake", Key=parts[0], Body=os.urandom(100))  # random bytes
    client.put_object(Bucket="lake", Key=parts[1], Body=b"")  # empty
    client.put_object(Bucket="lake", Key="damaged/a/run.json", Body=b"[1, 2]")
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(root)
        counts = dict(con.execute("SELECT run, count(*) FROM scalars GROUP BY run").fetchall())
    assert counts == {"a": 4, "b": 2}
    assert dict(con.execute("SELECT run, status FROM runs").fetchall()) == {"a": "damaged", "b": "finished"}
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert parts[0] in warned and parts[1] in warned and "damaged/a/run.json" in warned
    report = check(root)
    assert sorted(p.path.split("lake/", 1)[-1] for p in report.problems) == sorted(
        [parts[0], parts[1], "damaged/a/run.json"]
    )


def test_two_runs_on_s3_are_diffed(s3_env: str) -> None:
    """An object-store lake's tables are registered on the connection (cursors do not see them):
    ``diff`` answers on the connection itself and finds where the runs part."""
    from lakelog.read.diff import diff_runs

    root = "s3://lake/diffed"
    for name, late in (("a", 0.0), ("b", 0.5)):
        with lakelog.init(root, name=name, seed=1) as run:
            for step in range(6):
                run.log({"loss": 1.0 / (step + 1) + (late if step >= 4 else 0.0)}, step=step)
    result = diff_runs(lakelog.connect(root), "a", "b")
    assert (result.first_layer, result.first_step) == ("loss", 4) and not result.identical
    assert result.steps.filter(result.steps["side"] == "common")["n_steps"][0] == 6
