"""Readers skip, never hide: damaged files are left out with a warning, the rest of the lake reads.

Real runs (real torch model, real writer, real Parquet), then real damage on disk: random bytes,
truncation, empty files, unreadable files, invalid run.json files, run folders whose names are glob
patterns, roots that are files. Every command is run as a user would (the ``lakelog`` CLI in a
subprocess) and must end without a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch

import lakelog
from lakelog.read.check import check

STEPS = 6


def _train(root: Path, name: str, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with lakelog.init(root, name=name, seed=seed) as run:
        for step in range(STEPS):
            x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log_batch(sample_ids=[f"s{step}-{i}" for i in range(5)], step=step)
            run.log_predictions(
                out.detach(), step=step, labels=y, keys={"image": [f"i{i}" for i in range(5)]}
            )
            run.log({"loss": loss.item()}, step=step)
            run.flush()  # one part file per table and step


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    for name in ("a", "b", "c"):
        _train(root, name, seed=1)  # same seed: identical runs
    return root


@pytest.fixture
def lake(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    shutil.copytree(pristine, root)
    return root


def _parts(root: Path, run: str, table: str) -> list[Path]:
    return sorted((root / run / table).rglob("*.parquet"))


def _rows(path: Path) -> int:
    return duckdb.connect().execute("SELECT count(*) FROM read_parquet($p)", {"p": str(path)}).fetchone()[0]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from lakelog.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LAKELOG_PROGRESS": "0"},
    )


def _no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def _damage_random(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def _damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def _damage_unreadable(path: Path) -> None:
    # chmod 000 does not stop root (the CI user here); a link to nothing is unreadable for everyone
    path.unlink()
    path.symlink_to(path.parent / "gone.bin")


DAMAGES = {
    "random": (_damage_random, "no PAR1 header"),
    "truncated": (_damage_truncate, "truncated"),
    "empty": (_damage_empty, "empty"),
    "unreadable": (_damage_unreadable, "unreadable"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_part_is_left_out_with_a_warning_and_the_rest_reads(
    lake: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = _parts(lake, "b", "scalars")[2]
    lost = _rows(target)
    total = sum(_rows(p) for p in _parts(lake, "b", "scalars"))
    hurt, reason = DAMAGES[damage]
    hurt(target)
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(lake)
        counts = dict(con.execute("SELECT run, count(*) FROM scalars GROUP BY run").fetchall())
    assert counts == {"a": total, "b": total - lost, "c": total}  # every other row of the same table
    warnings = [r.getMessage() for r in caplog.records if str(target) in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0], caplog.text
    # other tables of the damaged run are whole
    assert con.execute("SELECT count(*) FROM predictions WHERE run = 'b'").fetchone() == (5 * STEPS,)

    report = check(lake)
    assert [p.path for p in report.problems] == [str(target)] and not report.ok
    proc = _cli("check", str(lake))
    assert proc.returncode == 1 and str(target) in proc.stdout, proc.stdout + proc.stderr
    _no_traceback(proc)


def test_corrupt_pages_inside_a_valid_frame_are_found_by_check(lake: Path) -> None:
    target = _parts(lake, "c", "predictions")[0]
    data = bytearray(target.read_bytes())
    for i in range(8, len(data) // 2):  # keep the magic bytes and footer, scramble the data pages
        data[i] ^= 0x5A
    target.write_bytes(bytes(data))
    report = check(lake)
    assert [p.path for p in report.problems] == [str(target)], str(report)
    assert "cannot be decoded" in report.problems[0].reason
    assert check(lake, deep=False).ok  # the cheap checks cannot see inside; the deep ones do


RUN_JSONS = {
    "bad json": b'{"name": "b", "status": ',
    "a list": b"[1, 2, 3]",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "not utf-8": b'{"name": "\xff\xfe"}',
}


@pytest.mark.slow  # every command, each in its own process
@pytest.mark.parametrize("kind", sorted(RUN_JSONS))
def test_invalid_run_json_is_left_out_and_every_command_runs(
    lake: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_file = lake / "b" / "run.json"
    run_file.write_bytes(RUN_JSONS[kind])
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(lake)
    assert [r for r in caplog.records if str(run_file) in r.getMessage()], caplog.text
    runs = dict(con.execute("SELECT run, status FROM runs").fetchall())
    assert runs == {"a": "finished", "b": "damaged", "c": "finished"}
    assert con.execute("SELECT count(DISTINCT run) FROM scalars").fetchone() == (3,)  # its data still reads
    assert [p.path for p in check(lake).problems] == [str(run_file)]
    proc = _cli("runs", "--root", str(lake))
    _no_traceback(proc)
    assert proc.returncode == 0 and "damaged" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_every_command_on_a_damaged_lake_ends_without_a_traceback(lake: Path) -> None:
    (lake / "b" / "run.json").write_bytes(RUN_JSONS["a list"])
    (lake / "c" / "run.json").write_bytes(RUN_JSONS["deep nesting"])
    _damage_random(_parts(lake, "a", "scalars")[1])
    _damage_truncate(_parts(lake, "b", "predictions")[0])
    _damage_empty(_parts(lake, "c", "batches")[0])
    for args in (
        ("sql", "SELECT run, count(*) FROM scalars GROUP BY run", "--root", str(lake)),
        ("runs", "--root", str(lake)),
        ("query", "run_list", "--root", str(lake)),
        ("query", "first_divergence", "-p", "run_a", "a", "-p", "run_b", "b", "--root", str(lake)),
        ("diff", "a", "b", "--root", str(lake)),
        ("diff", str(lake / "a"), str(lake / "c")),
        ("doctor", str(lake / "b")),
        ("report", "a", "b", "--root", str(lake), "-o", str(lake.parent / "report.html")),
    ):
        proc = _cli(*args)
        _no_traceback(proc)
        assert proc.returncode in (0, 1), (args, proc.stderr)
        assert "left out" in proc.stderr, (args, proc.stderr)  # the damage is said, not hidden
    proc = _cli("check", str(lake))
    assert proc.returncode == 1 and proc.stdout.count(str(lake)) >= 5, proc.stdout


def test_run_json_field_out_of_range_keeps_the_rest(lake: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_file = lake / "b" / "run.json"
    info = json.loads(run_file.read_text())
    info["seed"] = 2**70
    info["world_size"] = "two"
    run_file.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        con = lakelog.connect(lake)
    row = con.execute("SELECT status, seed, world_size, name FROM runs WHERE run = 'b'").fetchone()
    assert row == ("finished", None, None, "b")
    message = next(r.getMessage() for r in caplog.records if str(run_file) in r.getMessage())
    assert "seed" in message and "int64" in message and "world_size" in message
    proc = _cli("diff", "a", "b", "--root", str(lake))
    _no_traceback(proc)
    assert proc.returncode in (0, 1), proc.stderr


@pytest.mark.slow  # every reader on four lakes
@pytest.mark.parametrize("pattern", ["*", "[ab]", "a?", "{a,b}"])
def test_run_folders_named_like_patterns_read_only_themselves(lake: Path, pattern: str) -> None:
    # init refuses such names now; an old lake may still hold one
    (lake / "c").rename(lake / pattern)
    expected = _rows_of(lake, "a")
    con = lakelog.connect(lake)
    counts = dict(con.execute("SELECT run, count(*) FROM scalars GROUP BY run").fetchall())
    assert counts == {"a": expected, "b": expected, pattern: expected}
    alone = lakelog.connect(lake / pattern)
    assert alone.execute("SELECT DISTINCT run FROM scalars").fetchall() == [(pattern,)]
    assert alone.execute("SELECT count(*) FROM scalars").fetchone() == (expected,)
    proc = _cli("diff", "a", pattern, "--root", str(lake))
    _no_traceback(proc)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # identical runs, no doubled rows


def _rows_of(root: Path, run: str) -> int:
    return sum(_rows(p) for p in _parts(root, run, "scalars"))


def test_root_that_is_a_file_or_missing_is_one_line_naming_it(tmp_path: Path) -> None:
    afile = tmp_path / "notalake.txt"
    afile.write_text("hello")
    missing = tmp_path / "missing"
    for root in (afile, missing):
        with pytest.raises(lakelog.LakelogError, match=str(root)):
            lakelog.connect(root)
        for args in (
            ("sql", "SELECT 1", "--root", str(root)),
            ("check", str(root)),
            ("compact", str(root)),
            ("doctor", str(root)),
        ):
            proc = _cli(*args)
            _no_traceback(proc)
            assert proc.returncode == 2, (args, proc.stderr)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(root) in lines[0], (args, proc.stderr)
