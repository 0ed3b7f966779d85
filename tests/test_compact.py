"""Compaction: real multi-epoch, multi-rank runs (each rank its own process), merged and killed.

Answers must be identical before and after; a ``kill -9`` of ``lakelog compact`` at random points
must leave every row counted exactly once by DuckDB (through ``lakelog.connect``), polars and pyarrow,
and the next ``compact`` must finish the interrupted work so that plain engines agree too.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.dataset as pads
import pytest

import lakelog
from lakelog.lake.compact import compact
from lakelog.lake.compact_protocol import STAGING_DIR
from lakelog.read.scan import locate, scan_lake

WRITER = textwrap.dedent(
    """
    import sys
    import torch
    import lakelog

    root, rank, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(rank)
    with lakelog.init(root, name="ddp", rank=rank, world_size=2, seed=3) as run:
        for step in range(steps):
            epoch = step * 2 // steps  # two epochs
            logits = torch.randn(4, 3)
            run.log({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step, epoch=epoch)
            run.log_batch(sample_ids=[f"s{step}-{i}-{rank}" for i in range(4)], step=step, epoch=epoch)
            run.log_predictions(logits, step=step, epoch=epoch, labels=[0, 1, 2, 0],
                                keys={"image": [f"i{i}" for i in range(4)]})
            run.flush()  # one part file per table at every step: the small files compaction is for
    """
)
TABLES = ("scalars", "batches", "predictions", "pred_digests")


def _write_run(root: Path, steps: int) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(rank), str(steps)], stderr=subprocess.PIPE
        )
        for rank in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()


def _part_files(root: Path) -> list[Path]:
    return [p for t in TABLES for p in (root / "ddp" / t).rglob("*.parquet")]


def _answers(root: Path) -> dict[str, object]:
    con = lakelog.connect(root)
    out: dict[str, object] = {}
    for table in TABLES:
        out[f"{table} count"] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        out[f"{table} per partition"] = con.execute(
            f"SELECT epoch, rank, count(*), min(step), max(step), sum(hash(step)) FROM {table} "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    out["scalars content"] = con.execute("SELECT sum(hash(step, name, value, time)) FROM scalars").fetchall()
    out["predictions content"] = con.execute(
        "SELECT sum(hash(step, sample_idx, label, logits, image)) FROM predictions"
    ).fetchall()
    out["batches content"] = con.execute(
        "SELECT sum(hash(step, sample_ids, ids_hash)) FROM batches"
    ).fetchall()
    out["columns"] = {t: con.execute(f"DESCRIBE {t}").fetchall() for t in TABLES}
    for name, params in (
        ("run_list", {}),
        ("rank_sample_overlap", {"run": "ddp"}),
        ("rank_desync", {"run": "ddp"}),
    ):
        try:
            out[name] = lakelog.query(name, root=root, **params).to_dicts()
        except lakelog.QueryError as exc:  # a query another helper is changing: compare its error
            out[name] = str(exc)
    return out


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "lake"
    _write_run(root, steps=260)
    return root


@pytest.mark.slow
def test_compaction_of_a_multi_rank_multi_epoch_run_cuts_files_100x_with_identical_answers(
    big_lake: Path, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    shutil.copytree(big_lake, root)
    before_files = len(_part_files(root))
    assert before_files >= 2000
    before = _answers(root)
    result = lakelog.compact(root)
    after_files = len(_part_files(root))
    assert after_files == len(TABLES) * 2 * 2  # one file per table, epoch and rank
    assert before_files / after_files >= 100, (before_files, after_files)
    assert result.files_before == before_files and result.files_after == after_files
    assert _answers(root) == before
    assert not (root / "ddp" / STAGING_DIR).exists()
    assert lakelog.compact(root).partitions == 0  # nothing left to merge
    assert _answers(root) == before


@pytest.fixture(scope="module")
def kill_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kill") / "lake"
    _write_run(root, steps=60)
    return root


COMPACT = "import sys, lakelog; lakelog.compact(sys.argv[1]); print('done')"


def _counts_plain(root: Path) -> dict[str, tuple[int, int, int]]:
    """Rows per table as DuckDB, polars and pyarrow count them over the folders, knowing nothing of lakelog."""
    out = {}
    for table in TABLES:
        pattern = str(root / "ddp" / table / "**" / "*.parquet")
        by_duckdb = (
            duckdb.connect().execute("SELECT count(*) FROM read_parquet($p)", {"p": pattern}).fetchone()[0]
        )
        by_polars = pl.scan_parquet(pattern, hive_partitioning=True).select(pl.len()).collect().item()
        by_arrow = pads.dataset(root / "ddp" / table, format="parquet", partitioning="hive").count_rows()
        out[table] = (by_duckdb, by_polars, by_arrow)
    return out


def _counts_lakelog(root: Path) -> dict[str, tuple[int, int, int]]:
    """Rows per table through lakelog's listing: its DuckDB views, and polars and pyarrow over its files."""
    con = lakelog.connect(root)
    files = scan_lake(locate(root)).files
    out = {}
    for table in TABLES:
        by_duckdb = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        by_polars = pl.scan_parquet(files[table]).select(pl.len()).collect().item()
        by_arrow = pads.dataset(files[table], format="parquet").count_rows()
        out[table] = (by_duckdb, by_polars, by_arrow)
    return out


@pytest.mark.slow
def test_kill_9_of_compact_at_random_points_keeps_every_row_exactly_once(
    kill_lake: Path, tmp_path: Path
) -> None:
    expected = {t: (n, n, n) for t, n in ((t, c[0]) for t, c in _counts_plain(kill_lake).items())}
    assert all(n > 0 for n, _, _ in expected.values())
    probe = tmp_path / "probe"
    shutil.copytree(kill_lake, probe)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", COMPACT, str(probe)], check=True, capture_output=True)
    full = time.perf_counter() - started
    rng = random.Random(13)
    delays = sorted(rng.uniform(0.2, 0.8 * full) for _ in range(14))  # python's start-up is ~0.3 s of it
    interrupted = 0
    for i, delay in enumerate(delays):
        root = tmp_path / f"lake{i}"
        shutil.copytree(kill_lake, root)
        proc = subprocess.Popen([sys.executable, "-c", COMPACT, str(root)], stdout=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        interrupted += b"done" not in out
        assert _counts_lakelog(root) == expected, f"kill after {delay:.2f} s"
        # on local disk the commit is one exchange of folders: engines that know nothing of lakelog
        # count every row once too, before any recovery
        assert _counts_plain(root) == expected, f"kill after {delay:.2f} s, plain engines"
        result = compact(root)  # recovers the interrupted compaction, then finishes the job
        assert _counts_plain(root) == expected, f"kill after {delay:.2f} s, then recovered"
        assert _counts_lakelog(root) == expected
        assert not (root / "ddp" / STAGING_DIR).exists()
        assert len(_part_files(root)) == len(TABLES) * 4, result
    assert interrupted >= 10, f"only {interrupted} of {len(delays)} kills landed before compact finished"


@pytest.mark.slow
def test_readers_during_compaction_count_every_row_once(kill_lake: Path, tmp_path: Path) -> None:
    root = tmp_path / "lake"
    shutil.copytree(kill_lake, root)
    expected = _counts_lakelog(root)
    con = lakelog.connect(root)  # one connection held across the compaction, as a notebook would
    seen: list[object] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                fresh = lakelog.connect(root).execute("SELECT count(*) FROM scalars").fetchall()[0][0]
                held = con.execute("SELECT count(*) FROM scalars").fetchall()[0][0]
                plain = _counts_plain(root)["scalars"][0]
                seen.append((fresh, held, plain))
            except (
                duckdb.IOException,
                OSError,
                pl.exceptions.ComputeError,
            ) as exc:  # deleted between listing and reading
                seen.append(("io", str(exc).splitlines()[0]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        compact(root)
    finally:
        stop.set()
        reader.join()
    n = expected["scalars"][0]
    counted = [s for s in seen if s[0] != "io"]
    assert counted and all(s == (n, n, n) for s in counted), [s for s in counted if s != (n, n, n)][:5]
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (n,)  # the held connection follows


def test_live_run_compacts_only_older_epochs_and_committed_parts(tmp_path: Path) -> None:
    run = lakelog.init(tmp_path, name="live", flush_every_s=3600)
    for step in range(12):
        run.log({"loss": float(step)}, step=step, epoch=step // 4)
        run.flush()
    result = compact(tmp_path)
    folder = tmp_path / "live" / "scalars"
    per_epoch = {e.name: len(list(e.rglob("*.parquet"))) for e in sorted(folder.iterdir())}
    assert per_epoch == {"epoch=0": 1, "epoch=1": 1, "epoch=2": 4}, (per_epoch, result)
    run.log({"loss": 99.0}, step=12, epoch=2)
    run.finish()
    con = lakelog.connect(tmp_path)
    assert con.execute("SELECT count(*), sum(step) FROM scalars").fetchone() == (13, sum(range(13)))
    compact(tmp_path)
    assert [len(list(e.rglob("*.parquet"))) for e in sorted(folder.iterdir())] == [1, 1, 1]
    assert lakelog.connect(tmp_path).execute("SELECT count(*), sum(step) FROM scalars").fetchone() == (
        13,
        sum(range(13)),
    )


def test_unreadable_part_is_left_as_it_is(tmp_path: Path) -> None:
    with lakelog.init(tmp_path, name="a") as run:
        for step in range(5):
            run.log({"loss": float(step)}, step=step)
            run.flush()
    parts = sorted((tmp_path / "a" / "scalars").rglob("*.parquet"))
    parts[1].write_bytes(os.urandom(200))
    compact(tmp_path)
    left = sorted((tmp_path / "a" / "scalars").rglob("*.parquet"))
    assert parts[1] in left and len(left) == 2
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchone() == (4,)


def test_bad_arguments_name_themselves(tmp_path: Path) -> None:
    with lakelog.init(tmp_path, name="a") as run:
        run.log({"loss": 1.0}, step=0)
    with pytest.raises(lakelog.RunNotFoundError, match="'nope'"):
        compact(tmp_path, ["a", "nope"])
    with pytest.raises(lakelog.RunNotFoundError, match="does not exist"):
        compact(tmp_path / "missing")
    with pytest.raises(lakelog.InvalidArgumentError, match="max_file_bytes"):
        compact(tmp_path, max_file_bytes=0)
