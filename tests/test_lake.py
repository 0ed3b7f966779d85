"""The lake round-trips: what a run logs is what every reader reads back, partitioned as documented."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pyarrow.dataset as pads
import pytest
import torch

import lakelog
from lakelog.write import batch_rows


def _log_two_epochs(root, name="a", steps=6, batch=8, classes=3):
    run = lakelog.init(root, name=name, config={"lr": 0.1, "model": {"width": 4}}, seed=7)
    gen = torch.Generator().manual_seed(0)
    logged = []
    for step in range(steps):
        epoch = step // 3
        logits = torch.randn(batch, classes, generator=gen)
        labels = torch.randint(0, classes, (batch,), generator=gen)
        names = [f"img{step}_{i}.jpg" for i in range(batch)]
        run.log_predictions(
            logits, step=step, epoch=epoch, labels=labels, keys={"image1": names}, batch_idx=step % 3
        )
        run.log({"loss": torch.tensor(1.0 / (step + 1)), "acc": step / 10}, step=step, epoch=epoch)
        run.log_batch(
            step=step,
            epoch=epoch,
            sample_ids=torch.arange(batch) + step * batch,
            inputs=torch.full((batch, 2), float(step)),
        )
        logged.append((logits, labels, names))
    run.finish()
    return run, logged


def test_predictions_round_trip_exactly(tmp_path):
    _run, logged = _log_two_epochs(tmp_path)
    con = lakelog.connect(tmp_path)
    rows = con.execute(
        "SELECT step, epoch, rank, run, sample_idx, label, prediction, logits, image1, batch_idx "
        "FROM predictions ORDER BY step, sample_idx"
    ).fetchall()
    assert len(rows) == 6 * 8
    for step, (logits, labels, names) in enumerate(logged):
        part = [r for r in rows if r[0] == step]
        assert [r[1] for r in part] == [step // 3] * 8
        assert {r[2] for r in part} == {0} and {r[3] for r in part} == {"a"}
        assert np.array_equal(np.array([r[7] for r in part], dtype=np.float32), logits.numpy())
        assert [r[5] for r in part] == labels.tolist()
        assert [r[6] for r in part] == logits.argmax(1).tolist()
        assert [r[8] for r in part] == names
        assert {r[9] for r in part} == {step % 3}


def test_scalars_accept_numbers_and_tensors(tmp_path):
    run = lakelog.init(tmp_path, name="s")
    run.log(
        {
            "a": 1,
            "b": 2.5,
            "c": torch.tensor(3.25),
            "d": torch.tensor([4.0]),
            "e": np.float32(5.5),
            "f": torch.tensor(7, dtype=torch.int32),
            "g": float("nan"),
        },
        step=3,
        epoch=1,
    )
    run.finish()
    got = dict(
        lakelog.connect(tmp_path)
        .execute("SELECT name, value FROM scalars WHERE step = 3 AND epoch = 1")
        .fetchall()
    )
    assert got["a"] == 1 and got["b"] == 2.5 and got["c"] == 3.25 and got["d"] == 4.0 and got["e"] == 5.5
    assert got["f"] == 7 and np.isnan(got["g"])


def test_batches_fingerprint_inputs_and_ids(tmp_path):
    run = lakelog.init(tmp_path, name="b")
    x = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    run.log_batch(step=0, sample_ids=[3, 1, 2, 0], inputs=x)
    run.log_batch(step=1, sample_ids=[0, 1, 2, 3], inputs=x.clone())  # same set, other order
    y = x.clone()
    y[2, 1] = torch.nextafter(y[2, 1], torch.tensor(100.0))
    run.log_batch(step=2, sample_ids=[0, 1, 2, 3], inputs=y)  # same ids, one ulp apart
    run.log_batch(step=3, sample_ids=["a.jpg", "b.jpg"], inputs={"img": x[:2], "mask": x[:2] > 3})
    run.finish()
    rows = (
        lakelog.connect(tmp_path)
        .execute(
            "SELECT step, sample_ids, ids_hash, ids_set_hash, input_fingerprint, input_shapes FROM batches ORDER BY step"
        )
        .fetchall()
    )
    assert rows[0][1] == ["3", "1", "2", "0"] and rows[3][1] == ["a.jpg", "b.jpg"]
    assert rows[0][2] != rows[1][2] and rows[0][3] == rows[1][3]
    assert rows[0][4] == rows[1][4] != rows[2][4]
    assert rows[3][5] == "img:float32[2, 3];mask:bool[2, 3]"


def test_input_fingerprints_agree_whether_hashed_on_the_training_or_the_writer_thread(tmp_path, monkeypatch):
    """Small CPU inputs are copied and fingerprinted on the writer thread, larger ones where they are:
    the stored fingerprint is the same, and a loop that reuses its input buffers changes neither."""

    def logged(name: str, value: float = 1.0) -> str:
        x = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4).transpose(1, 2) * value  # not contiguous
        inputs = {"img": x, "mask": torch.ones(2, 4, dtype=torch.bool)}
        with lakelog.init(tmp_path, name=name) as run:
            run.log_batch(step=0, sample_ids=[1, 2], inputs=inputs)
            x.zero_()  # the loop reuses its buffers before the writer thread builds the row
        sql = "SELECT input_fingerprint FROM batches WHERE run = $r"
        return lakelog.connect(tmp_path).execute(sql, {"r": name}).fetchone()[0]

    on_writer = logged("writer")
    monkeypatch.setattr(batch_rows, "DEFER_BYTES", -1)  # every input hashed on the training thread
    on_caller = logged("caller")
    assert on_writer == on_caller and on_writer.startswith("x3:")
    assert logged("other", value=2.0) != on_caller


def test_partitioning_and_plain_readers(tmp_path):
    _log_two_epochs(tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files and all(
        f.split("/")[2] in ("epoch=0", "epoch=1") and f.split("/")[3] == "rank=0" for f in files
    )
    assert not list(tmp_path.rglob("*.tmp"))
    pattern = str(tmp_path / "a" / "predictions" / "**" / "*.parquet")
    # plain DuckDB, no lakelog
    sql = "SELECT count(*), count(DISTINCT epoch) FROM read_parquet($p, hive_partitioning=true)"
    n, epochs = duckdb.connect().execute(sql, {"p": pattern}).fetchone()
    assert (n, epochs) == (48, 2)
    # polars
    frame = pl.scan_parquet(str(tmp_path / "a" / "predictions"), hive_partitioning=True).collect()
    assert frame.height == 48 and sorted(frame["epoch"].unique().to_list()) == [0, 1]
    # pyarrow
    table = pads.dataset(str(tmp_path / "a" / "scalars"), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 12 and set(table.column("name").to_pylist()) == {"loss", "acc"}


def test_run_json_records_identity_and_environment(tmp_path):
    _run, _ = _log_two_epochs(tmp_path)
    info = json.loads((tmp_path / "a" / "run.json").read_text())
    assert info["name"] == "a" and info["seed"] == 7 and info["config"]["model"]["width"] == 4
    assert info["status"] == "finished" and info["summary"]["last_step"] == 5
    env = info["environment"]
    for key in (
        "python",
        "torch",
        "cuda",
        "cudnn",
        "cudnn_deterministic",
        "cudnn_benchmark",
        "deterministic_algorithms",
        "host",
        "rank",
        "world_size",
    ):
        assert key in env
    assert "CUBLAS_WORKSPACE_CONFIG" in env["env"] and "PYTHONHASHSEED" in env["env"]
    runs = (
        lakelog.connect(tmp_path)
        .execute("SELECT run, status, json_extract(config, '$.lr')::DOUBLE FROM runs")
        .fetchall()
    )
    assert runs == [("a", "finished", 0.1)]


def test_query_while_writing_sees_flushed_rows(tmp_path):
    run = lakelog.init(tmp_path, name="live", flush_every_s=3600)
    run.log({"loss": 1.0}, step=0)
    run.flush()
    pattern = str(tmp_path / "live" / "scalars" / "**" / "*.parquet")
    assert duckdb.connect().execute("SELECT count(*) FROM read_parquet($p)", {"p": pattern}).fetchone() == (
        1,
    )
    con = lakelog.connect(tmp_path)
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (1,)
    run.log({"loss": 0.5}, step=1)
    run.flush()
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (
        2,
    )  # the same view sees the new part file
    assert con.execute("SELECT status FROM runs").fetchone() == ("running",)
    run.finish()


def test_every_nth_batch_and_module_level_api(tmp_path):
    lakelog.init(tmp_path, name="m", log_every=3)
    for step in range(10):
        lakelog.log_predictions(torch.zeros(2, 2), step=step, labels=[0, 1])
        lakelog.log_batch(step=step, sample_ids=[step, step + 1])
        lakelog.log({"loss": step}, step=step)
    lakelog.finish()
    con = lakelog.connect(tmp_path)
    assert [r[0] for r in con.execute("SELECT DISTINCT step FROM predictions ORDER BY 1").fetchall()] == [
        0,
        3,
        6,
        9,
    ]
    assert con.execute("SELECT count(*) FROM batches").fetchone() == (4,)
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (10,)
    assert lakelog.current_run() is None


def test_connect_to_one_run_folder_and_empty_tables(tmp_path):
    _log_two_epochs(tmp_path, name="x", steps=1)
    _log_two_epochs(tmp_path, name="y", steps=2)
    con = lakelog.connect(tmp_path / "y")
    assert con.execute("SELECT DISTINCT run FROM predictions").fetchall() == [("y",)]
    assert con.execute("SELECT count(*) FROM params").fetchone() == (0,)
    assert "run" in [c[0] for c in con.execute("DESCRIBE holdout").fetchall()]
    both = lakelog.connect([tmp_path / "x", tmp_path / "y"])
    assert both.execute("SELECT count(DISTINCT run) FROM scalars").fetchone() == (2,)


def test_resume_appends_and_overwrite_replaces(tmp_path):
    _log_two_epochs(tmp_path, name="r", steps=2)
    with pytest.raises(lakelog.RunExistsError, match="mode='resume'"):
        lakelog.init(tmp_path, name="r")
    with lakelog.init(tmp_path, name="r", mode="resume") as run:
        run.log({"loss": 0.1}, step=2)
    con = lakelog.connect(tmp_path)
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (5,)
    assert len(json.loads((tmp_path / "r" / "run.json").read_text())["resumes"]) == 1
    with lakelog.init(tmp_path, name="r", mode="overwrite") as run:
        run.log({"loss": 0.1}, step=0)
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchone() == (1,)


def test_context_manager_records_failure(tmp_path):
    with pytest.raises(RuntimeError), lakelog.init(tmp_path, name="f") as run:
        run.log({"loss": 1.0}, step=0)
        raise RuntimeError("boom")
    info = json.loads((tmp_path / "f" / "run.json").read_text())
    assert info["status"] == "failed" and "boom" in info["error"]
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchone() == (1,)
