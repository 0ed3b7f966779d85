"""diff_runs on real pairs of runs: the layer that parted first, where, and the evidence around it."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import CAUSE_STEP

import lakelog
from lakelog.cli import cli
from lakelog.errors import InvalidArgumentError, RunNotFoundError
from lakelog.read.diff import DiffResult, diff_runs


@pytest.fixture(scope="module")
def root(lake):
    return lake(
        "base",
        "same",
        "shuffle",
        "dropout",
        "lr",
        "transform",
        "short",
        "no_batches",
        "resumed_ok",
        "resumed_replay",
    )


@pytest.fixture(scope="module")
def con(root):
    return lakelog.connect(root)


def test_identical_runs(con):
    r = diff_runs(con, "base", "same")
    assert isinstance(r, DiffResult) and r.identical
    assert r.first_layer is None and r.first_step is None and r.notes == []
    assert r.environment.is_empty() and r.samples.is_empty() and r.params.is_empty()
    assert r.group_drift["first_drift_step"].null_count() == r.group_drift.height


@pytest.mark.parametrize(
    ("run_b", "layer"),
    [("shuffle", "batch_order"), ("dropout", "rng"), ("lr", "weights"), ("transform", "inputs")],
)
def test_the_first_layer_is_the_cause(con, run_b, layer):
    r = diff_runs(con, "base", run_b)
    assert not r.identical
    assert (r.first_layer, r.first_step) == (layer, CAUSE_STEP)
    assert r.layer(layer)["is_first"]


def test_a_view_over_a_registered_frame_is_diffed_as_the_lake_is(root):
    """diff reads some answers on a cursor of the connection; a view the user put over a frame
    registered on the connection (which cursors do not see) gives the same answers all the same."""
    plain = diff_runs(lakelog.connect(root), "base", "lr")
    con = lakelog.connect(root)
    con.register("my_scalars", con.sql("SELECT * FROM scalars").pl())
    con.execute("CREATE OR REPLACE VIEW scalars AS SELECT * FROM my_scalars")
    patched = diff_runs(con, "base", "lr")
    assert (patched.first_layer, patched.first_step) == (plain.first_layer, plain.first_step)
    assert patched.group_drift_steps.equals(plain.group_drift_steps)
    assert patched.steps.equals(plain.steps) and patched.cause == plain.cause


def test_a_read_only_connection_is_diffed_as_the_default_one(root):
    """A read_only connection's views read file lists held by the connection itself; the cursor diff
    reads on beside it gets them too, and stays locked to the lake."""
    plain = diff_runs(lakelog.connect(root), "base", "lr")
    con = lakelog.connect(root, read_only=True)
    locked = diff_runs(con, "base", "lr")
    assert (locked.first_layer, locked.first_step) == (plain.first_layer, plain.first_step)
    assert locked.group_drift_steps.equals(plain.group_drift_steps) and locked.cause == plain.cause
    import duckdb

    from lakelog.read.views import cursor

    with pytest.raises(duckdb.PermissionException):
        cursor(con).execute("SELECT * FROM read_text('/etc/hostname')").fetchall()


def test_shuffle_names_the_batch_and_its_samples(con):
    r = diff_runs(con, "base", "shuffle")
    assert r.batch["step"] == CAUSE_STEP and r.batch["kind"] == "different"
    assert r.batch["ids_a"] != r.batch["ids_b"] and r.batch["overlap"] < 8
    kinds = dict(zip(r.batch_kinds["kind"], r.batch_kinds["first_step"], strict=True))
    assert kinds == {"same": 0, "different": CAUSE_STEP}


def test_transform_names_the_one_sample(con):
    r = diff_runs(con, "base", "transform")
    assert r.samples["sample_idx"].to_list() == [2] and r.samples["step"].to_list() == [CAUSE_STEP]
    assert not r.samples["keys_differ"][0]


def test_lr_change_names_the_parameters_and_ranks_the_groups(con):
    r = diff_runs(con, "base", "lr")
    differing = r.params.filter(~pl.col("equal"))
    assert sorted(differing["name"]) == ["head.bias", "head.weight"] and set(differing["group"]) == {"head"}
    assert r.group_drift.select("group", "drift_rank", "first_drift_step").rows() == [
        ("head", 1, CAUSE_STEP),
        ("backbone", 2, CAUSE_STEP + 1),
    ]
    assert r.environment.filter(pl.col("key") == "cause")["value_b"].to_list() == ['"lr"']


def test_a_correct_resume_replays_order_rng_and_weights(con):
    r = diff_runs(con, "base", "resumed_ok")
    assert r.identical
    [resume] = r.resume
    assert resume["run"] == "resumed_ok" and resume["side"] == "B" and resume["step"] == 8
    assert {k: v["status"] for k, v in resume["layers"].items()} == {
        "batch_order": "same",
        "rng": "same",
        "weights": "same",
        "predictions": "same",
        "optimizer": "same",
    }


def test_a_resume_that_replays_epoch_0_is_caught_at_the_resume_step(con):
    r = diff_runs(con, "base", "resumed_replay")
    assert (r.first_layer, r.first_step) == ("batch_order", 8)
    assert r.batch["same_as_a_step"] == 0  # B's first resumed batch is A's first batch of epoch 0
    [resume] = r.resume
    assert resume["step"] == 8 and resume["replays_a_step"] == 0
    assert (resume["layers"]["batch_order"]["status"], resume["layers"]["batch_order"]["first_step"]) == (
        "differs",
        8,
    )
    assert resume["layers"]["rng"]["status"] == "same"  # the RNG was restored; only the order is wrong


def test_runs_of_different_lengths_are_compared_on_their_common_steps(con):
    r = diff_runs(con, "base", "short")
    assert not r.identical and r.first_layer is None
    assert any("different lengths" in n and "0-15 (16)" in n and "0-7 (8)" in n for n in r.notes)
    assert r.layer("predictions")["n_compared"] == 8


def test_a_table_one_run_lacks_is_a_note_not_a_difference(con):
    r = diff_runs(con, "base", "no_batches")
    assert r.first_layer is None and not r.identical
    assert any(n.startswith("batch_order: only one run captured it (no_batches did not)") for n in r.notes)


def test_runs_given_as_folders(root, tmp_path):
    r = diff_runs(tmp_path, str(root / "base"), str(root / "lr"))
    assert (r.first_layer, r.first_step) == ("weights", CAUSE_STEP)
    copy = tmp_path / "elsewhere" / "base"
    shutil.copytree(root / "base", copy)
    same = diff_runs(tmp_path, str(root / "base"), str(copy))  # one name, two folders: labelled apart
    assert same.identical and (same.run_a, same.run_b) == (f"base ({root.name})", "base (elsewhere)")
    changed = tmp_path / "other" / "base"
    shutil.copytree(root / "lr", changed)
    r = diff_runs(tmp_path, str(root / "base"), str(changed))
    assert (r.first_layer, r.first_step, r.run_b) == ("weights", CAUSE_STEP, "base (other)")
    result = CliRunner().invoke(cli, ["diff", str(root / "base"), str(copy)])
    assert result.exit_code == 0 and "base (elsewhere)" in result.output, result.output


def test_unknown_runs_and_injection_attempts_are_not_found(root, con):
    with pytest.raises(RunNotFoundError, match=r"run 'nope' not found.*runs there: base"):
        diff_runs(root, "base", "nope")
    with pytest.raises(RunNotFoundError, match="not in this connection"):
        diff_runs(con, "base", "a'; DROP TABLE x; --")
    with pytest.raises(RunNotFoundError, match="does not exist"):
        diff_runs(root / "missing", "a", "b")


def test_runs_without_common_steps_cannot_be_compared(tmp_path):
    for name, steps in (("early", range(0, 3)), ("late", range(10, 13))):
        with lakelog.init(tmp_path, name=name) as run:
            for step in steps:
                run.log({"loss": 1.0}, step=step)
    with pytest.raises(InvalidArgumentError, match=r"0-2.*10-12.*share no step"):
        diff_runs(tmp_path, "early", "late")
    with lakelog.init(tmp_path, name="empty"):
        pass
    with pytest.raises(InvalidArgumentError, match="'empty' has logged no steps"):
        diff_runs(tmp_path, "early", "empty")


def test_bad_tolerance_and_json_export(con):
    with pytest.raises(InvalidArgumentError, match="tol"):
        diff_runs(con, "base", "lr", tol=-1)
    data = diff_runs(con, "base", "lr").to_dict()
    text = json.dumps(data, default=str)
    assert json.loads(text)["first_layer"] == "weights" and isinstance(data["layers"], list)


def test_after_a_batch_order_divergence_samples_are_compared_by_key(con):
    r = diff_runs(con, "base", "shuffle")
    both = r.samples.filter(pl.col("only_in").is_null())
    assert both.height > 0 and (both["keys_a"] == both["keys_b"]).all()  # the same sample on both sides
    assert set(r.samples["only_in"].drop_nulls()) == {"A", "B"}  # and the samples only one run fed
    by_position = lakelog.query(
        "prediction_diff", con=con, run_a="base", run_b="shuffle", from_step=CAUSE_STEP
    )
    assert not (by_position["keys_a"] == by_position["keys_b"]).all()


def test_tensors_that_differ_list_parameters_before_optimizer_state(con):
    tensors = lakelog.query("param_diff", con=con, run_a="base", run_b="lr", step=CAUSE_STEP + 1)
    differing = tensors.filter(~pl.col("equal"))  # one step after the LR change, momentum differs too
    kinds = differing["kind"].to_list()
    assert kinds.index("optim:momentum_buffer") > max(i for i, k in enumerate(kinds) if k == "param")


def test_user_column_names_with_the_zero_based_logit_macro(con):
    rows = con.execute(
        "SELECT logit(logits, 0) AS logit0, logit(logits, 1) AS logit1, prediction AS winner, logits "
        "FROM predictions WHERE run = 'base' LIMIT 3"
    ).fetchall()
    assert rows and all([l0, l1] == logits and winner == int(l1 > l0) for l0, l1, winner, logits in rows)
