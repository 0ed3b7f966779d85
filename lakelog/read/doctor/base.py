"""What every health check shares: the ``Check`` it returns, the context it reads, how numbers print.

A check is judged only on what the run logged. ``status`` is one of:

- ``pass``: looked and found nothing wrong;
- ``note``: something worth knowing that is often on purpose or harmless (never fails CI);
- ``warn``: a problem that costs accuracy or time; ``error``: training is broken (NaN/Inf, exploding);
- ``skip``: the data the check needs was not logged (the summary says what to log or which option names it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import duckdb
import polars as pl

from lakelog.read import querylib

STATUSES = ("pass", "note", "warn", "error", "skip")
SEVERITY = {"pass": 0, "skip": 0, "note": 0, "warn": 1, "error": 2}
"""How bad each status is; ``--fail-on warn`` fails at 1 and above, ``--fail-on error`` at 2."""


@dataclass
class Check:
    """One health check: ``status`` (see ``STATUSES``), a one-line ``summary``, the ``evidence`` rows."""

    name: str
    status: str
    summary: str
    evidence: pl.DataFrame
    query: str

    def to_dict(self) -> dict[str, Any]:
        """The check without its evidence: what ``--format json|csv`` prints per check."""
        return {"check": self.name, "status": self.status, "summary": self.summary, "query": self.query}


@dataclass
class Verdict:
    """What a check function returns: status, summary and the evidence frame (and its query)."""

    status: str
    summary: str
    evidence: pl.DataFrame = field(default_factory=pl.DataFrame)
    query: str = ""


@dataclass
class Context:
    """One run being checked: the connection, the run, the expectations, what ``watch`` recorded."""

    con: duckdb.DuckDBPyConnection
    run: str
    expect: dict[str, Any]
    lr_ratio: list[tuple[str, str, float]] | None = None
    cache: dict[str, Any] = field(default_factory=dict)

    def query(self, name: str, **params: Any) -> pl.DataFrame:
        """Run a library query on this run; the expectations it declares are bound from ``expect``."""
        declared = {p.name for p in querylib.get(name).params}
        values = {k: v for k, v in self.expect.items() if k in declared} | params
        return querylib.query(name, con=self.con, run=self.run, **values)

    def cached(self, name: str) -> pl.DataFrame:
        """``query(name)`` once per doctor call (several checks read the same per-tensor rows)."""
        if name not in self.cache:
            self.cache[name] = self.query(name)
        return self.cache[name]

    @cached_property
    def watch(self) -> dict[str, Any]:
        """run.json's ``watch`` entry (tensor order, requires_grad, optimizer membership), or {}."""
        try:
            rows = self.con.execute("SELECT watch FROM runs WHERE run = $run", {"run": self.run}).fetchall()
        except duckdb.Error:  # a connection made before the runs view had this column
            return {}
        return json.loads(rows[0][0]) if rows and rows[0][0] else {}

    @cached_property
    def scalar_names(self) -> list[str]:
        rows = self.con.execute(
            "SELECT DISTINCT name FROM scalars WHERE run = $run ORDER BY name", {"run": self.run}
        ).fetchall()
        return [r[0] for r in rows]


def fmt(value: Any) -> str:
    """A number as users read it: 2048.0 -> 2048, 0.05 -> 0.05, 12345.6 -> 12346, 3e-12 -> 3e-12."""
    if isinstance(value, bool) or value is None or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e6:
        digits = max(0, 3 - math.floor(math.log10(magnitude)))
        text = f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e+")


def name_list(names: list[str], limit: int = 5) -> str:
    """``a, b, c`` with ``... (N more)`` past ``limit``."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")
