"""The CLI's shape: one error translation for every command, output that fits where it goes, a fast
``--help``, per-query help and "did you mean" for mistyped names."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from lakelog.cli import COMMANDS, cli
from lakelog.lake.progress import busy

WIDE_SQL = (
    "SELECT run, 'first value that is rather long' AS a_long_column_name_one, "
    "'second value, also long enough' AS a_long_column_name_two, 42 AS is_first, "
    "'differs' AS status, [1, 2, 3] AS ids_b, 'a trailing column at the very end' AS trailing_column "
    "FROM runs ORDER BY run"
)
WIDE_COLUMNS = (
    "a_long_column_name_one",
    "a_long_column_name_two",
    "is_first",
    "status",
    "ids_b",
    "trailing_column",
)


@pytest.fixture(scope="module")
def root(lake):
    return str(lake("base", "same", "lr", "frozen"))


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def one_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("lakelog: error: ") and message in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output


def test_help_lists_every_command_without_importing_them_or_torch():
    script = (
        "import sys\n"
        "from lakelog.cli import cli\n"
        "try:\n"
        "    cli(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('lakelog.cli.') and m not in "
        "('lakelog.cli.base',))\n"
        "heavy = sorted(m for m in ('torch', 'duckdb', 'polars', 'pyarrow', 'rich') if m in sys.modules)\n"
        "print('LOADED', loaded, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out, out
    assert "LOADED [] []" in out, out


def test_a_library_error_is_one_line_for_every_command(root, tmp_path):
    missing = tmp_path / "nowhere"
    one_line(run("sql", "SELEC 1", "--root", root), "")
    one_line(run("runs", "--root", missing), "does not exist")
    one_line(run("diff", "base", "nope", "--root", root), "'nope'")
    one_line(run("report", "nope", "--root", root, "-o", tmp_path / "r.html"), "'nope'")
    one_line(run("compare-dumps", "base", "nope", "--root", root, "-o", tmp_path / "c"), "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(run("import-dumps", empty, "--run", "x", "--root", tmp_path / "lake"), "")
    one_line(
        run("query", "leaderboard", "--root", root, "-p", "descending", "yes"), "expected true, false or auto"
    )


def test_an_os_error_is_one_line_too(root, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    result = run("runs", "--root", root, "--format", "csv", "-o", blocked / "rows.csv")
    one_line(result, "rows.csv")


def test_piped_tables_keep_every_column_and_row(root):
    out = run("sql", WIDE_SQL, "--root", root)
    assert out.exit_code == 0, out.output
    header = next(line for line in out.output.splitlines() if "a_long_column_name_one" in line)
    for name in WIDE_COLUMNS:
        assert name in header, header  # one header line: no column folded, cut or dropped
    assert "second value, also long enough" in out.output
    assert out.output.count("first value that is rather long") == 4


def test_columns_is_honoured_by_wrapping_or_records(root):
    narrow = run("sql", WIDE_SQL, "--root", root, env={"COLUMNS": "60"})
    assert narrow.exit_code == 0, narrow.output
    assert max(len(line) for line in narrow.output.splitlines()) <= 60, narrow.output
    # too wide to wrap legibly: one "column: value" block per row, every column and value whole
    assert narrow.output.count("-- row ") == 4
    assert "trailing_column: a trailing column at the very end" in narrow.output
    assert "      is_first: 42" in narrow.output and "ids_b: [1, 2, 3]" in narrow.output
    medium = run("sql", WIDE_SQL, "--root", root, env={"COLUMNS": "150"})
    lines = medium.output.splitlines()
    assert max(len(line) for line in lines) <= 150 and "-- row " not in medium.output
    header = next(line for line in lines if "a_long_column_name_one" in line)
    assert all(name in header for name in WIDE_COLUMNS), medium.output  # wrapped cells, whole headers
    assert "first value that is" in medium.output


def test_query_name_help_shows_its_parameters(root):
    out = run("query", "leaderboard", "--help")
    assert out.exit_code == 0, out.output
    assert "Usage: lakelog query leaderboard" in out.output
    for name in ("metric", "descending", "loss_name"):
        assert name in out.output
    assert "default 'loss'" in out.output and "leaderboard.sql" in out.output
    generic = run("query", "--help")
    assert "--list" in generic.output and "NAME --help" in generic.output


def test_did_you_mean_for_queries_commands_and_runs(root):
    one_line(run("query", "leaderbord", "--root", root), "did you mean 'leaderboard'")
    one_line(run("query", "leaderbord", "--help"), "did you mean 'leaderboard'")
    one_line(run("dif", "base", "lr"), "did you mean 'diff'")
    one_line(run("diff", "base", "frozne", "--root", root), "did you mean 'frozen'")
    one_line(run("report", "basee", "--root", root), "did you mean 'base'")
    one_line(run("compare-dumps", "base", "lrr", "--root", root), "did you mean 'lr'")


def test_every_row_command_speaks_csv_and_json(root):
    for args in (("runs",), ("query", "run_list"), ("sql", "SELECT run FROM runs")):
        rows = json.loads(run(*args, "--root", root, "--format", "json").output)
        assert {"base", "lr"} <= {r["run"] for r in rows}
        assert run(*args, "--root", root, "--format", "csv").output.startswith("run")
    layers = run("diff", "base", "lr", "--root", root, "--format", "csv")
    assert layers.exit_code == 1 and layers.output.splitlines()[0].startswith("layer,status")
    assert (
        json.loads(run("diff", "base", "lr", "--root", root, "--format", "json").output)["identical"] is False
    )


def test_doctor_prints_rows_as_csv_or_json(root, tmp_path):
    checks = json.loads(run("doctor", "frozen", "--root", root, "--format", "json").output)
    assert {"check", "status", "summary", "query"} <= set(checks[0])
    assert any(c["check"] == "frozen_layers" and c["status"] == "warn" for c in checks)
    target = tmp_path / "doctor.csv"
    result = run("doctor", "frozen", "--root", root, "--format", "csv", "-o", target)
    assert result.exit_code == 1 and target.read_text().startswith("check,status,summary,query")


def test_leaderboard_ranks_best_first_and_refuses_unknown_metrics(root):
    by_loss = json.loads(
        run("query", "leaderboard", "-p", "metric", "loss", "--root", root, "--format", "json").output
    )
    assert by_loss[0]["higher_is_better"] is False
    assert [r["metric_value"] for r in by_loss] == sorted(r["metric_value"] for r in by_loss)
    by_acc = json.loads(
        run("query", "leaderboard", "-p", "metric", "acc", "--root", root, "--format", "json").output
    )
    assert by_acc[0]["higher_is_better"] is True
    assert [r["metric_value"] for r in by_acc] == sorted((r["metric_value"] for r in by_acc), reverse=True)
    flipped = run(
        "query",
        "leaderboard",
        "-p",
        "metric",
        "acc",
        "-p",
        "descending",
        "false",
        "--root",
        root,
        "--format",
        "json",
    )
    ascending = [r["metric_value"] for r in json.loads(flipped.output)]
    assert ascending == sorted(ascending) and ascending != [r["metric_value"] for r in by_acc]
    wrong = run("query", "leaderboard", "-p", "metric", "recal", "--root", root)
    one_line(wrong, "metric: no run has recal")
    assert "metrics there are: " in wrong.output and "loss" in wrong.output.split("metrics there are: ")[1]


def test_the_sql_and_python_directions_agree(root):
    from lakelog.read import querylib
    from lakelog.read.plots import lower_is_better

    for metric in ("loss", "acc", "duration_s", "grad_norm", "update_ratio", "last_step"):
        board = querylib.query("leaderboard", root=root, metric=metric)
        assert board["higher_is_better"][0] is (not lower_is_better(metric)), metric


def test_long_work_shows_its_elapsed_time_and_quick_work_shows_nothing(capsys):
    with busy("diff: comparing the runs", show=True, after=0.05):
        time.sleep(0.8)
    shown = capsys.readouterr().err
    assert "diff: comparing the runs" in shown and "00:0" in shown
    with busy("quick", show=True, after=2.0):
        time.sleep(0.01)
    with busy("hidden", show=False, after=0.0):
        time.sleep(0.3)
    assert capsys.readouterr().err == ""


def test_diff_and_check_determinism_offer_progress():
    for command in ("diff", "check-determinism"):
        assert "--progress / --no-progress" in run(command, "--help").output


def test_json_is_strict_even_with_nan_and_infinities(root):
    sql = "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '-inf'::DOUBLE AS c, 1.5 AS d, [1.0, 'nan'::DOUBLE] AS e"
    out = run("sql", sql, "--root", root, "--format", "json").output
    rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert rows == [{"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 1.5, "e": [1.0, "NaN"]}]
    report = json.loads(
        run("diff", "base", "lr", "--root", root, "--json").output,
        parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"),
    )
    assert report["first_layer"] == "weights"
