"""DDP: two real processes (gloo) write one run each rank into its own partitions; the rank queries read them.

The training itself is tests/ddp_worker.py: a correct run, a run where rank 1 alters one gradient
after the all-reduce at a known step, and a run without a DistributedSampler.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_worker import BATCH, PERTURB_STEP, PERTURBED_PARAM, N  # tests/ is on sys.path under pytest

import lakelog

WORLD = 2
STEPS = N // BATCH // WORLD

pytestmark = pytest.mark.slow  # every test reads a lake two torch.distributed processes wrote


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("ddp")
    worker = Path(__file__).with_name("ddp_worker.py")
    port = str(_free_port())
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(worker), str(root)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=120))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
    names = json.loads(outputs[0][0].strip().splitlines()[-1])
    return root, names


def test_every_rank_writes_its_own_partitions_of_one_run(ddp_lake: tuple[Path, dict[str, str]]) -> None:
    root, names = ddp_lake
    assert sorted(p.name for p in root.iterdir()) == sorted(
        names.values()
    )  # one folder per run, not per rank
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", names["correct"])  # generated once, shared by broadcast
    run_dir = root / names["correct"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == WORLD and info["environment"]["rank"] == 0 and info["status"] == "finished"
    assert sorted(p.name for p in (run_dir / "batches" / "epoch=0").iterdir()) == ["rank=0", "rank=1"]
    assert not list(run_dir.rglob("*.tmp"))
    con = lakelog.connect(root)
    rows = con.execute(
        "SELECT rank, count(DISTINCT step), max(step) FROM scalars WHERE run = ? GROUP BY rank ORDER BY rank",
        [names["correct"]],
    ).fetchall()
    assert rows == [(0, STEPS, STEPS), (1, STEPS, STEPS)]
    assert con.execute("SELECT world_size FROM runs WHERE run = ?", [names["correct"]]).fetchone() == (WORLD,)


def test_correct_ddp_run_has_no_desync_and_no_shared_samples(ddp_lake: tuple[Path, dict[str, str]]) -> None:
    root, names = ddp_lake
    con = lakelog.connect(root)
    run = names["correct"]
    captured = con.execute(
        "SELECT count(DISTINCT rank), count(DISTINCT step) FROM params WHERE run = ? AND kind = 'param'",
        [run],
    ).fetchall()
    assert captured == [(WORLD, STEPS)]  # the query below had fingerprints from both ranks to compare
    assert lakelog.query("rank_desync", con=con, run=run).height == 0
    assert lakelog.query("rank_sample_overlap", con=con, run=run).height == 0


def test_rank_that_alters_its_gradient_is_found_at_that_step(ddp_lake: tuple[Path, dict[str, str]]) -> None:
    root, _ = ddp_lake
    desync = lakelog.query("rank_desync", root=root, run="perturbed")
    assert desync["step"].to_list() == [PERTURB_STEP]
    assert desync["name"].to_list() == [PERTURBED_PARAM]  # the bias never differs: not reported
    row = desync.row(0, named=True)
    assert row["n_ranks"] == WORLD and row["n_fingerprints"] == 2
    assert row["odd_ranks"] == [1] and row["ranks"] == [0, 1]  # tie: rank 0's fingerprint is the reference
    assert row["last_agreed_step"] == PERTURB_STEP - 1
    # Every run at once: only the perturbed one desyncs.
    assert lakelog.query("rank_desync", root=root)["run"].unique().to_list() == ["perturbed"]


def test_missing_distributed_sampler_shows_as_shared_samples(ddp_lake: tuple[Path, dict[str, str]]) -> None:
    root, _ = ddp_lake
    overlap = lakelog.query("rank_sample_overlap", root=root)
    assert overlap["run"].to_list() == ["no_sampler"]
    row = overlap.row(0, named=True)
    assert (row["rank_a"], row["rank_b"], row["epoch"]) == (0, 1, 0)
    assert row["samples_a"] == row["samples_b"] == row["shared_samples"] == N  # each rank saw everything
    assert row["overlap"] == 1.0 and row["identical_batches"] == N // BATCH and row["first_shared_step"] == 1


def test_write_path_adds_no_collective_calls() -> None:
    """Logging must not block on other ranks: no collective in any module of the write side but
    ``write/distributed.py`` (the helpers a user calls on purpose, outside the training step)."""
    package = Path(lakelog.__file__).parent
    modules = sorted(
        str(p.relative_to(package)) for p in (package / "write").rglob("*.py") if p.name != "distributed.py"
    )
    assert "write/telemetry/watcher.py" in modules and "write/writer.py" in modules
    collective = re.compile(
        r"\b(dist|distributed)\.(all_reduce|all_gather\w*|broadcast\w*|barrier|reduce_scatter\w*"
        r"|gather\w*|scatter\w*|send|recv|monitored_barrier)\b"
    )
    for module in modules:
        path = package / module
        assert not collective.search(path.read_text()), f"{module} calls a torch.distributed collective"


def test_majority_of_ranks_is_the_reference(tmp_path: Path) -> None:
    """Three ranks: the rank that differs from the other two is named, even when it is rank 0."""
    fps = {  # (step, name) -> fingerprint per rank; captures every 2 steps
        (2, "a"): ["x", "x", "x"],
        (2, "b"): ["y", "y", "y"],
        (4, "a"): ["p", "q", "q"],
        (4, "b"): ["y", "y", "z"],
        (6, "a"): ["r", "s", "t"],
        (6, "b"): ["y", "y", "z"],
    }
    for rank in range(3):
        with lakelog.init(tmp_path, name="three", rank=rank, world_size=3) as run:
            run.write_rows(
                "params",
                {
                    "step": [s for s, _ in fps],
                    "name": [n for _, n in fps],
                    "kind": ["param"] * len(fps),
                    "group": ["g"] * len(fps),
                    "fingerprint": [v[rank] for v in fps.values()],
                },
            )
    desync = lakelog.query("rank_desync", root=tmp_path, run="three")
    rows = {r["name"]: r for r in desync.iter_rows(named=True)}
    assert set(desync["step"]) == {4} and set(rows) == {"a", "b"}
    assert rows["a"]["odd_ranks"] == [0] and rows["b"]["odd_ranks"] == [2]
    assert rows["a"]["fingerprints"] == ["p", "q", "q"] and rows["a"]["last_agreed_step"] == 2
    assert lakelog.query("rank_desync", root=tmp_path, run="three", kind="buffer").height == 0
