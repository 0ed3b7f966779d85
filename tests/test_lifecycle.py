"""A run's lifecycle with real processes: claims refuse a second writer, SIGKILL leaves a crashed run whose
tables agree on the committed step, and a resume continues after it without duplicates."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime

import duckdb
import pytest
import torch

import lakelog
from lakelog.errors import InvalidArgumentError, RunInUseError
from lakelog.lake import lifecycle
from lakelog.lake.layout import Lake
from lakelog.read.diff import diff_runs

BATCH = 8

TRAIN = textwrap.dedent(
    """
    import sys, torch, lakelog
    root, name, mode, total = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    run = lakelog.init(root, name=name, mode=mode, flush_every_s=0.01)
    print("resumed_from", run.resumed_from, flush=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = 0 if run.resumed_from is None else run.resumed_from + 1
    for step in range(total):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(BATCH, 4, generator=g), torch.randint(0, 3, (BATCH,), generator=g)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step < start:  # replayed silently up to the committed step: the state is the same
            continue
        run.log_batch(sample_ids=[step * BATCH + i for i in range(BATCH)], inputs=x, step=step)
        run.log_predictions(logits.detach(), step=step, labels=y)
        run.log({"loss": loss.detach()}, step=step)
        print("step", step, flush=True)
    run.finish()
    print("done", flush=True)
    """
).replace("BATCH", str(BATCH))


def _start(root, name: str, mode: str, total: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, str(root), name, mode, str(total)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _counts(run_dir, table: str) -> dict[int, int]:
    pattern = os.path.join(run_dir, table, "**", "*.parquet")
    if not os.path.isdir(os.path.join(run_dir, table)):
        return {}
    rows = duckdb.execute(
        "SELECT step, count(*) FROM read_parquet($p) GROUP BY step", {"p": pattern}
    ).fetchall()
    return dict(rows)


EXPECTED = {"predictions": BATCH, "scalars": 1, "batches": 1}


def _kill_at_random(child: subprocess.Popen, rng: random.Random) -> int | None:
    """Let the child log a random number of steps, then SIGKILL it at a random moment of the next one."""
    first = child.stdout.readline().split()
    assert first[0] == "resumed_from", first
    resumed = None if first[1] == "None" else int(first[1])
    target = rng.randint(1, 8)
    seen = 0
    for line in child.stdout:
        if line.startswith("step"):
            seen += 1
            if seen >= target:
                break
    time.sleep(rng.random() * 0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return resumed


def _check_crashed(root, name: str) -> int:
    state = lifecycle.run_state(Lake.open(root), name)
    assert state.status == "crashed", state
    committed = state.committed[0]
    run_dir = os.path.join(root, name)
    for table, per_step in EXPECTED.items():
        counts = _counts(run_dir, table)
        for step in range(committed + 1 if committed is not None else 0):  # every table holds every step ≤ S
            assert counts.get(step) == per_step, (table, step, counts.get(step), committed)
    return committed


def _check_complete(root, name: str, total: int) -> None:
    run_dir = os.path.join(root, name)
    for table, per_step in EXPECTED.items():
        assert _counts(run_dir, table) == dict.fromkeys(range(total), per_step), table  # no step twice
    state = lifecycle.run_state(Lake.open(root), name)
    assert state.status == "finished" and state.hide_after == {}


def _finish(child: subprocess.Popen) -> None:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "done" in out


@pytest.mark.slow
def test_sigkill_then_resume_continues_after_the_committed_step(tmp_path):
    total = 60
    child = _start(tmp_path, "killed", "error", total)
    _kill_at_random(child, random.Random(1))
    committed = _check_crashed(tmp_path, "killed")
    child = _start(tmp_path, "killed", "resume", total)
    assert child.stdout.readline().split() == ["resumed_from", str(committed)]
    _finish(child)
    _check_complete(tmp_path, "killed", total)
    _finish(_start(tmp_path, "reference", "error", total))
    assert diff_runs(tmp_path, "killed", "reference").identical
    assert diff_runs(tmp_path, "killed", "killed").identical


@pytest.mark.slow
def test_twenty_sigkills_at_random_points_lose_nothing_committed_and_duplicate_nothing(tmp_path):
    total, rng = 160, random.Random(20)
    resumed_from = []
    mode = "error"
    for _ in range(20):
        child = _start(tmp_path, "chain", mode, total)
        resumed_from.append(_kill_at_random(child, rng))
        committed = _check_crashed(tmp_path, "chain")
        if len(resumed_from) > 1:
            assert committed is None or resumed_from[-1] is None or committed >= resumed_from[-1]
        mode = "resume"
    child = _start(tmp_path, "chain", "resume", total)
    _finish(child)
    _check_complete(tmp_path, "chain", total)
    _finish(_start(tmp_path, "reference", "error", total))
    con = lakelog.connect(tmp_path)
    assert diff_runs(con, "chain", "chain").identical
    assert diff_runs(con, "chain", "reference").identical
    assert con.execute("SELECT status FROM runs WHERE run = 'chain'").fetchone() == ("finished",)


HOLD = textwrap.dedent(
    """
    import sys, lakelog
    run = lakelog.init(sys.argv[1], name="held", flush_every_s=0.05)
    run.log({"loss": 1.0}, step=0)
    print("ready", flush=True)
    sys.stdin.readline()
    run.finish()
    """
)


@pytest.mark.slow
def test_a_second_writer_in_another_process_is_refused_in_every_mode(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "ready"
    try:
        for mode in ("resume", "overwrite"):
            with pytest.raises(
                RunInUseError, match=rf"run 'held' rank 0 is being written by pid {holder.pid} on host"
            ):
                lakelog.init(tmp_path, name="held", mode=mode)
        with pytest.raises(lakelog.RunExistsError):
            lakelog.init(tmp_path, name="held")
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, lakelog; lakelog.init(sys.argv[1], name='held', mode='resume')",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
        )
        assert (
            second.returncode != 0 and "RunInUseError" in second.stderr and str(holder.pid) in second.stderr
        )
        assert lifecycle.run_state(Lake.open(tmp_path), "held").status == "running"
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    with lakelog.init(tmp_path, name="held", mode="resume") as run:  # the holder finished: free again
        assert run.resumed_from == 0
        run.log({"loss": 0.5}, step=1)
    assert _counts(tmp_path / "held", "scalars") == {0: 1, 1: 1}


@pytest.mark.slow
def test_a_stale_claim_of_a_dead_process_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "ready"
    holder.kill()
    holder.wait()
    assert lifecycle.run_state(Lake.open(tmp_path), "held").status == "crashed"
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        run = lakelog.init(tmp_path, name="held", mode="resume")
    assert any("taking over the claim" in r.getMessage() for r in caplog.records)
    assert lifecycle.run_state(Lake.open(tmp_path), "held").status == "running"
    run.finish()


def _foreign_claim(run_dir, heartbeat: float) -> None:
    path = lifecycle.claim_path(str(run_dir), 0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    claim = {
        "pid": 1,
        "host": "another-host.example",
        "started": "2026-01-01T00:00:00+00:00",
        "heartbeat": heartbeat,
    }
    with open(path, "w") as f:
        json.dump(claim, f)


def test_a_claim_from_another_host_is_taken_over_only_after_its_heartbeat_expires(tmp_path):
    with lakelog.init(tmp_path, name="shared") as run:
        run.log({"loss": 1.0}, step=0)
    _foreign_claim(tmp_path / "shared", time.time() - 5)
    with pytest.raises(
        RunInUseError, match=r"another host.*expires 300 s after its last heartbeat.*delete .*rank=0.json"
    ):
        lakelog.init(tmp_path, name="shared", mode="resume")
    assert lifecycle.run_state(Lake.open(tmp_path), "shared").status == "running"
    _foreign_claim(tmp_path / "shared", time.time() - lifecycle.STALE_AFTER_S - 1)
    assert lifecycle.run_state(Lake.open(tmp_path), "shared").status == "finished"
    with lakelog.init(tmp_path, name="shared", mode="resume") as run:
        run.log({"loss": 0.5}, step=1)
    assert _counts(tmp_path / "shared", "scalars") == {0: 1, 1: 1}


def test_periodic_flush_commits_only_whole_steps(tmp_path):
    run = lakelog.init(tmp_path, name="commit", flush_every_s=0.02)
    for step in range(3):
        run.log_predictions(torch.ones(2, 2), step=step)
        run.log({"loss": 1.0}, step=step)
    deadline = time.monotonic() + 10
    commit = None
    while time.monotonic() < deadline:  # the periodic flush runs on the writer thread
        commit = lifecycle.read_commit(str(tmp_path / "commit"), 0)
        if commit is not None and commit.step is not None:
            break
        time.sleep(0.02)
    assert commit.step == 1 and not commit.final  # step 2 may still get rows: held back
    assert set(_counts(tmp_path / "commit", "predictions")) == {0, 1}
    run.flush()  # an explicit flush commits everything
    assert lifecycle.read_commit(str(tmp_path / "commit"), 0).step == 2
    run.finish()
    final = lifecycle.read_commit(str(tmp_path / "commit"), 0)
    assert final.step == 2 and final.final
    assert not os.path.exists(lifecycle.claim_path(str(tmp_path / "commit"), 0))


def test_resume_bad_input(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lakelog"):
        run = lakelog.init(tmp_path, name="new", mode="resume")  # does not exist: started, with a warning
    assert run.resumed_from is None
    assert any("does not exist" in r.getMessage() for r in caplog.records)
    for step in range(5):
        run.log({"loss": 1.0}, step=step)
    run.finish()
    run = lakelog.init(tmp_path, name="new", mode="resume")  # a finished run: allowed
    assert run.resumed_from == 4 and run.step == 4
    with pytest.raises(
        InvalidArgumentError, match=r"step: 3 is not after step 4, the step run 'new' was resumed from"
    ):
        run.log({"loss": 1.0}, step=3)
    with pytest.raises(InvalidArgumentError, match=r"step: 4 is not after step 4"):
        run.log({"loss": 1.0}, step=4)
    run.log({"loss": 0.5}, step=5)
    run.finish()
    assert _counts(tmp_path / "new", "scalars") == dict.fromkeys(range(6), 1)  # nothing written was lost
    info = json.loads((tmp_path / "new" / "run.json").read_text())
    assert info["status"] == "finished" and info["resumes"][0]["after_step"] == 4


def test_overwrite_is_refused_while_another_jobs_rank_is_live_but_not_for_peers(tmp_path):
    with lakelog.init(tmp_path, name="ddp") as run:
        run.log({"loss": 1.0}, step=0)
    path = lifecycle.claim_path(str(tmp_path / "ddp"), 1)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    live = {"pid": os.getpid(), "host": lifecycle.hostname(), "heartbeat": time.time()}
    with open(path, "w") as f:  # rank 1 of a job that started an hour ago, still running
        json.dump({**live, "started": "2026-01-01T00:00:00+00:00"}, f)
    with pytest.raises(RunInUseError, match=r"cannot overwrite it while rank 1 is being written by pid"):
        lakelog.init(tmp_path, name="ddp", mode="overwrite")
    assert _counts(tmp_path / "ddp", "scalars") == {0: 1}  # nothing removed
    with open(path, "w") as f:  # rank 1 of this job, started with it
        json.dump({**live, "started": datetime.now(UTC).isoformat()}, f)
    with lakelog.init(tmp_path, name="ddp", mode="overwrite") as run:
        run.log({"loss": 0.5}, step=0)
    assert _counts(tmp_path / "ddp", "scalars") == {0: 1}
