"""The CLI over the query library: sql, query, runs, diff, doctor; bad input gives one line and exit 2."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest
from click.testing import CliRunner
from conftest import CAUSE_STEP

from lakelog.cli import cli

COMMANDS = ("sql", "query", "runs", "diff", "doctor")


@pytest.fixture(scope="module")
def root(lake):
    return str(lake("base", "same", "lr", "frozen", "many_batches"))


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def failed(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("lakelog: error: ") and message in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_every_command_is_listed_and_has_help():
    listing = run("--help")
    for name in COMMANDS:
        assert name in listing.output
        helped = run(name, "--help")
        assert helped.exit_code == 0 and len(helped.output.split("\n\n")[1].strip()) > 20


def test_sql_prints_a_table_or_csv_json_parquet(root, tmp_path):
    sql = "SELECT run, max(step) AS last FROM scalars WHERE run IN ('base', 'lr') GROUP BY run ORDER BY run"
    table = run("sql", sql, "--root", root)
    assert table.exit_code == 0 and "base" in table.output and "15" in table.output
    rows = list(csv.DictReader(io.StringIO(run("sql", sql, "--root", root, "--format", "csv").output)))
    assert rows == [{"run": "base", "last": "15"}, {"run": "lr", "last": "15"}]
    assert json.loads(run("sql", sql, "--root", root, "--format", "json").output)[1] == {
        "run": "lr",
        "last": 15,
    }
    out = tmp_path / "rows.parquet"
    assert run("sql", sql, "--root", root, "--format", "parquet", "-o", out).exit_code == 0
    assert pl.read_parquet(out)["run"].to_list() == ["base", "lr"]
    failed(
        run("sql", sql, "--root", root, "--format", "parquet"), "--format parquet: give a file with -o FILE"
    )


def test_sql_binds_parameters_and_nested_columns_become_json_in_csv(root):
    sql = "SELECT step, sample_ids FROM batches WHERE run = $run AND step < $n ORDER BY step"
    out = run("sql", sql, "--root", root, "-p", "run", "base", "--param", "n=2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [r["step"] for r in rows] == ["0", "1"] and json.loads(rows[0]["sample_ids"])[0].startswith("s")
    failed(run("sql", "SELECT * FROM nowhere", "--root", root), "")
    failed(run("sql", "SELECT 1", "--root", root, "--param", "novalue"), "--param: expected NAME=VALUE")


def test_query_list_shows_docs_and_parameters():
    out = run("query", "--list")
    assert out.exit_code == 0
    assert "first_divergence(run_a, run_b, tol=0.0, loss_name='loss'" in out.output
    assert "loss_name = 'loss': the scalar holding the training loss" in out.output
    listed = json.loads(run("query", "--list", "--format", "json").output)
    assert {q["name"] for q in listed} >= {"first_divergence", "grad_health"}
    assert not [q["name"] for q in listed if q["name"].startswith(("internal.", "plot_", "determinism_"))]
    assert "internal.plot_divergence" not in out.output
    every = json.loads(run("query", "--list", "--all", "--format", "json").output)
    assert {"internal.plot_divergence", "first_divergence"} <= {q["name"] for q in every}


def test_query_runs_a_named_query_with_both_parameter_styles(root):
    out = run(
        "query",
        "first_divergence",
        "--root",
        root,
        "-p",
        "run_a",
        "base",
        "--param",
        "run_b=lr",
        "--param",
        "tol=0",
        "--format",
        "json",
    )
    assert out.exit_code == 0, out.output
    first = [r for r in json.loads(out.output) if r["is_first"]]
    assert (first[0]["layer"], first[0]["first_step"]) == ("weights", CAUSE_STEP)
    table = run("query", "group_drift", "--root", root, "-p", "run_a", "base", "-p", "run_b", "lr")
    assert table.exit_code == 0 and "head" in table.output


def test_query_bad_input_is_one_line(root):
    failed(run("query", "nope", "--root", root), "unknown query 'nope'")
    failed(run("query", "first_divergence", "--root", root, "-p", "run_a", "base"), "needs parameter 'run_b'")
    failed(
        run(
            "query",
            "first_divergence",
            "--root",
            root,
            "-p",
            "run_a",
            "base",
            "-p",
            "run_b",
            "lr",
            "--param",
            "tol=abc",
        ),
        "parameter 'tol': expected a number",
    )
    failed(run("query", "--root", root), "query: give a query NAME")
    failed(run("query", "run_list", "--root", "/no/such/lake"), "root: '/no/such/lake' does not exist")


def test_a_run_name_that_looks_like_sql_is_bound_not_executed(root):
    out = run(
        "query",
        "first_divergence",
        "--root",
        root,
        "-p",
        "run_a",
        "base",
        "-p",
        "run_b",
        "a'; DROP TABLE x; --",
        "--format",
        "json",
    )
    assert out.exit_code == 0, out.output
    assert {r["status"] for r in json.loads(out.output)} <= {"missing in B", "not captured"}
    failed(
        run("diff", "base", "a'; DROP TABLE x; --", "--root", root), 'run "a\'; DROP TABLE x; --" not found'
    )


def test_runs_lists_the_lake(root):
    out = run("runs", "--root", root, "--format", "json")
    assert out.exit_code == 0 and {"base", "lr", "same"} <= {r["run"] for r in json.loads(out.output)}


def test_diff_exit_codes_and_screen(root):
    same = run("diff", "base", "same", "--root", root)
    assert same.exit_code == 0 and "identical" in same.output
    differ = run("diff", f"{root}/base", f"{root}/lr")
    assert differ.exit_code == 1
    assert f"the runs part first in weights at step {CAUSE_STEP}" in differ.output
    for section in (
        "Layers of evidence",
        "Tensors that differ",
        "Drift per parameter group",
        "run.json differences",
    ):
        assert section in differ.output
    data = json.loads(run("diff", "base", "lr", "--root", root, "--json").output)
    assert data["first_layer"] == "weights" and data["identical"] is False
    failed(run("diff", "base", "nope", "--root", root), "run 'nope' not found")


def test_doctor_exit_codes_and_thresholds(root):
    frozen = run("doctor", "frozen", "--root", root)
    assert frozen.exit_code == 1 and "frozen_layers" in frozen.output and "warn" in frozen.output
    assert "frozen_layers: evidence" in frozen.output
    ok = run("doctor", "many_batches", "--root", root, "--lr-ratio", "head/backbone=10")
    assert ok.exit_code == 0, ok.output
    assert run("doctor", "base", "--root", root, "-p", "min_batches", "5", "--no-evidence").exit_code == 0
    failed(run("doctor", "base", "--root", root, "-p", "colour", "red"), "doctor: unknown expectation")
    failed(run("doctor", "base", "--root", root, "-p", "min_batches", "many"), "parameter 'min_batches'")


def test_the_commands_import_neither_torch_nor_pandas(root):
    """The read side needs neither: torch is the write side's, and pandas (which pyarrow imports on
    its first ``pa.array`` where pandas is installed) costs every read command ~0.15 s and ~40 MB."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lakelog.cli import cli\n"
        f"result = CliRunner().invoke(cli, ['diff', 'base', 'lr', '--root', {root!r}])\n"
        "assert result.exit_code == 1, result.output\n"
        f"assert CliRunner().invoke(cli, ['doctor', 'base', '--root', {root!r}]).exit_code == 0  # healthy\n"
        "assert 'torch' not in sys.modules, 'the read side imported torch'\n"
        "assert 'pandas' not in sys.modules, 'the read side imported pandas'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_query_engine_option_is_checked_and_spark_refusals_are_one_line(root):
    out = run("query", "run_list", "--root", root, "--engine", "oracle")
    assert out.exit_code == 2 and "'oracle' is not one of 'duckdb', 'spark'" in out.output
    pytest.importorskip("pyspark", reason="pyspark is the spark extra")
    failed(
        run(
            "query",
            "env_diff",
            "--root",
            root,
            "-p",
            "run_a",
            "base",
            "-p",
            "run_b",
            "lr",
            "--engine",
            "spark",
        ),
        "query 'env_diff' (env_diff.sql) cannot run on Spark: it uses json_tree",
    )
