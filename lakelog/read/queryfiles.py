"""The query files: parsing each ``.sql`` file's header, checking its placeholders, the namespaced library.

A file starts with a comment header::

    -- name: first_divergence
    -- The first step where two runs differ, per layer of evidence.
    -- param run_a: the reference run
    -- param tol = 0.0: largest absolute logit difference still counted as equal

Declared parameters must be exactly the ``$name`` placeholders the SQL uses in code: an undeclared
placeholder, a declared parameter the SQL never uses, and a declared parameter written inside a
string literal or a quoted identifier (text, which DuckDB never binds) are refused when the library
loads, naming the file. Any other ``$word`` in quotes is text, and one in a comment is prose. Defaults fill what the caller leaves out, and values
always travel as bound parameters, never as SQL text.

Files in a folder of ``queries/`` form a namespace, as in aiosql: ``queries/internal/plot_divergence.sql``
is the query ``internal.plot_divergence``. The ``internal`` namespace holds the plumbing of plots,
reports and diff; the library runs it like any query, and ``lakelog query --list`` leaves it out.
``queries/spark/`` holds Spark-dialect versions of queries (same relative path), not queries of their
own, and files whose name starts with ``_`` (shared macros) are not queries either.
A ``-- flatten: config`` line asks the loader to spread a JSON text column into one column per
leaf (``config.lr``, ``config.opt.name``): DuckDB cannot pivot on data-dependent column names in a
statement with bound parameters.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lakelog.errors import QueryError
from lakelog.lake.checks import did_you_mean
from lakelog.read.macros import queries_dir
from lakelog.read.sqltext import scan

INTERNAL = "internal"
"""The namespace of queries that plots, reports and diff run for themselves."""
DIALECT_FOLDERS = ("spark",)
"""Folders of ``queries/`` that hold another engine's version of a query, not queries."""
_PARAM = re.compile(r"^param\s+([A-Za-z_]\w*)\s*(?:=\s*(.*?))?\s*:\s*(.*)$")
_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    name: str
    doc: str
    default: Any = _NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT


@dataclass(frozen=True)
class Query:
    name: str
    doc: str
    sql: str
    path: Path
    params: tuple[Param, ...] = field(default_factory=tuple)
    flatten: tuple[str, ...] = ()
    """JSON text columns the loader spreads into one column per leaf (``config`` -> ``config.lr``)."""

    @property
    def internal(self) -> bool:
        """True for the plumbing of plots, reports and diff (``internal.*``), left out of listings."""
        return self.name.split(".", 1)[0] == INTERNAL

    def bind(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check the caller's values against the declared parameters and fill the defaults."""
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise QueryError(
                f"query {self.name!r} ({self.path.name}) has no parameter {', '.join(unknown)}; "
                f"its parameters: {', '.join(declared) or 'none'}"
            )
        bound = {}
        for p in self.params:
            if p.name in values:
                bound[p.name] = values[p.name]
            elif p.required:
                raise QueryError(f"query {self.name!r} needs parameter {p.name!r}: {p.doc}")
            else:
                bound[p.name] = p.default
        return bound

    def coerce(self, raw: dict[str, str]) -> dict[str, Any]:
        """Turn command-line strings into values of the type of each parameter's default.

        A parameter without a default (a run name, say) stays a string, so a run named ``123``
        or ``a'; DROP TABLE x; --`` is passed as exactly that text.
        """
        declared = {p.name: p for p in self.params}
        out: dict[str, Any] = {}
        for name, text in raw.items():
            param = declared.get(name)
            default = None if param is None or param.required else param.default
            out[name] = _convert(name, text, default)
        return out


def _convert(name: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered == "true":
            return True
        if lowered == "false":
            return False
        raise QueryError(f"parameter {name!r}: expected true or false, got {text!r}")
    if isinstance(default, int | float):
        for kind in (int, float) if isinstance(default, int) else (float,):
            try:
                return kind(text)
            except ValueError:
                continue
        raise QueryError(f"parameter {name!r}: expected a number, got {text!r}")
    return text


def _literal(text: str) -> Any:
    """A header default: SQL's true/false (any case) as booleans, else a Python literal, else the text."""
    if text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _check_placeholders(path: Path, sql: str, params: list[Param]) -> None:
    """The parameters the header declares are exactly those the SQL code binds."""
    found = scan(sql)
    declared = [p.name for p in params]
    quoted = [n for n in found.quoted if n in declared]
    if quoted:
        raise QueryError(
            f"{path}: parameter ${', $'.join(quoted)} stands inside quotes, where it is text and never "
            "bound; write it outside the quotes (e.g. 'prefix/' || $name)"
        )
    undeclared = [n for n in found.code if n not in declared]
    if undeclared:
        raise QueryError(f"{path}: SQL uses ${', $'.join(undeclared)} but the header does not declare it")
    unused = [n for n in declared if n not in found.code]
    if unused:
        where = " (only in a comment)" if set(unused) <= set(found.commented) else ""
        raise QueryError(
            f"{path}: the header declares {', '.join(unused)} but the SQL never uses "
            f"${', $'.join(unused)}{where}; remove the '-- param' line or use the parameter"
        )


def parse(path: Path, namespace: str = "") -> Query:
    """Read one .sql file (its name prefixed with ``namespace.`` when given); errors name the file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    name = None
    doc: list[str] = []
    params: list[Param] = []
    flatten: list[str] = []
    body_start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped.startswith("--"):
            body_start = number - 1
            break
        text = stripped[2:].strip()
        if text.startswith("name:"):
            name = text[5:].strip()
        elif text.startswith("flatten:"):
            flatten.extend(c.strip() for c in text[8:].split(",") if c.strip())
        elif text.startswith("param "):
            match = _PARAM.match(text)
            if not match:
                raise QueryError(
                    f"{path}:{number}: expected '-- param NAME [= DEFAULT]: description', got {line!r}"
                )
            pname, default, pdoc = match.groups()
            params.append(Param(pname, pdoc, _NO_DEFAULT if default is None else _literal(default)))
        elif text:
            doc.append(text)
    else:
        body_start = len(lines)
    if not name:
        raise QueryError(f"{path}:1: the header must start with '-- name: <query name>'")
    sql = "\n".join(lines[body_start:]).strip().rstrip(";")
    seen = [p.name for p in params]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise QueryError(f"{path}: the header declares {', '.join(twice)} more than once")
    _check_placeholders(path, sql, params)
    return Query(
        name=f"{namespace}.{name}" if namespace else name,
        doc=" ".join(doc),
        sql=sql,
        path=path,
        params=tuple(params),
        flatten=tuple(flatten),
    )


def _query_files(directory: Path) -> list[tuple[Path, str]]:
    """Every query file with its namespace (the folder path, dotted), dialect folders and macros left out."""
    files = []
    for path in sorted(directory.rglob("*.sql")):
        folders = path.relative_to(directory).parts[:-1]
        if path.name.startswith("_") or (folders and folders[0] in DIALECT_FOLDERS):
            continue
        files.append((path, ".".join(folders)))
    return files


@cache
def _library(directory: str) -> dict[str, Query]:
    found: dict[str, Query] = {}
    for path, namespace in _query_files(Path(directory)):
        query = parse(path, namespace)
        if query.name in found:
            raise QueryError(
                f"{path}: query name {query.name!r} is already used by {found[query.name].path.name}"
            )
        found[query.name] = query
    return found


def library() -> dict[str, Query]:
    """Every query by name, the ``internal.*`` plumbing included."""
    return _library(str(queries_dir()))


def questions() -> dict[str, Query]:
    """The user's questions: every query but the ``internal.*`` plumbing (what ``--list`` shows)."""
    return {name: q for name, q in library().items() if not q.internal}


def get(name: str) -> Query:
    """The query called ``name`` (``internal.*`` ones included); an unknown name lists the questions."""
    queries = library()
    if name not in queries:
        raise QueryError(
            f"unknown query {name!r}{did_you_mean(name, questions())}; "
            f"known queries: {', '.join(sorted(questions())) or 'none'}"
        )
    return queries[name]
