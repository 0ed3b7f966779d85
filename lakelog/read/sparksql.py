"""A library query as Spark SQL: its Spark-dialect file when one exists, else translated from DuckDB by sqlglot.

No pyspark here: the translation is plain text work, testable without Java.

- ``queries/spark/<same relative path>.sql`` (e.g. ``queries/spark/internal/plot_divergence.sql``)
  is a hand-written Spark version; only its body is used, the header stays the DuckDB file's.
- Otherwise sqlglot reads the DuckDB SQL and writes Spark SQL, with every ``$name`` placeholder
  written as Spark's named parameter marker ``:name``: values are bound by ``spark.sql(sql, args=…)``,
  never formatted into the text.
- DuckDB macros shared by the queries (``queries/_*.sql``: ``CREATE MACRO``) are expanded inline,
  scalar macros as their expression and table macros as a subquery, since Spark SQL has no macros.
- Where the engines differ in meaning (1-based list indexes, ordered ``list()``, fmt's ``format``…),
  :mod:`lakelog.read.sparkfix` rewrites the tree, using the column types sqlglot infers from the views.
- What sqlglot cannot write for Spark, and DuckDB functions Spark lacks, raise a QueryError naming the
  query and the construct, and pointing at the Spark-dialect file that would replace the translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB as DuckDBDialect
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from lakelog.errors import QueryError
from lakelog.lake.layout import TABLES
from lakelog.lake.schemas import reader_schema, sql_type
from lakelog.read.macros import queries_dir
from lakelog.read.queryfiles import DIALECT_FOLDERS, Query
from lakelog.read.sparkfix import adapt_tree
from lakelog.read.views import RUNS_SCHEMA

SPARK = DIALECT_FOLDERS[0]


class DuckDB(DuckDBDialect):
    """DuckDB as sqlglot reads it, but ``len(x)`` kept apart from ``length(x)``: the queries use ``len``
    for lists (Spark's ``size``) and ``length`` for text, which decides where the types are unknown."""

    class Parser(DuckDBDialect.Parser):
        FUNCTIONS = {  # noqa: RUF012 - sqlglot's own pattern for extending a dialect
            **DuckDBDialect.Parser.FUNCTIONS,
            "LEN": lambda args: exp.Anonymous(this="LEN", expressions=args),
        }


MISSING = {
    "JSON_TREE": "json_tree (a table function Spark does not have)",
    "JSON_MERGE_PATCH": "json_merge_patch",
    "LIST_ZIP": "list_zip (Spark's arrays_zip names its fields)",
    "STRUCT_PACK": "struct_pack",
}
"""DuckDB functions that Spark SQL lacks and no rewrite replaces: refused before Spark is asked."""


def _spark_type(kind: pa.DataType) -> str:
    return sql_type(kind, spark=True) or "VARCHAR"


@cache
def _schema() -> dict[str, dict[str, str]]:
    """The views' columns and types, so sqlglot knows which ``len`` is of a list and which of text."""
    tables = {t: {f.name: _spark_type(f.type) for f in reader_schema(t)} for t in TABLES}
    tables["runs"] = {f.name: _spark_type(f.type) for f in RUNS_SCHEMA}
    return tables


def dialect_file(query: Query) -> Path | None:
    """The Spark-dialect version of ``query`` (``queries/spark/<relative path>``), when one exists."""
    root = queries_dir()
    try:
        relative = query.path.relative_to(root)
    except ValueError:
        return None
    path = root / SPARK / relative
    return path if path.is_file() else None


def _body(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if not line.strip().startswith("--")), len(lines))
    return "\n".join(lines[start:]).strip().rstrip(";")


@cache
def _macros(directory: str) -> dict[str, exp.Create]:
    """Every ``CREATE MACRO`` of ``queries/_*.sql``, by lower-case name."""
    found: dict[str, exp.Create] = {}
    for path in sorted(Path(directory).glob("_*.sql")):
        try:
            statements = sqlglot.parse(path.read_text(encoding="utf-8"), read=DuckDB)
        except SqlglotError as exc:
            raise QueryError(f"{path}: sqlglot cannot read the macros: {exc}") from exc
        for statement in statements:
            if isinstance(statement, exp.Create) and str(statement.args.get("kind", "")).upper() == "MACRO":
                found[statement.this.this.name.lower()] = statement
    return found


def _substitute(body: exp.Expression, names: list[str], args: list[exp.Expression]) -> exp.Expression:
    values = {name.lower(): arg for name, arg in zip(names, args, strict=True)}

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in values:
            return exp.paren(values[node.name.lower()].copy(), copy=False)
        return node

    return body.copy().transform(replace)


def _expand(tree: exp.Expression, macros: dict[str, exp.Create], query: Query) -> exp.Expression:
    """Replace macro calls by their bodies, until none is left (macros may call macros)."""
    for _ in range(20):
        expanded = False

        def replace(node: exp.Expression) -> exp.Expression:
            nonlocal expanded
            call = node.this if isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous) else node
            if not isinstance(call, exp.Anonymous) or call.name.lower() not in macros:
                return node
            macro = macros[call.name.lower()]
            names = [p.name for p in macro.this.expressions]
            if len(names) != len(call.expressions):
                raise QueryError(
                    f"query {query.name!r} ({query.path.name}): macro {call.name} takes {len(names)} "
                    f"arguments, the query passes {len(call.expressions)}"
                )
            body = _substitute(macro.expression, names, list(call.expressions))
            expanded = True
            if isinstance(node, exp.Table):  # a table macro: FROM m(…) AS t
                alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(call.name))
                return exp.Subquery(this=body, alias=alias.copy())
            return body if isinstance(body, exp.Subquery | exp.Select) else exp.paren(body, copy=False)

        tree = tree.transform(replace)
        if not expanded:
            return tree
    raise QueryError(f"query {query.name!r} ({query.path.name}): its macros call each other without end")


def spark_file_hint(query: Query) -> str:
    """Where a hand-written Spark version of ``query`` goes."""
    try:
        relative = query.path.relative_to(queries_dir()).as_posix()
    except ValueError:
        relative = query.path.name
    return f"write a Spark version in queries/{SPARK}/{relative}"


def _refuse_missing(tree: exp.Expression, query: Query) -> None:
    for node in tree.find_all(exp.Anonymous):
        what = MISSING.get(node.name.upper())
        if what:
            raise QueryError(
                f"query {query.name!r} ({query.path.name}) cannot run on Spark: it uses {what}, which "
                f"Spark SQL lacks; {spark_file_hint(query)}"
            )


def _typed(tree: exp.Expression) -> exp.Expression:
    """``tree`` with the types sqlglot infers from the views' schema set on its nodes (best effort).

    The inference needs columns qualified and stars expanded, which rewrites a copy; the types are
    carried back to the original nodes, so the SQL written for Spark keeps the query's own shape.
    """
    nodes = list(tree.walk())
    for i, node in enumerate(nodes):
        node.meta["lakelog_id"] = i
    try:
        qualified = qualify(
            tree.copy(),
            schema=_schema(),
            dialect=DuckDB,
            validate_qualify_columns=False,
            quote_identifiers=False,
            expand_stars=True,
        )
        annotate_types(qualified, schema=_schema(), dialect=DuckDB)
    except SqlglotError:
        return tree
    for node in qualified.walk():
        i = node.meta.get("lakelog_id") if node.meta else None
        if i is not None and node.type is not None and nodes[i].__class__ is node.__class__:
            nodes[i].type = node.type
    return tree


@dataclass(frozen=True)
class Step:
    """One statement of a query on Spark: a WITH clause's query made a temporary view, or the answer."""

    view: str | None
    sql: str
    params: tuple[str, ...]
    """The ``:name`` parameters this statement binds."""


CTE_PREFIX = "lakelog_cte_"
"""Temporary views a query's WITH clauses become while it runs (dropped after)."""


def to_spark(query: Query) -> str:
    """Spark SQL for ``query`` as one statement, its parameters as ``:name`` markers.

    A QueryError says why it cannot be. :func:`steps` is what the Spark engine runs.
    """
    override = dialect_file(query)
    if override is not None:
        return _body(override)
    return _generate(_translate(query.sql, query.name, str(query.path)), query)


def steps(query: Query) -> tuple[Step, ...]:
    """``query`` on Spark as statements run in order: each top-level WITH query is computed once into a
    temporary view, as DuckDB materialises a CTE used more than once; Spark would otherwise inline
    it at every use, and a plan that large takes minutes to optimise even over a small lake."""
    override = dialect_file(query)
    tree = (
        sqlglot.parse_one(_body(override), read="spark")
        if override is not None
        else _translate(query.sql, query.name, str(query.path))
    )
    return tuple(
        Step(
            view, _generate(part, query), tuple(dict.fromkeys(p.name for p in part.find_all(exp.Placeholder)))
        )
        for view, part in _split(tree)
    )


def _split(tree: exp.Expression) -> list[tuple[str | None, exp.Expression]]:
    key = "with_" if "with_" in tree.arg_types else "with"
    with_ = tree.args.get(key)
    if not isinstance(with_, exp.With) or with_.args.get("recursive"):
        return [(None, tree)]
    ctes = list(with_.expressions)
    if any(cte.args.get("alias") is None or cte.args["alias"].columns for cte in ctes):
        return [(None, tree)]
    names = {cte.alias: f"{CTE_PREFIX}{cte.alias}" for cte in ctes}

    def rename(part: exp.Expression) -> exp.Expression:
        for table in list(part.find_all(exp.Table)):
            if not table.db and table.name in names and isinstance(table.this, exp.Identifier):
                alias = table.alias or table.name
                table.set("this", exp.to_identifier(names[table.name]))
                table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
        return part

    out: list[tuple[str | None, exp.Expression]] = [
        (names[cte.alias], rename(cte.this.copy())) for cte in ctes
    ]
    final = tree.copy()
    final.set(key, None)
    out.append((None, rename(final)))
    return out


def _generate(tree: exp.Expression, query: Query) -> str:
    try:
        return tree.sql(dialect="spark", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except SqlglotError as exc:
        raise QueryError(
            f"query {query.name!r} ({query.path.name}) cannot be translated to Spark SQL: "
            f"{str(exc).splitlines()[0]}; {spark_file_hint(query)}"
        ) from exc


@cache
def _translate(sql: str, name: str, path: str) -> exp.Expression:
    """The DuckDB query as a tree rewritten for Spark (macros expanded, meanings kept); not to be mutated."""
    query = Query(name=name, doc="", sql=sql, path=Path(path))
    try:
        tree = sqlglot.parse_one(sql, read=DuckDB)
    except SqlglotError as exc:
        raise QueryError(
            f"query {name!r} ({Path(path).name}): sqlglot cannot read its DuckDB SQL: {exc}"
        ) from exc
    macros = _macros(str(queries_dir()))
    if macros:
        tree = _expand(tree, macros, query)
    _refuse_missing(tree, query)
    return adapt_tree(_typed(tree))
