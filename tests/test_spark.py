"""The query library on Spark (local mode, real JVM) gives the rows DuckDB gives, over the same real lake."""

from __future__ import annotations

import json
import os
import shutil

import polars as pl
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import CAUSE_STEP, Net, dataset
from polars.testing import assert_frame_equal

import lakelog
from lakelog.cli import cli
from lakelog.errors import InvalidArgumentError, QueryError
from lakelog.read import querylib

pytest.importorskip("pyspark", reason="pyspark is the spark extra: pip install 'lakelog[spark]'")
sparksql = pytest.importorskip("lakelog.read.sparksql")

needs_java = pytest.mark.skipif(
    shutil.which("java") is None and not os.environ.get("CI"),
    reason="Spark needs Java 17+ (.ci/run installs it; in CI a missing Java fails instead)",
)


@pytest.fixture(scope="module")
def root(lake, tmp_path_factory):
    """base/lr/shuffle (known causes), frozen/nan/imbalanced (health), ddp (two ranks, rank 1 perturbed)."""
    path = lake("base", "lr", "shuffle", "frozen", "nan", "imbalanced", "healthy")
    x, y, _ = dataset()
    for rank in (0, 1):
        torch.manual_seed(0)
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with lakelog.init(path, name="ddp", rank=rank, world_size=2, seed=0) as run:
            run.watch(model, optimizer, every=1)
            for step in range(6):
                loss = F.cross_entropy(model(x[:8]), y[:8])
                optimizer.zero_grad()
                loss.backward()
                if rank == 1 and step == 3:  # a rank-dependent update: the replicas part here
                    model.head.weight.grad.add_(1e-3)
                optimizer.step()
                run.log({"loss": float(loss.detach())}, step=step)
    return path


@pytest.fixture(scope="module")
def spark():
    from lakelog.read.spark import local_session

    return local_session()


def both(root, spark, name, **params):
    duck = lakelog.query(name, root=root, **params)
    on_spark = lakelog.query(name, root=root, engine="spark", spark=spark, **params)
    return duck, on_spark


def _unsigned_nan(frame: pl.DataFrame) -> pl.DataFrame:
    """fmt prints a NaN's sign bit ("-nan"); Java cannot see it, so text is compared with plain "nan"."""
    text = [c for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns(pl.col(c).str.replace_all(r"-nan\b", "nan") for c in text)


def assert_same(duck: pl.DataFrame, on_spark: pl.DataFrame) -> None:
    """Same columns in the same order, same rows in the same order; numbers equal (floats to 1e-9)."""
    assert on_spark.columns == duck.columns
    assert on_spark.height == duck.height
    duck, on_spark = _unsigned_nan(duck), _unsigned_nan(on_spark)
    assert_frame_equal(duck, on_spark, check_dtypes=False, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)


PAIRS = [
    ("first_divergence", {"run_a": "base", "run_b": "lr"}),
    ("first_divergence", {"run_a": "base", "run_b": "shuffle", "tol": 1e-4}),
    ("batch_order_mismatch", {"run_a": "base", "run_b": "shuffle"}),
    ("group_drift", {"run_a": "base", "run_b": "lr"}),
    ("rank_desync", {"run": "ddp"}),
    ("rank_desync", {}),
    ("grad_health", {"run": "base"}),
    ("nan_inf", {"run": "nan"}),
    ("overfitting", {"run": "healthy"}),
    ("label_balance", {"run": "imbalanced"}),
    ("lr_ratio", {"run": "base", "numerator": "head", "denominator": "backbone", "expected": 10.0}),
    ("frozen_layers", {"run": "frozen"}),
    ("updates_per_epoch", {"run": "base"}),
]


@pytest.mark.slow
@needs_java
@pytest.mark.parametrize(
    ("name", "params"), PAIRS, ids=[f"{n}-{'-'.join(map(str, p.values()))}" for n, p in PAIRS]
)
def test_spark_and_duckdb_give_the_same_rows(root, spark, name, params):
    duck, on_spark = both(root, spark, name, **params)
    assert_same(duck, on_spark)
    if name == "first_divergence" and params["run_b"] == "lr":
        first = on_spark.filter(pl.col("is_first")).row(0, named=True)
        assert (first["layer"], first["first_step"]) == ("weights", CAUSE_STEP)
    if name == "rank_desync" and params:
        assert set(on_spark["step"]) == {3} and duck.height > 0


@pytest.mark.slow
@needs_java
def test_views_have_connects_names_and_columns(root, spark):
    from lakelog.read.spark import register_views

    register_views(root, spark)
    con = lakelog.connect(root)
    for view in ("runs", "predictions", "scalars", "batches", "params", "holdout", "pred_digests", "workers"):
        duck_columns = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        assert spark.table(view).columns == duck_columns, view
    counts = spark.sql("SELECT run, count(*) AS n FROM scalars GROUP BY run ORDER BY run").toArrow()
    expected = con.execute("SELECT run, count(*) AS n FROM scalars GROUP BY run ORDER BY run").fetchall()
    assert list(zip(counts["run"].to_pylist(), counts["n"].to_pylist(), strict=True)) == expected
    ranks = spark.sql("SELECT DISTINCT rank FROM params WHERE run = 'ddp' ORDER BY rank").toArrow()
    assert ranks["rank"].to_pylist() == [0, 1]


@pytest.mark.slow
@needs_java
def test_cli_engine_spark_prints_what_duckdb_prints(root):
    args = ["query", "grad_health", "--root", str(root), "-p", "run", "base", "--format", "json"]
    duck = CliRunner().invoke(cli, args)
    on_spark = CliRunner().invoke(cli, [*args, "--engine", "spark"])
    assert duck.exit_code == 0 and on_spark.exit_code == 0, on_spark.output
    assert_same(pl.DataFrame(json.loads(duck.output)), pl.DataFrame(json.loads(on_spark.output)))


# -- without a JVM: translation and refusals ----------------------------------------------------------


def test_a_query_spark_cannot_run_names_the_query_and_the_construct(tmp_path):
    lakelog.init(tmp_path, name="a").finish()
    with pytest.raises(
        QueryError, match=r"query 'env_diff' \(env_diff.sql\) cannot run on Spark: .*json_tree"
    ) as info:
        lakelog.query("env_diff", root=tmp_path, engine="spark", run_a="a", run_b="a")
    assert "queries/spark/env_diff.sql" in str(info.value)


def test_parameters_travel_as_named_markers_never_as_text():
    steps = sparksql.steps(querylib.get("first_divergence"))
    text = " ".join(step.sql for step in steps)
    assert ":run_a" in text and ":run_b" in text and "$run_a" not in text
    assert {p for step in steps for p in step.params} >= {"run_a", "run_b", "tol"}
    assert steps[-1].view is None and all(s.view.startswith(sparksql.CTE_PREFIX) for s in steps[:-1])


def test_a_spark_dialect_file_replaces_the_translation(tmp_path, monkeypatch):
    (tmp_path / "spark").mkdir()
    (tmp_path / "q.sql").write_text(
        "-- name: q\n-- A DuckDB-only question.\n-- param run: the run\n"
        "SELECT key FROM json_tree('{}') WHERE $run IS NOT NULL\n"
    )
    (tmp_path / "spark" / "q.sql").write_text("-- Spark version of q\nSELECT :run AS key\n")
    monkeypatch.setenv("LAKELOG_QUERIES", str(tmp_path))
    q = querylib.get("q")
    assert sparksql.to_spark(q) == "SELECT :run AS key"
    assert [s.params for s in sparksql.steps(q)] == [("run",)]


def test_engine_arguments_are_checked():
    with pytest.raises(InvalidArgumentError, match="engine: expected one of 'duckdb', 'spark', got 'oracle'"):
        lakelog.query("run_list", engine="oracle")
    with pytest.raises(InvalidArgumentError, match="spark: a SparkSession is used only with engine='spark'"):
        lakelog.query("run_list", spark=object())


@pytest.mark.slow
@needs_java
def test_a_function_spark_lacks_is_named(root, spark, tmp_path, monkeypatch):
    (tmp_path / "similar.sql").write_text(
        "-- name: similar\n-- Runs whose names look alike.\n-- param run: the run\n"
        "SELECT run, jaccard(run, $run) AS score FROM runs ORDER BY run\n"
    )
    monkeypatch.setenv("LAKELOG_QUERIES", str(tmp_path))
    assert lakelog.query("similar", root=root, run="base").height > 0  # DuckDB has jaccard
    with pytest.raises(
        QueryError,
        match=r"query 'similar' \(similar.sql\) cannot run on Spark: Spark SQL has no function JACCARD",
    ) as info:
        lakelog.query("similar", root=root, engine="spark", spark=spark, run="base")
    assert "queries/spark/similar.sql" in str(info.value)
