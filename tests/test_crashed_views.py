"""A run killed with SIGKILL reads as ``crashed`` with its last committed step, and its tables end there.

A real writer process (real torch tensors, the real background writer flushing on its timer) is
killed at random points; the views must hide rows of flushes that never committed, so every table
of the crashed run ends at the same step and a diff of the run with itself is identical.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap

import pytest

import lakelog
from lakelog.lake.layout import Lake
from lakelog.lake.lifecycle import run_state

WRITER = textwrap.dedent(
    """
    import sys
    import torch
    import lakelog

    run = lakelog.init(sys.argv[1], name=sys.argv[2], flush_every_s=0.01)
    for step in range(100000):
        run.log({"loss": 1.0 / (step + 1), "acc": 0.5}, step=step)
        run.log_batch(sample_ids=[f"s{step}-{i}" for i in range(4)], step=step)
        run.log_predictions(torch.randn(4, 3), step=step, labels=[0, 1, 2, 0])
        print(step, flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_killed_run_is_crashed_and_its_tables_end_at_the_committed_step(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path), "victim"], stdout=subprocess.PIPE, text=True
    )
    target = rng.randint(50, 400)
    for line in child.stdout:
        if int(line) >= target:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = run_state(Lake.open(tmp_path), "victim")
    assert state.status == "crashed"
    committed = state.last_committed_step
    con = lakelog.connect(tmp_path)
    assert con.execute("SELECT status, committed_step FROM runs").fetchone() == ("crashed", committed)
    ends = {
        table: con.execute(f"SELECT max(step), count(*) FROM {table}").fetchone()
        for table in ("scalars", "batches", "predictions", "pred_digests")
    }
    per_step = {"scalars": 2, "batches": 1, "predictions": 4, "pred_digests": 1}
    if committed is None:
        assert all(n == 0 for _, n in ends.values()), ends
        return
    for table, (last, n) in ends.items():
        assert last == committed and n == per_step[table] * (committed + 1), (table, ends, committed)
    assert lakelog.diff_runs(con, "victim", "victim").identical
