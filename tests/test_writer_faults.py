"""The writer never loses what it accepted: bad values fail on the caller's thread, faults cost only what failed.

Every check reads the real part files with plain DuckDB (not lakelog's views), so what is asserted is
what any reader of the lake finds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import uuid

import duckdb
import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
import torch

import lakelog
from lakelog.errors import InvalidArgumentError, WriterFailedError
from lakelog.write.partfiles import Row


def _rows(run_dir, table: str, where: str = "true") -> int:
    folder = os.path.join(run_dir, table)
    if not os.path.isdir(folder):
        return 0
    pattern = os.path.join(folder, "**", "*.parquet")
    return duckdb.execute(f"SELECT count(*) FROM read_parquet($p) WHERE {where}", {"p": pattern}).fetchone()[
        0
    ]


def _info(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def _temp_files(folder) -> list[str]:
    return [name for _, _, names in os.walk(folder) for name in names if name.endswith(".tmp")]


def _valid_step(run, step: int) -> None:
    run.log_predictions(
        torch.ones(4, 3), step=step, labels=[0, 1, 2, 0], keys={"id": [f"s{i}" for i in range(4)]}
    )
    run.log({"loss": 0.5, "acc": 0.25}, step=step)
    run.log_batch(sample_ids=[1, 2, 3, 4], inputs=torch.ones(4, 2), step=step)


BAD_CALLS = [
    (
        lambda r: r.log({"loss": 1.0}, step=2**63),
        r"step: expected a non-negative int that fits in int64, got 2\*\*63|step: .*fits in int64",
    ),
    (
        lambda r: r.log({"big": 10**400}, step=1),
        r"log: 'big' is an int of 1329 bits, which does not fit in a float64",
    ),
    (
        lambda r: r.log({"loss": 1.0}, step=1, epoch=2**64),
        r"epoch: expected a non-negative int that fits in int64",
    ),
    (lambda r: r.log_predictions(torch.ones(2, 3), step=1, batch_idx=2**63), r"batch_idx: .*fits in int64"),
    (
        lambda r: r.log_batch(sample_ids=[2**64, 1], step=1),
        r"sample_ids: expected all strings or all integers",
    ),
    (
        lambda r: r.log_predictions(torch.ones(2, 3), step=1, keys={"id": [1, 2]}),
        r"keys\['id'\]: this run stores 'id' as strings",
    ),
    (
        lambda r: r.log_predictions(torch.ones(2, 3), step=1, loss=["a", "b"]),
        r"loss: expected 2 per-sample numbers",
    ),
    (
        lambda r: r.log_predictions(
            torch.ones(2, 3), step=1, keys={"n": np.array([2**64 - 1, 1], dtype=np.uint64)}
        ),
        r"keys\['n'\]: expected integers that fit in int64, got 18446744073709551615",
    ),
    (
        lambda r: r.log_predictions(torch.ones(2, 3), step=1, labels=np.array([2**63, 0], dtype=np.uint64)),
        r"labels: expected integers that fit in int64",
    ),
    (lambda r: r.log({"loss": 1.0}, step=0), None),  # the same step again: allowed
]


@pytest.mark.parametrize(("call", "message"), BAD_CALLS)
def test_bad_values_fail_on_the_calling_thread_and_every_valid_row_is_kept(tmp_path, call, message):
    run = lakelog.init(tmp_path, name="bad")
    _valid_step(run, 0)
    run.flush()  # the key type is fixed across flushes too
    if message is None:
        call(run)
    else:
        with pytest.raises(InvalidArgumentError, match=message):
            call(run)
    _valid_step(run, 2)
    run.finish()  # never raises for rows it accepted
    folder = tmp_path / "bad"
    assert _rows(folder, "predictions") == 8
    assert _rows(folder, "scalars") == 4 + (1 if message is None else 0)
    assert _rows(folder, "batches") == 2
    assert "dropped" not in _info(folder)
    assert _info(folder)["status"] == "finished"


def test_key_type_is_fixed_across_a_resume(tmp_path):
    with lakelog.init(tmp_path, name="keys") as run:
        run.log_predictions(torch.ones(2, 2), step=0, keys={"id": torch.tensor([7, 8])})
    with lakelog.init(tmp_path, name="keys", mode="resume") as run:
        with pytest.raises(InvalidArgumentError, match=r"keys\['id'\]: this run stores 'id' as integers"):
            run.log_predictions(torch.ones(2, 2), step=1, keys={"id": ["a", "b"]})
        run.log_predictions(torch.ones(2, 2), step=1, keys={"id": [9, 10]})
    assert _rows(tmp_path / "keys", "predictions", "id >= 7") == 4


def test_steps_going_backwards_are_refused_and_one_step_may_be_logged_by_many_calls(tmp_path):
    run = lakelog.init(tmp_path, name="steps")
    run.log({"loss": 1.0}, step=5)
    run.log({"acc": 0.5}, step=5)  # several calls for one step
    run.log_predictions(torch.ones(2, 2), step=5)
    with pytest.raises(InvalidArgumentError, match=r"step: 3 is before step 5 already logged to run 'steps'"):
        run.log({"loss": 0.9}, step=3)
    run.log({"loss": 0.8}, step=6)
    run.finish()
    assert _rows(tmp_path / "steps", "scalars") == 3


def test_a_row_builder_that_raises_costs_only_its_rows(tmp_path, caplog):
    run = lakelog.init(tmp_path, name="faulty")

    def broken():
        raise RuntimeError("the device copy failed")

    for step in range(6):
        _valid_step(run, step)
        run.submit(broken, table="params", rows=10)
        if step == 3:
            run.flush()
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        run.finish()
    folder = tmp_path / "faulty"
    assert (_rows(folder, "predictions"), _rows(folder, "scalars"), _rows(folder, "batches")) == (24, 12, 6)
    assert _info(folder)["dropped"] == {"params": 60}
    assert run.dropped == {"params": 60}


def test_rows_that_cannot_be_converted_cost_only_their_batch(tmp_path, caplog):
    run = lakelog.init(tmp_path, name="convert")
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        for step in range(4):
            rows = {"step": [step], "name": ["w"], "norm": [1.0]}
            if step == 2:
                rows["norm"] = [
                    object()
                ]  # accepted by write_rows' caller, refused by Arrow on the writer thread
                run.submit(lambda rows=rows: {"params": rows}, table="params", rows=1)
            else:
                run.write_rows("params", rows)
            _valid_step(run, step)
        run.finish()
    folder = tmp_path / "convert"
    assert _rows(folder, "params") == 3
    assert _rows(folder, "predictions") == 16
    assert _info(folder)["dropped"] == {"params": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "params" in r.getMessage()]
    assert len(warnings) == 1 and "could not be written" in warnings[0].getMessage()


def test_a_one_row_batch_that_cannot_be_converted_costs_only_its_row(tmp_path):
    run = lakelog.init(tmp_path, name="row")
    for step in range(5):
        _valid_step(run, step)
        if step == 2:  # a batch-order row Arrow refuses (an object among the ids), next to good ones
            values = (step, None, 2, ["a", object()], "h", "h", None, None, None, None, None, None, 0)
            run.submit(lambda values=values: {"batches": Row(values)}, table="batches", rows=1)
    run.finish()
    folder = tmp_path / "row"
    assert _rows(folder, "batches") == 5
    assert _rows(folder, "batches", "step = 2") == 1  # the good row of step 2 is kept
    assert _info(folder)["dropped"] == {"batches": 1}


def test_on_error_raise_reports_the_table_and_cause(tmp_path):
    run = lakelog.init(tmp_path, name="strict", on_error="raise")
    _valid_step(run, 0)
    run.submit(lambda: 1 / 0, table="params", rows=2)
    with pytest.raises(WriterFailedError, match=r"params: ZeroDivisionError"):
        run.flush()
    with pytest.raises(WriterFailedError):
        run.finish()
    assert _rows(tmp_path / "strict", "predictions") == 4  # the other rows are written all the same


def test_a_table_folder_that_cannot_be_written_leaves_the_other_tables_complete(tmp_path, caplog):
    run = lakelog.init(tmp_path, name="blocked")
    (tmp_path / "blocked" / "predictions").write_text("not a folder")  # a real fault: makedirs fails
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        for step in range(20):
            _valid_step(run, step)
            if step % 5 == 4:
                run.flush()
        run.finish()  # does not raise: the rows it accepted are accounted for
    folder = tmp_path / "blocked"
    assert (_rows(folder, "scalars"), _rows(folder, "batches")) == (40, 20)
    assert _info(folder)["dropped"] == {"predictions": 80}
    assert _info(folder)["status"] == "finished"
    commit = json.loads((folder / "_commits" / "rank=0.json").read_text())
    assert commit["final"] and commit["step"] == 19 and commit["dropped"] == {"predictions": 80}
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchone() == (
        40,
    )  # none hidden
    assert not _temp_files(folder)
    lake_warnings = [r for r in caplog.records if "cannot write to the lake" in r.getMessage()]
    assert len(lake_warnings) == 1 and str(tmp_path) in lake_warnings[0].getMessage()


def test_nan_and_inf_are_found_by_plain_duckdb_polars_and_pyarrow(tmp_path):
    with lakelog.init(tmp_path, name="nan") as run:
        for step, loss in enumerate([1.0, float("nan"), 0.5, float("inf"), float("-inf"), 0.25]):
            run.log({"loss": loss}, step=step)
        logits = torch.tensor([[0.1, float("nan")], [0.2, 0.3]])
        run.log_predictions(logits, step=6, loss=torch.tensor([float("nan"), 1.0]))
    scalars = str(tmp_path / "nan" / "scalars" / "**" / "*.parquet")
    con = duckdb.connect()
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE isnan(value)", {"p": scalars}
    ).fetchone() == (1,)
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE isinf(value)", {"p": scalars}
    ).fetchone() == (2,)
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE value > 1e308", {"p": scalars}
    ).fetchone() == (2,)
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE value = 'nan'::DOUBLE", {"p": scalars}
    ).fetchone() == (1,)
    preds = str(tmp_path / "nan" / "predictions" / "**" / "*.parquet")
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE isnan(loss)", {"p": preds}
    ).fetchone() == (1,)
    assert con.execute(
        "SELECT count(*) FROM read_parquet($p) WHERE list_bool_or(list_transform(logits, lambda x: isnan(x)))",
        {"p": preds},
    ).fetchone() == (1,)
    frame = pl.read_parquet(str(tmp_path / "nan" / "scalars" / "*" / "*" / "*.parquet"))
    assert frame.filter(pl.col("value").is_nan()).height == 1
    table = pads.dataset(str(tmp_path / "nan" / "scalars"), format="parquet").to_table()
    assert pc.sum(pc.is_nan(table["value"])).as_py() == 1


def _mount_tmpfs(folder, size: str) -> bool:
    folder.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        )
    except FileNotFoundError:
        return False
    return done.returncode == 0


def _fill(folder) -> object:
    path = folder / f"filler-{uuid.uuid4().hex}"
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return path


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "disk"
    if not _mount_tmpfs(folder, "2m"):
        pytest.skip("mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_disk_full_training_goes_on_and_rows_are_written_when_space_returns(small_disk, caplog):
    run = lakelog.init(small_disk, name="full", flush_every_s=0.05)
    with caplog.at_level(logging.INFO, logger="lakelog"):
        for step in range(5):
            _valid_step(run, step)
        run.flush()
        filler = _fill(small_disk)
        for step in range(5, 200):  # the loop never sees the full disk
            _valid_step(run, step)
            if step % 40 == 0:
                run.flush()
        run.flush()
        assert not _temp_files(small_disk)
        os.unlink(filler)  # space returns
        run.finish()
    folder = small_disk / "full"
    assert (_rows(folder, "predictions"), _rows(folder, "scalars"), _rows(folder, "batches")) == (
        800,
        400,
        200,
    )
    info = _info(folder)
    assert info["status"] == "finished" and "dropped" not in info
    assert not _temp_files(small_disk)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(small_disk) in warnings[0].getMessage() and "No space left" in warnings[0].getMessage()
    assert json.loads((folder / "_commits" / "rank=0.json").read_text())["step"] == 199


def test_disk_full_past_the_memory_bound_drops_with_a_count(small_disk):
    run = lakelog.init(small_disk, name="bound", flush_every_s=0.05)
    run._writer.max_buffer_bytes = 64 << 10  # a small bound, so the test stays small
    filler = _fill(small_disk)
    for step in range(300):
        run.log_predictions(torch.ones(64, 8), step=step, keys={"id": [f"x{i}" for i in range(64)]})
        if step == 4:  # the writer meets the full disk here, so what follows runs into the bound
            run.flush()
    run.flush()
    os.unlink(filler)
    run.finish()
    folder = small_disk / "bound"
    dropped = _info(folder)["dropped"]["predictions"]
    assert 0 < dropped < 300 * 64
    assert _rows(folder, "predictions") + dropped == 300 * 64  # every row is either on disk or counted
    assert not _temp_files(small_disk)


def test_removed_run_folder_is_recreated(tmp_path):
    run = lakelog.init(tmp_path, name="gone")
    _valid_step(run, 0)
    run.flush()
    shutil.rmtree(tmp_path / "gone")
    for step in range(1, 4):
        _valid_step(run, step)
    run.finish()
    folder = tmp_path / "gone"
    assert _rows(folder, "predictions") == 12  # steps 1..3 written again; step 0 went with the folder
    assert _info(folder)["status"] == "finished"


def test_writer_thread_cost_is_not_paid_by_a_bad_batch_on_the_training_thread(tmp_path):
    """A refused call leaves nothing queued: the writer's counts stay zero."""
    run = lakelog.init(tmp_path, name="clean")
    with pytest.raises(InvalidArgumentError):
        run.log_predictions(np.ones((2, 2)), step=0, keys={"id": [1, "a"]})
    run.finish()
    assert run.dropped == {} and _rows(tmp_path / "clean", "predictions") == 0
