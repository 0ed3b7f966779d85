"""Bad input gets a clear error naming the argument, or is stored faithfully; nothing written is lost."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import lakelog
from lakelog.errors import InvalidArgumentError, LakeNotWritableError, NoActiveRunError, RunClosedError


@pytest.fixture
def run(tmp_path):
    run = lakelog.init(tmp_path, name="bad")
    run.log_predictions(torch.ones(2, 2), step=0, labels=[0, 1])  # written before every bad call
    yield run
    if not run.closed:
        run.finish()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda r: r.log_predictions(torch.zeros(3, 2), labels=torch.tensor([0, 1])),
            r"labels: expected 3 labels",
        ),
        (
            lambda r: r.log_predictions(torch.zeros(3, 2), keys={"image1": ["a", "b"]}),
            r"keys\['image1'\]: expected 3 values",
        ),
        (lambda r: r.log_predictions(torch.zeros(2, 2, 2)), r"logits: expected shape \(batch, classes\)"),
        (lambda r: r.log_predictions([[0.1, 0.2]]), r"logits: expected a tensor or numpy array"),
        (lambda r: r.log_predictions(torch.zeros(3, 0)), r"logits: expected at least one score per sample"),
        (
            lambda r: r.log_predictions(torch.zeros(2, 2), keys={"id": [1, "b"]}),
            r"keys\['id'\]: expected all strings or all integers",
        ),
        (
            lambda r: r.log_predictions(torch.zeros(2, 2), keys={"id": [1.5, 2.5]}),
            r"keys\['id'\]: expected all strings or all integers",
        ),
        (
            lambda r: r.log_predictions(torch.zeros(2, 2), labels=["cat", "dog"]),
            r"labels: expected integer class indices",
        ),
        (
            lambda r: r.log_predictions(torch.zeros(2, 2), labels=torch.tensor([0.5, 1.0])),
            r"labels: expected integer",
        ),
        (
            lambda r: r.log_predictions(torch.zeros(2, 2), labels=torch.zeros(2, 1, dtype=torch.long)),
            r"labels: expected one value per sample",
        ),
        (lambda r: r.log_predictions(torch.zeros(2, 2), keys={"label": [1, 2]}), r"keys: key names must be"),
        (lambda r: r.log_predictions(torch.zeros(2, 2), keys=["a", "b"]), r"keys: expected a mapping"),
        (lambda r: r.log_predictions(torch.zeros(2, 2), step=-1), r"step: expected a non-negative int"),
        (lambda r: r.log_predictions(torch.zeros(2, 2), step=1.5), r"step: expected a non-negative int"),
        (
            lambda r: r.log({"loss": "low"}),
            r"log: 'loss' must be a Python number or a one-element tensor, got str",
        ),
        (lambda r: r.log({"loss": torch.zeros(3)}), r"log: 'loss' must be a number or a one-element tensor"),
        (lambda r: r.log({"loss": None}), r"got NoneType"),
        (lambda r: r.log([1.0]), r"log: expected a mapping"),
        (lambda r: r.log_batch(sample_ids=torch.zeros(2)), r"sample_ids: expected integer or string ids"),
        (lambda r: r.log_batch(sample_ids=[1, 2], inputs="pixels"), r"inputs: expected a tensor"),
        (
            lambda r: r.log_batch(sample_ids=[1, 2], inputs=[torch.zeros(2), "x"]),
            r"inputs\['1'\]: expected a tensor",
        ),
    ],
)
def test_bad_calls_name_the_argument_and_keep_earlier_rows(run, call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call(run)
    run.finish()
    assert lakelog.connect(run.root).execute("SELECT count(*) FROM predictions").fetchone() == (2,)


def test_nan_and_inf_logits_are_stored_not_rejected(tmp_path):
    with lakelog.init(tmp_path, name="nan") as run:
        run.log_predictions(
            torch.tensor([[float("nan"), 1.0], [float("inf"), -float("inf")]]), step=0, labels=[0, 1]
        )
        run.log({"loss": float("inf"), "grad": torch.tensor(float("nan"))}, step=0)
    con = lakelog.connect(tmp_path)
    logits = [r[0] for r in con.execute("SELECT logits FROM predictions ORDER BY sample_idx").fetchall()]
    assert np.isnan(logits[0][0]) and logits[1] == [float("inf"), -float("inf")]
    values = dict(con.execute("SELECT name, value FROM scalars").fetchall())
    assert values["loss"] == float("inf") and np.isnan(values["grad"])


def test_half_precision_and_binary_logits(tmp_path):
    with lakelog.init(tmp_path, name="half") as run:
        run.log_predictions(torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16), step=0)
        run.log_predictions(torch.tensor([0.3, -0.2]), step=1, labels=torch.tensor([True, False]))
    rows = (
        lakelog.connect(tmp_path)
        .execute("SELECT step, logits, prediction, label FROM predictions ORDER BY step, sample_idx")
        .fetchall()
    )
    assert rows[0][1] == [1.5, -2.0] and rows[0][2] == 0
    assert [r[2] for r in rows[1:]] == [1, 0] and [r[3] for r in rows[1:]] == [1, 0]


def test_closed_run_and_no_active_run(tmp_path):
    run = lakelog.init(tmp_path, name="closed")
    run.finish()
    with pytest.raises(RunClosedError, match="finished"):
        run.log({"loss": 1.0})
    with pytest.raises(NoActiveRunError, match=r"lakelog.init"):
        lakelog.log({"loss": 1.0})
    lakelog.finish()  # no current run: a no-op


def test_root_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(LakeNotWritableError, match="is a file"):
        lakelog.init(target, name="a")


def test_read_only_root(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits; a kernel file system still refuses
        root = "/sys/lakelog-readonly"
    else:
        root = tmp_path / "ro"
        root.mkdir()
        root.chmod(0o500)
    with pytest.raises(LakeNotWritableError, match="cannot create run folder"):
        lakelog.init(root, name="a")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "name: 'a/b' cannot be a run name: it contains '/'"),
        ({"name": "epoch=1"}, "cannot be a run name: it contains '='"),
        ({"name": "*"}, r"name: '\*' cannot be a run name: it contains '\*'"),
        ({"name": "[ab]"}, r"cannot be a run name: it contains '\['"),
        ({"name": "a?"}, r"it contains '\?'"),
        ({"name": "run{1,2}"}, r"it contains '\{'"),
        ({"name": "a\nb"}, r"it contains '\\n'"),
        ({"name": "a\x1bb"}, r"it contains '\\x1b'"),
        ({"name": "x" * 300}, r"name: expected at most 200 bytes \(UTF-8\), got 300 bytes"),
        ({"name": "é" * 101}, r"name: expected at most 200 bytes \(UTF-8\), got 202 bytes"),
        ({"seed": 2**70}, r"seed: expected a non-negative int that fits in int64"),
        ({"on_error": "ignore"}, r"on_error: expected one of \('warn', 'raise'\)"),
        ({"name": ""}, "name: expected a non-empty string"),
        ({"mode": "append"}, "mode: expected one of"),
        ({"config": [1, 2]}, "config: expected a mapping"),
        ({"log_every": -2}, "log_every: expected a non-negative int"),
    ],
)
def test_bad_init_arguments(tmp_path, kwargs, message):
    kwargs = {"name": "ok", **kwargs}
    with pytest.raises(InvalidArgumentError, match=message):
        lakelog.init(tmp_path, **kwargs)
    assert not any(p.name != "ok" for p in tmp_path.iterdir())  # nothing created under another name


def test_empty_batch_is_stored_as_nothing(tmp_path):
    with lakelog.init(tmp_path, name="empty") as run:
        run.log_predictions(torch.zeros(0, 3), step=0, labels=torch.zeros(0, dtype=torch.long))
        run.log_predictions(torch.ones(1, 3), step=1, labels=[2])
    assert lakelog.connect(tmp_path).execute("SELECT step, label FROM predictions").fetchall() == [(1, 2)]
