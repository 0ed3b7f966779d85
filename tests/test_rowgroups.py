"""Part files encoded while they fill (lakelog/write/rowgroups.py): every row once, in order, whatever
happens between the row groups (a flush, a lake that cannot be written, columns that change)."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import lakelog

BATCH = 64


def _batch(step: int) -> tuple[torch.Tensor, list[str]]:
    logits = torch.arange(BATCH * 3, dtype=torch.float32).reshape(BATCH, 3) + step
    return logits, [f"img-{step:04d}-{i:02d}.png" for i in range(BATCH)]


def _log(run, steps: range) -> None:
    for step in steps:
        logits, names = _batch(step)
        run.log_predictions(logits, step=step, labels=torch.full((BATCH,), step % 3), keys={"image": names})


def _predictions(folder) -> list[tuple]:
    return duckdb.sql(
        f"SELECT step, sample_idx, image, label, logits FROM read_parquet('{folder}/predictions/**/*.parquet')"
        " ORDER BY step, sample_idx"
    ).fetchall()


def _expected(steps: range) -> list[tuple]:
    rows = []
    for step in steps:
        logits, names = _batch(step)
        for i in range(BATCH):
            rows.append((step, i, names[i], step % 3, logits[i].tolist()))
    return rows


def _row_groups(folder) -> list[int]:
    return [
        pq.ParquetFile(p).metadata.num_row_groups for p in sorted(folder.glob("predictions/**/*.parquet"))
    ]


def test_a_part_encoded_ahead_holds_every_row_once_in_order(tmp_path):
    run = lakelog.init(tmp_path, name="ahead")
    run._writer.group_rows = 4 * BATCH  # small groups, so a small test has several
    _log(run, range(40))
    run.flush()
    _log(run, range(40, 60))
    run.finish()
    folder = tmp_path / "ahead"
    assert _predictions(folder) == _expected(range(60))
    groups = _row_groups(folder)
    assert len(groups) == 2 and max(groups) > 1, groups  # one part per flush, the first in several groups
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM predictions").fetchone() == (60 * BATCH,)


def test_rows_encoded_ahead_are_kept_while_the_lake_cannot_be_written(tmp_path):
    run = lakelog.init(tmp_path, name="blocked")
    run._writer.group_rows = 4 * BATCH
    blocker = tmp_path / "blocked" / "predictions"
    blocker.write_text("not a folder")  # a real fault: the partition folder cannot be made
    _log(run, range(30))  # row groups are encoded ahead of the part that cannot be written
    run.flush()
    _log(run, range(30, 45))
    run.flush()
    blocker.unlink()  # the lake is writable again
    _log(run, range(45, 50))
    run.finish()
    folder = tmp_path / "blocked"
    assert _predictions(folder) == _expected(range(50))
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "finished" and "dropped" not in info


def test_columns_that_change_type_between_row_groups_keep_every_row(tmp_path):
    run = lakelog.init(tmp_path, name="types")
    run._writer.group_rows = 100
    for step in range(12):  # a table of the user's: integers first, then floats
        values = np.arange(50, dtype=np.int64) if step < 6 else np.arange(50, dtype=np.float64) + 0.5
        run.submit(
            lambda step=step, values=values: {"custom": pa.table({"step": np.full(50, step), "x": values})},
            table="custom",
            rows=50,
        )
    run.finish()
    got = duckdb.sql(
        f"SELECT step, x FROM read_parquet('{tmp_path}/types/custom/**/*.parquet') ORDER BY step, x"
    ).fetchall()
    expected = [(s, float(i) if s < 6 else i + 0.5) for s in range(12) for i in range(50)]
    assert got == expected
    assert "dropped" not in json.loads((tmp_path / "types" / "run.json").read_text())


def test_rows_parquet_cannot_hold_are_counted_in_the_next_commit_and_the_rest_is_written(tmp_path):
    run = lakelog.init(tmp_path, name="cannot")
    run._writer.group_rows = 100
    run.log({"loss": 1.0}, step=6)
    run.flush()  # step 6 committed: below, only the lost rows make the next commit differ
    for step in range(1, 7):  # rows of earlier steps (a late builder); intervals have no Parquet type
        run.submit(
            lambda step=step: {
                "spans": pa.table(
                    {"step": np.full(50, step), "d": pa.array([(1, 2, 3)] * 50, pa.month_day_nano_interval())}
                )
            },
            table="spans",
            rows=50,
        )
    run.flush()
    commit = json.loads((tmp_path / "cannot" / "_commits" / "rank=0.json").read_text())
    assert commit["dropped"] == {"spans": 300} and commit["step"] == 6
    run.log({"loss": 0.5}, step=7)
    run.finish()
    assert json.loads((tmp_path / "cannot" / "run.json").read_text())["dropped"] == {"spans": 300}
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchone() == (2,)
