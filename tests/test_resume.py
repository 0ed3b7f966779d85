"""Resumed runs against the uninterrupted one, each side trained in its own processes as a user's job is.

``full`` trains 16 steps in one process. Each other run trains 10 steps in one process, which saves a
checkpoint and ends, then a second process resumes it (``mode="resume"``) and trains steps 10-15,
restoring everything, or forgetting one part as buggy resume code does (tests/resume_worker.py).
``diff`` must call the correct resume identical and name what each buggy one did not restore, at the
resume step, the same from the CLI, from a lake root, from run folders and from a connection.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import lakelog
from lakelog.cli import cli
from lakelog.read.diff import diff_runs

WORKER = Path(__file__).with_name("resume_worker.py")
STEPS, STOP = 16, 10
VARIANTS = {
    "ok": "",
    "no_optimizer": "optimizer",
    "no_loader": "loader",
    "no_rng": "rng",
    "no_scheduler": "scheduler",
}

pytestmark = pytest.mark.slow


def _job(root: Path, name: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(WORKER), str(root), name, "--steps", str(STEPS), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    _job(root, "full")
    for name, forget in VARIANTS.items():
        ckpt = str(root.parent / f"{root.name}-{name}.pt")
        _job(root, name, "--stop-after", str(STOP), "--checkpoint", ckpt)
        _job(root, name, "--resume", ckpt, "--forget", forget)
    ckpt = str(root.parent / f"{root.name}-killed.pt")
    killed = ["killed", "--steps", str(STEPS), "--stop-after", str(STOP), "--checkpoint", ckpt, "--kill"]
    done = subprocess.run(
        [sys.executable, str(WORKER), str(root), *killed],
        capture_output=True,
        timeout=240,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    _job(root, "killed", "--resume", ckpt)
    return root


@pytest.fixture(scope="module")
def con(root: Path):
    return lakelog.connect(root)


def _point(r) -> dict:
    [point] = r.resume
    assert (point["run"], point["side"], point["step"]) == (r.run_b, "B", STOP)
    return point


def test_the_resumed_process_does_not_capture_the_initial_state_again(con) -> None:
    rows = con.execute(
        "SELECT run, count(DISTINCT step) FROM params WHERE kind LIKE 'initial:%' GROUP BY run ORDER BY run"
    ).fetchall()
    assert rows == [(name, 1) for name in sorted(["full", *VARIANTS])]  # killed: lost with its unflushed rows
    steps = con.execute(
        "SELECT DISTINCT step FROM params WHERE run = 'ok' AND kind LIKE 'resume:%'"
    ).fetchall()
    assert steps == [(STOP - 1,)]  # the resume point: the state after the last step before the interruption


def test_a_correct_resume_is_identical_and_says_so(con, root: Path) -> None:
    r = diff_runs(con, "full", "ok")
    assert r.identical and r.first_layer is None, r.layers
    point = _point(r)
    assert point["identical"] and point["not_restored"] == []
    assert {p: v["status"] for p, v in point["restored"].items()} == dict.fromkeys(
        ("weights", "optimizer", "lr_scheduler", "rng", "loader"), "restored"
    )
    assert "interrupted process" in point["restored"]["weights"]["detail"]
    result = CliRunner().invoke(cli, ["diff", "full", "ok", "--root", str(root)])
    assert result.exit_code == 0, result.output
    assert "identical" in result.output and "resume" in result.output.lower()


def test_a_resume_without_optimizer_state_is_named_at_the_resume_step(con) -> None:
    r = diff_runs(con, "full", "no_optimizer")
    assert (r.first_layer, r.first_step) == ("weights", STOP)
    point = _point(r)
    assert "optimizer" in point["not_restored"] and not point["identical"]
    assert point["restored"]["optimizer"]["step"] == STOP
    assert "momentum" in point["restored"]["optimizer"]["detail"]
    for part in ("weights", "rng", "loader"):
        assert point["restored"][part]["status"] == "restored", (part, point["restored"][part])


def test_a_resume_without_the_loader_position_names_the_replayed_step(con) -> None:
    r = diff_runs(con, "full", "no_loader")
    assert (r.first_layer, r.first_step) == ("batch_order", STOP)
    point = _point(r)
    loader = point["restored"]["loader"]
    assert loader["status"] == "not restored" and loader["step"] == STOP
    assert point["replays_a_step"] == 0 and "batch of step 0" in loader["detail"]
    assert point["restored"]["weights"]["status"] == "restored"
    assert point["restored"]["optimizer"]["status"] == "restored"


def test_a_resume_without_rng_states_is_named_at_the_resume_step(con) -> None:
    r = diff_runs(con, "full", "no_rng")
    assert (r.first_layer, r.first_step) == ("rng", STOP)
    point = _point(r)
    assert point["restored"]["rng"]["status"] == "not restored" and point["restored"]["rng"]["step"] == STOP
    assert "torch" in point["restored"]["rng"]["detail"]
    assert point["restored"]["loader"]["status"] == "restored"


def test_a_resume_without_the_scheduler_names_the_learning_rate(con) -> None:
    r = diff_runs(con, "full", "no_scheduler")
    point = _point(r)
    lr = point["restored"]["lr_scheduler"]
    assert lr["status"] == "not restored" and lr["step"] == 12, lr  # StepLR decays at 12 in full, at 14 here
    assert (r.first_layer, r.first_step) == ("weights", 12)
    assert point["restored"]["optimizer"]["status"] == "restored"


@pytest.mark.parametrize("how", ["root", "folders", "connection", "cli"])
def test_every_entry_point_reports_the_resume(root: Path, con, how: str) -> None:
    if how == "cli":
        result = CliRunner().invoke(cli, ["diff", str(root / "full"), str(root / "no_optimizer"), "--json"])
        assert result.exit_code == 1, result.output
        resume = json.loads(result.output)["resume"]
    else:
        target = {"root": root, "folders": root.parent, "connection": con}[how]
        a, b = (
            ("full", "no_optimizer") if how != "folders" else (str(root / "full"), str(root / "no_optimizer"))
        )
        resume = diff_runs(target, a, b).resume
    assert [(p["step"], p["not_restored"]) for p in resume] == [(STOP, ["optimizer"])]


def test_a_job_killed_after_its_checkpoint_resumes_identical(con) -> None:
    r = diff_runs(
        con, "full", "killed"
    )  # SIGKILL: the first process's unflushed steps never reached the lake
    assert r.first_layer is None and any("different lengths" in n for n in r.notes)
    point = _point(r)
    assert point["identical"] and point["not_restored"] == []
    assert "reference run" in point["restored"]["weights"]["detail"]  # its own step 9 was lost
