"""A process killed with SIGKILL leaves only whole, readable part files; exit flushes what is buffered."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

import lakelog

CHILD = textwrap.dedent(
    """
    import sys, torch, lakelog
    run = lakelog.init(sys.argv[1], name="killed", flush_every_s=0.02)
    step = 0
    while True:
        for _ in range(20):
            run.log_predictions(torch.randn(256, 2), step=step, labels=torch.zeros(256, dtype=torch.long),
                                keys={"image1": [f"a{i}.jpg" for i in range(256)]})
            run.log({"loss": 1.0 / (step + 1)}, step=step)
            step += 1
        run.flush()
        print(step, flush=True)
    """
)


@pytest.mark.slow  # a child process killed mid-run
def test_sigkill_leaves_only_readable_part_files(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    flushed = 0
    for line in child.stdout:
        flushed = int(line)
        if flushed >= 200:
            break
    child.send_signal(signal.SIGKILL)  # mid-way through logging and writing the next files
    child.wait()
    files = list((tmp_path / "killed").rglob("*.parquet"))
    assert files
    for path in files:
        assert pq.read_table(path).num_rows > 0  # every visible part file is whole
    con = lakelog.connect(tmp_path)
    steps = con.execute("SELECT count(DISTINCT step) FROM predictions").fetchone()[0]
    assert steps >= flushed  # everything flushed before the kill is there
    assert con.execute("SELECT status FROM runs").fetchone() == ("crashed",)  # its writer is gone


@pytest.mark.slow  # a child interpreter
def test_interpreter_exit_writes_what_is_buffered(tmp_path):
    script = textwrap.dedent(
        """
        import sys, torch, lakelog
        run = lakelog.init(sys.argv[1], name="exit", flush_every_s=3600)
        run._writer.group_rows = 64  # row groups are encoded ahead while the run is closed at exit
        for step in range(100):
            run.log({"loss": float(step)}, step=step)
            run.log_batch(sample_ids=list(range(4)), step=step)
            run.log_predictions(torch.ones(4, 3), labels=torch.zeros(4, dtype=torch.long), step=step)
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    con = lakelog.connect(tmp_path)
    assert con.execute("SELECT count(*), max(value) FROM scalars").fetchone() == (100, 99.0)
    # several tables at exit: their part files are stored and their row groups encoded one by one
    # once no thread can be started
    assert con.execute("SELECT count(*) FROM batches").fetchone() == (100,)
    assert con.execute("SELECT count(*) FROM predictions").fetchone() == (400,)
    assert con.execute("SELECT status FROM runs").fetchone() == ("exited",)


@pytest.mark.slow  # a child interpreter
def test_a_run_dropped_without_finish_is_still_written_at_exit(tmp_path):
    script = textwrap.dedent(
        """
        import gc, sys, lakelog

        def train():
            run = lakelog.Run(sys.argv[1], name="dropped", flush_every_s=3600)  # not the current run
            run.log({"loss": 0.5}, step=0)

        train()
        gc.collect()
        """
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    assert lakelog.connect(tmp_path).execute("SELECT count(*) FROM scalars").fetchall() == [(1,)]
