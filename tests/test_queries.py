"""The query library on real runs with a known cause of divergence: each query names the right step, layer, group."""

from __future__ import annotations

import math
import re
import shutil

import duckdb
import polars as pl
import pytest
from conftest import CAUSE_STEP
from polars.testing import assert_frame_equal

import lakelog
from lakelog.errors import QueryError
from lakelog.read import querylib

EXPECTED_QUERIES = {
    "first_divergence",
    "batch_order_mismatch",
    "group_drift",
    "param_diff",
    "prediction_diff",
    "env_diff",
    "step_overlap",
    "grad_health",
    "frozen_layers",
    "lr_ratio",
    "label_balance",
    "overfitting",
    "nan_inf",
    "updates_per_epoch",
    "leaderboard",
    "run_list",
}


@pytest.fixture(scope="module")
def con(lake):
    root = lake(
        "base",
        "same",
        "shuffle",
        "reorder",
        "dropout",
        "lr",
        "transform",
        "base_norng",
        "dropout_norng",
        "no_batches",
        "three_classes",
    )
    return lakelog.connect(root)


def first(con, run_b, run_a="base", **params):
    df = lakelog.query("first_divergence", con=con, run_a=run_a, run_b=run_b, **params)
    layers = {row["layer"]: row for row in df.to_dicts()}
    top = df.filter(pl.col("is_first")).to_dicts()
    return (top[0] if top else None), layers


# -- the library itself -----------------------------------------------------------------------


def test_every_query_has_a_documented_header_and_bound_parameters():
    library = querylib.library()
    assert set(library) >= EXPECTED_QUERIES
    for name in EXPECTED_QUERIES:
        q = library[name]
        assert q.path.name == f"{name}.sql" and q.doc, f"{name} has no documentation"
        assert all(p.doc for p in q.params), f"{name} has an undocumented parameter"
        used = set(re.findall(r"\$([A-Za-z_]\w*)", q.sql))
        assert used == {p.name for p in q.params}, f"{name}: declared and used parameters differ"


def test_internal_queries_have_their_own_namespace_and_still_run(con):
    questions = querylib.questions()
    assert set(questions) >= EXPECTED_QUERIES
    assert not [n for n in questions if n.startswith(("plot_", "determinism_", "internal.", "resume_step"))]
    internal = {n for n, q in querylib.library().items() if q.internal}
    assert {"internal.plot_divergence", "internal.determinism_batches", "internal.resume_step"} <= internal
    assert all(querylib.library()[n].path.parent.name == "internal" for n in internal)
    names = lakelog.query("internal.plot_scalar_names", con=con, runs=["base"])
    assert {"loss", "acc"} <= set(names["name"])
    with pytest.raises(QueryError, match=r"unknown query 'plot_divergence'") as info:
        lakelog.query("plot_divergence", con=con)
    assert "internal." not in str(info.value)  # the error lists the user's questions


def _sql_file(folder, name, header, body):
    path = folder / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"-- name: {name}\n-- A test query.\n{header}{body}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ("", "SELECT $x", r"SQL uses \$x but the header does not declare it"),
        ("-- param x: x\n-- param y = 1: y\n", "SELECT $x", r"declares y but the SQL never uses \$y;"),
        ("-- param y = 1: y\n", "SELECT 1 -- see $y\n", r"never uses \$y \(only in a comment\)"),
        ("-- param x: x\n", "SELECT '$x' AS v", r"parameter \$x stands inside quotes, where it is text"),
        ("-- param x: x\n", 'SELECT 1 AS "$x"', r"\$x stands inside quotes"),
        ("-- param x: x\n", "SELECT $$ $x $$ AS v", r"\$x stands inside quotes"),
        ("-- param x: x\n-- param x: again\n", "SELECT $x", "declares x more than once"),
    ],
)
def test_the_loader_refuses_placeholders_that_would_not_bind(tmp_path, header, body, message):
    path = _sql_file(tmp_path, "q", header, body)
    with pytest.raises(QueryError, match=message) as info:
        querylib.parse(path)
    assert str(path) in str(info.value)


def test_placeholders_in_comments_and_text_next_to_real_ones_are_not_parameters(tmp_path):
    body = (
        "SELECT $run AS r, 'costs $5 or $more' AS price, E'it\\'s $x' AS e, $tag$ $y $tag$ AS d\n"
        "/* $z in a block comment */ -- and $w in a line comment\n"
        "WHERE json_extract_string('{}', '$.a') IS NULL OR $run = 'it''s'"
    )
    q = querylib.parse(_sql_file(tmp_path, "q", "-- param run: the run\n", body))
    assert [p.name for p in q.params] == ["run"]
    row = duckdb.connect().execute(q.sql, q.bind({"run": "a"})).fetchone()
    assert row == ("a", "costs $5 or $more", "it's $x", " $y ")


def test_folders_are_namespaces_and_dialect_folders_and_macros_are_not_queries(tmp_path, monkeypatch):
    _sql_file(tmp_path, "top", "", "SELECT 1")
    _sql_file(tmp_path / "internal", "helper", "", "SELECT 2")
    _sql_file(tmp_path / "spark", "top", "", "SELECT 1")  # the Spark dialect of 'top'
    _sql_file(tmp_path, "_macros", "", "SELECT 3")
    monkeypatch.setenv("LAKELOG_QUERIES", str(tmp_path))
    assert sorted(querylib.library()) == ["internal.helper", "top"]
    assert sorted(querylib.questions()) == ["top"]
    assert querylib.get("internal.helper").internal and not querylib.get("top").internal


def test_scalar_names_are_parameters_with_the_conventional_defaults():
    fd = {p.name: p for p in querylib.get("first_divergence").params}
    assert fd["loss_name"].default == "loss" and fd["tol"].default == 0.0
    assert {p.name: p.default for p in querylib.get("overfitting").params}["acc_name"] == "acc"


def test_unknown_query_and_missing_parameter_are_clear(con):
    with pytest.raises(QueryError, match=r"unknown query 'nope'.*first_divergence"):
        lakelog.query("nope", con=con)
    with pytest.raises(QueryError, match="needs parameter 'run_b'"):
        lakelog.query("first_divergence", con=con, run_a="base")
    with pytest.raises(QueryError, match="has no parameter colour"):
        lakelog.query("run_list", con=con, colour="red")


def test_a_run_name_that_looks_like_sql_is_only_a_name(con):
    con.execute("CREATE TABLE x AS SELECT 1 AS v")
    evil = "a'; DROP TABLE x; --"
    df = lakelog.query("first_divergence", con=con, run_a="base", run_b=evil)
    assert set(df["status"]) <= {"missing in B", "not captured"}
    assert lakelog.query("batch_order_mismatch", con=con, run_a=evil, run_b=evil).is_empty()
    assert con.sql("SELECT v FROM x").fetchall() == [(1,)]


# -- first_divergence: one known cause per pair --------------------------------------------------


def test_identical_runs_differ_in_no_layer(con):
    top, layers = first(con, "same")
    assert top is None
    assert {r["status"] for r in layers.values()} <= {"same", "not captured"}
    assert layers["predictions"]["n_compared"] == 16 and layers["weights"]["status"] == "same"


@pytest.mark.parametrize(
    ("run_b", "layer", "detail"),
    [
        ("shuffle", "batch_order", "different samples"),
        ("reorder", "batch_order", "same samples in another order"),
        ("dropout", "rng", "torch RNG state differs"),
        ("dropout_norng", "predictions", "8 of 8 samples differ"),
        ("transform", "inputs", "same sample ids, different input tensors"),
        ("lr", "weights", "(groups: head)"),
    ],
)
def test_first_divergence_names_the_cause(con, run_b, layer, detail):
    run_a = "base_norng" if run_b.endswith("norng") else "base"
    top, layers = first(con, run_b, run_a=run_a)
    assert (top["layer"], top["first_step"], top["epoch"]) == (layer, CAUSE_STEP, 0)
    assert detail in top["detail"]
    assert all(r["first_step"] is None or r["first_step"] >= CAUSE_STEP for r in layers.values())


def test_lr_change_shows_in_the_weights_first_and_in_predictions_one_step_later(con):
    _, layers = first(con, "lr")
    assert layers["weights"]["detail"].split("): ")[1].split(", ") == ["head.weight", "head.bias"]
    assert layers["predictions"]["first_step"] == layers["loss"]["first_step"] == CAUSE_STEP + 1
    assert layers["gradients"]["first_step"] == CAUSE_STEP + 1
    assert layers["batch_order"]["status"] == layers["inputs"]["status"] == layers["rng"]["status"] == "same"


def test_transformed_sample_is_the_only_prediction_that_differs(con):
    _, layers = first(con, "transform")
    assert layers["predictions"]["detail"].startswith("1 of 8 samples differ")
    assert "sample_idx 2" in layers["predictions"]["detail"]
    samples = lakelog.query("prediction_diff", con=con, run_a="base", run_b="transform", from_step=CAUSE_STEP)
    assert samples["sample_idx"].to_list() == [2]
    assert samples["keys_a"][0] == samples["keys_b"][0] and samples["keys_a"][0].startswith('{"sample":"s')


def test_tolerance_hides_differences_below_it_and_scans_later_candidates(con):
    exact = first(con, "lr")[1]["predictions"]
    assert exact["first_step"] == CAUSE_STEP + 1
    diffs = lakelog.query("prediction_diff", con=con, run_a="base", run_b="lr", from_step=0, to_step=15)
    per_step = diffs.group_by("step").agg(pl.col("max_abs_diff").max()).sort("step")
    # a tolerance between the first step's largest difference and the largest one overall
    tol = float(per_step["max_abs_diff"][0]) * 1.0001
    expected = per_step.filter(pl.col("max_abs_diff") > tol)["step"][0]
    loose = first(con, "lr", tol=tol)[1]["predictions"]
    assert loose["first_step"] == expected > exact["first_step"]
    assert first(con, "lr", tol=1e9)[1]["predictions"]["status"] == "same"


def test_more_than_sixteen_candidate_batches_below_tol_reach_the_second_stage(con):
    # every batch from CAUSE_STEP on differs in bits; a huge tol for all but the last makes stage 1 miss
    diffs = lakelog.query("prediction_diff", con=con, run_a="base", run_b="dropout", from_step=0, to_step=15)
    per_step = diffs.group_by("step").agg(pl.col("max_abs_diff").max()).sort("step")
    assert per_step.height == 16 - CAUSE_STEP
    top = per_step.sort("max_abs_diff", descending=True)
    tol = float(top["max_abs_diff"][1])  # only the largest batch exceeds it
    loose = first(con, "dropout", tol=tol)[1]["predictions"]
    assert loose["first_step"] == top["step"][0]


def test_different_number_of_classes_is_named(con):
    _, layers = first(con, "three_classes")
    assert layers["predictions"]["detail"] == "number of classes differs: A 2 vs B 3"
    assert layers["initial_weights"]["first_step"] == 0
    assert "head.weight" in layers["initial_weights"]["detail"]


def test_a_table_one_run_lacks_is_reported_not_compared(con):
    _, layers = first(con, "no_batches")
    assert layers["batch_order"]["status"] == layers["rng"]["status"] == "missing in B"
    assert layers["predictions"]["status"] == "same"


def test_from_step_ignores_earlier_steps(con):
    # the shuffle differs for the rest of epoch 0 only (steps 5-7); epoch 1 draws the same order again
    assert first(con, "shuffle", from_step=CAUSE_STEP + 1)[1]["batch_order"]["first_step"] == CAUSE_STEP + 1
    _, later = first(con, "shuffle", from_step=8)
    assert later["batch_order"]["status"] == "same" and later["weights"]["first_step"] == 8


# -- batches, groups, parameters, environment --------------------------------------------------


def test_batch_order_mismatch_kinds_and_overlap(con):
    shuffled = lakelog.query("batch_order_mismatch", con=con, run_a="base", run_b="shuffle")
    assert shuffled.filter(pl.col("step") < CAUSE_STEP)["kind"].unique().to_list() == ["same"]
    at = shuffled.filter(pl.col("step") == CAUSE_STEP).row(0, named=True)
    assert at["kind"] == "different" and 0 <= at["overlap"] < 8 and at["first_of_kind"] == CAUSE_STEP
    reordered = lakelog.query("batch_order_mismatch", con=con, run_a="base", run_b="reorder")
    kinds = dict(zip(reordered["step"], reordered["kind"], strict=True))
    assert kinds[CAUSE_STEP] == "reordered" and {kinds[s] for s in kinds if s != CAUSE_STEP} == {"same"}
    assert reordered.filter(pl.col("step") == CAUSE_STEP)["overlap"][0] == 8


def test_group_drift_ranks_the_group_whose_lr_changed_first(con):
    drift = lakelog.query("group_drift", con=con, run_a="base", run_b="lr")
    groups = drift.unique("group").sort("drift_rank")
    assert groups["group"].to_list() == ["head", "backbone"]
    assert groups["first_drift_step"].to_list() == [CAUSE_STEP, CAUSE_STEP + 1]
    at = drift.filter(pl.col("step") == CAUSE_STEP)
    head, backbone = (at.filter(pl.col("group") == g).row(0, named=True) for g in ("head", "backbone"))
    assert head["n_equal"] == 0 and head["rel_gap"] > 0 and backbone["equal_numel_frac"] == 1.0
    assert head["loss_diff"] == 0.0  # the loss at step k was computed before the changed update
    same = lakelog.query("group_drift", con=con, run_a="base", run_b="same")
    assert same["drift_rank"].null_count() == same.height and (same["norm_gap"] == 0).all()


def test_group_drift_answers_the_same_with_or_without_param_digests(lake, tmp_path):
    """Captures whose digests agree are summed per run instead of paired: the same frame either way."""
    root = lake("base", "lr")
    for run in ("base", "lr"):
        shutil.copytree(root / run, tmp_path / run, ignore=shutil.ignore_patterns("param_digests"))
    with_digests, without = lakelog.connect(root), lakelog.connect(tmp_path)
    same_caps = with_digests.execute(
        "SELECT count(*) FROM paired_param_digests('base', 'lr', 0) WHERE capture = 'step' AND wa = wb"
    ).fetchall()[0][0]
    assert same_caps >= CAUSE_STEP - 1  # the fast path is taken before the runs part
    assert without.execute("SELECT count(*) FROM param_digests").fetchall() == [(0,)]
    fast, paired = (
        lakelog.query("group_drift", con=c, run_a="base", run_b="lr").sort("step", "group")
        for c in (with_digests, without)
    )
    assert_frame_equal(fast, paired, check_exact=False, rel_tol=1e-12)
    assert fast.filter(pl.col("step") < CAUSE_STEP)["norm_gap"].to_list() == [0.0] * (
        fast.filter(pl.col("step") < CAUSE_STEP).height
    )


def test_param_diff_lists_the_differing_tensors_first(con):
    params = lakelog.query("param_diff", con=con, run_a="base", run_b="lr")
    assert params["step"].unique().to_list() == [CAUSE_STEP]
    differing = params.filter(~pl.col("equal"))
    assert sorted(differing["name"]) == ["head.bias", "head.weight"]
    assert params["equal"].to_list()[:2] == [False, False]


def test_param_diff_at_a_given_step_answers_as_the_search_does(con):
    found = lakelog.query("param_diff", con=con, run_a="base", run_b="lr")
    at = lakelog.query("param_diff", con=con, run_a="base", run_b="lr", step=CAUSE_STEP)
    assert at.equals(found)  # the same answer, the step given instead of searched for
    later = lakelog.query("param_diff", con=con, run_a="base", run_b="lr", step=CAUSE_STEP + 2)
    assert later["step"].unique().to_list() == [CAUSE_STEP + 2] and later.height == found.height


def test_env_diff_lists_config_and_environment_keys(con):
    env = lakelog.query("env_diff", con=con, run_a="base", run_b="lr")
    assert env.select("section", "key", "value_b").rows() == [("config", "cause", '"lr"')]
    assert lakelog.query("env_diff", con=con, run_a="base", run_b="same").is_empty()


def test_leaderboard_flattens_the_config_and_ranks_by_the_metric(con):
    board = lakelog.query("leaderboard", con=con)
    assert {"config.lr", "config.batch", "config.cause", "final_loss", "train_time_s"} <= set(board.columns)
    values = board["metric_value"].to_list()
    ranked = [
        v for v in values if v is not None and not math.isnan(v)
    ]  # a diverged run's NaN loss ranks last
    assert values[: len(ranked)] == sorted(ranked) and len(ranked) >= 2
    best = lakelog.query("leaderboard", con=con, metric="acc", descending=True)
    accs = [v for v in best["metric_value"].to_list() if v is not None and not math.isnan(v)]
    assert accs == sorted(accs, reverse=True) and best["metric_value"].to_list()[: len(accs)] == accs
    assert best["place"][0] == 1


def test_run_list_and_step_overlap(con):
    runs = lakelog.query("run_list", con=con)
    assert {"base", "lr"} <= set(runs["run"]) and runs.filter(pl.col("run") == "base")["last_step"][0] == 15
    overlap = lakelog.query("step_overlap", con=con, run_a="base", run_b="lr")
    assert overlap.select("side", "n_steps").rows() == [("A", 16), ("B", 16), ("common", 16)]
