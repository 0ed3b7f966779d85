"""The read side works without torch: analysing runs must not pay torch's import time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import lakelog


def test_connect_and_query_leave_torch_unimported(tmp_path):
    with lakelog.init(tmp_path, name="a") as run:
        run.log({"loss": 1.0}, step=0)
    script = textwrap.dedent(
        f"""
        import sys
        import lakelog
        con = lakelog.connect({str(tmp_path)!r})
        assert con.execute("SELECT count(*) FROM scalars").fetchone() == (1,)
        from lakelog import querylib, cli
        querylib.library()
        assert "torch" not in sys.modules, "the read side imported torch"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def _modules(package: str) -> list[str]:
    """Every module of a lakelog package, found from its files (importing them is the test's job)."""
    import lakelog as pkg

    base = Path(pkg.__file__).parent
    folder = base.joinpath(*package.split(".")[1:])
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(base.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_read_and_lake_module_imports_without_torch():
    """Each module of lakelog.read and lakelog.lake, imported in one fresh interpreter, leaves torch (and the
    trainer frameworks) unimported; the lake contract also leaves the query engines unimported."""
    read, lake = _modules("lakelog.read"), _modules("lakelog.lake")
    assert len(read) > 20 and len(lake) > 5 and "lakelog.read.dumps.reader" in read
    script = textwrap.dedent(
        """
        import importlib, json, sys
        groups = json.loads(sys.argv[1])
        for name in groups["lake"]:
            importlib.import_module(name)
        engines = sorted(m for m in ("duckdb", "polars", "altair") if m in sys.modules)
        for name in groups["read"]:
            importlib.import_module(name)
        heavy = sorted(m for m in ("torch", "lightning", "pytorch_lightning", "transformers") if m in sys.modules)
        print(json.dumps({"engines_after_lake": engines, "heavy": heavy}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps({"lake": lake, "read": read})],
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"engines_after_lake": [], "heavy": []}, found


def _cli(*args: str):
    from click.testing import CliRunner

    from lakelog.cli import cli

    return CliRunner().invoke(cli, list(args))


def test_sql_is_read_only_unless_unsafe(tmp_path):
    root = tmp_path / "lake"
    with lakelog.init(root, name="a") as run:
        run.log({"loss": 1.0}, step=0)
    outside = tmp_path / "outside.csv"
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    inside = root / "a" / "copied.csv"
    refused = {
        f"COPY (SELECT * FROM scalars) TO '{outside}'": "COPY",
        f"COPY (SELECT 1) TO '{inside}'": "COPY",
        f"EXPORT DATABASE '{tmp_path / 'export'}'": "EXPORT",
        f"ATTACH '{tmp_path / 'x.db'}' AS x": "ATTACH",
        "CREATE TABLE t AS SELECT 1": "CREATE",
        "INSTALL httpfs": "",
        "LOAD httpfs": "",
        "SET enable_external_access = true": "SET",
        f"SELECT * FROM read_text('{secret}')": "Permission",
        f"SELECT * FROM read_csv('{secret}')": "Permission",
        f"SELECT * FROM read_text('{root / 'a' / 'run.json'}')": "Permission",  # not a part file either
        "SELECT * FROM glob('/etc/*')": "Permission",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{outside}'": "EXPLAIN",
    }
    for sql, word in refused.items():
        result = _cli("sql", sql, "--root", str(root))
        assert result.exit_code == 2, (sql, result.output)
        assert word in result.output and "Traceback" not in result.output, (sql, result.output)
    assert not outside.exists() and not inside.exists() and not (tmp_path / "x.db").exists()
    assert not (tmp_path / "export").exists()
    ok = _cli("sql", "SELECT count(*) AS n FROM scalars", "--root", str(root), "--format", "csv")
    assert ok.exit_code == 0 and ok.output.splitlines()[-1] == "1", ok.output
    explained = _cli("sql", "EXPLAIN SELECT * FROM scalars", "--root", str(root), "--format", "csv")
    assert explained.exit_code == 0, explained.output
    unsafe = _cli("sql", f"COPY (SELECT * FROM scalars) TO '{outside}'", "--root", str(root), "--unsafe")
    assert unsafe.exit_code == 0 and outside.exists(), unsafe.output


def test_read_only_connect_cannot_be_unlocked(tmp_path):
    import duckdb
    import pytest

    with lakelog.init(tmp_path, name="a") as run:
        run.log({"loss": 1.0}, step=0)
    con = lakelog.connect(tmp_path, read_only=True)
    assert con.execute("SELECT count(*) FROM scalars").fetchone() == (1,)
    with pytest.raises(duckdb.Error):
        con.execute("SET enable_external_access = true")
    with pytest.raises(duckdb.Error):
        con.execute("SET lock_configuration = false")
    with pytest.raises(duckdb.Error):
        con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    assert not (tmp_path / "out.csv").exists()
    full = lakelog.connect(tmp_path)  # the default: the caller's own full DuckDB
    full.execute(f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'")
    assert (tmp_path / "out.csv").exists()


def test_one_scan_per_table_and_a_filter_on_run_or_rank_skips_other_files(tmp_path):
    import duckdb
    import pytest

    for name in ("a", "b"):
        for rank in (0, 1):
            with lakelog.init(tmp_path, name=name, rank=rank, world_size=2) as run:
                for step in range(3):
                    run.log({"loss": float(step)}, step=step)
                    run.flush()
    # scramble the data pages of every part of run b, rank 1 (magic bytes and footer intact: only a
    # reader that opens the pages notices)
    for part in (tmp_path / "b" / "scalars" / "epoch=0" / "rank=1").glob("*.parquet"):
        _scramble_pages(part)
    con = lakelog.connect(tmp_path)
    plan = con.execute("EXPLAIN SELECT count(*) FROM scalars").fetchall()[0][1]
    assert plan.count("READ_PARQUET") == 1  # one scan over both runs, not a view per run
    assert con.execute("SELECT count(*) FROM scalars WHERE run = 'a'").fetchone() == (6,)
    assert con.execute("SELECT count(*) FROM scalars WHERE rank = 0").fetchone() == (6,)
    assert con.execute("SELECT count(*) FROM scalars WHERE run = 'b' AND rank = 0").fetchone() == (3,)
    with pytest.raises(duckdb.Error):  # the damage is there for a query that reads it
        con.execute("SELECT sum(step) FROM scalars WHERE run = 'b'").fetchall()


def _scramble_pages(part):
    """Flip the bytes of a part file's first column chunk, leaving its magic bytes and footer whole."""
    import pyarrow.parquet as pq

    chunk = pq.read_metadata(part).row_group(0).column(0)
    data = bytearray(part.read_bytes())
    start = chunk.data_page_offset
    for i in range(start, start + chunk.total_compressed_size):
        data[i] ^= 0xFF
    part.write_bytes(bytes(data))


def test_a_corrupt_footer_behind_valid_magic_bytes_is_left_out_with_a_warning(tmp_path, caplog):
    import logging

    for name in ("a", "b"):
        with lakelog.init(tmp_path, name=name) as run:
            for step in range(3):
                run.log({"loss": float(step)}, step=step)
                run.flush()
    part = sorted((tmp_path / "b" / "scalars").rglob("*.parquet"))[0]
    data = bytearray(part.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(len(data) - 8 - footer, len(data) - 8):  # the footer's bytes, magic kept
        data[i] ^= 0x5A
    part.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(tmp_path)
        counts = dict(con.execute("SELECT run, count(*) FROM scalars GROUP BY run").fetchall())
    assert counts == {"a": 3, "b": 2}
    assert any(str(part) in r.getMessage() and "corrupt footer" in r.getMessage() for r in caplog.records)


def test_a_table_is_listed_when_a_query_first_reads_it(tmp_path, caplog):
    import logging

    import torch

    for name in ("a", "b"):
        with lakelog.init(tmp_path, name=name) as run:
            for step in range(3):
                run.log({"loss": float(step)}, step=step)
                run.log_predictions(torch.zeros(2, 3), labels=torch.tensor([0, 1]), step=step)
                run.flush()
    part = sorted((tmp_path / "b" / "predictions").rglob("*.parquet"))[-1]
    part.write_bytes(b"not parquet at all")
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(tmp_path)  # binds each view to run a's files
        assert con.execute("SELECT count(*) FROM scalars").fetchone() == (6,)
        assert not [
            r for r in caplog.records if str(part) in r.getMessage()
        ]  # b's predictions: not listed yet
        assert con.execute("SELECT run, count(*) FROM predictions GROUP BY run ORDER BY run").fetchall() == [
            ("a", 6),
            ("b", 4),
        ]
    assert [r for r in caplog.records if str(part) in r.getMessage() and "PAR1" in r.getMessage()]


def test_cursors_of_a_connection_read_its_views_from_other_threads(tmp_path):
    """What connect makes lives in the connection's database: cursors in other threads read the same
    runs and tables as the connection does (the runs table is one connect built, not a part file)."""
    from concurrent.futures import ThreadPoolExecutor

    for name in ("a", "b"):
        with lakelog.init(tmp_path, name=name) as run:
            for step in range(3):
                run.log({"loss": float(step)}, step=step)
    con = lakelog.connect(tmp_path)
    sql = "SELECT r.run, r.status, count(s.step) FROM runs r LEFT JOIN scalars s USING (run) GROUP BY ALL ORDER BY 1"
    expected = con.execute(sql).fetchall()
    assert expected == [("a", "finished", 3), ("b", "finished", 3)]

    def on_cursor(_: int) -> list:
        cursor = con.cursor()
        try:
            return cursor.execute(sql).fetchall()
        finally:
            cursor.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(pool.map(on_cursor, range(4))) == [expected] * 4
