"""Where the query library lives, and its shared DuckDB macros (``queries/_*.sql``) (read side: no torch).

What several queries repeat is written once as a macro: runs A and B side by side (``paired_batches``,
``paired_params``, ``paired_scalar``, ``paired_digests``, ``paired_predictions``, ``logit_gaps``),
"equal within tol" (``within_tol``, ``lists_within_tol``), the layers of evidence and their causal order
(``layer_rank``, ``param_family``). ``lakelog.connect`` calls ``install`` on every connection it makes,
once its views exist (table macros bind to them) and before a read-only connection is locked; a
connection made another way, with views of the same names, needs ``install(con)`` once.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from lakelog.errors import QueryError


def queries_dir() -> Path:
    """The installed copy of queries/ (wheel) or the repository's (editable install, tests);
    ``LAKELOG_QUERIES`` points elsewhere."""
    override = os.environ.get("LAKELOG_QUERIES")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]  # lakelog/
    packaged = package / "_queries"
    return packaged if packaged.is_dir() else package.parent / "queries"


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or replace) every macro of ``queries/_*.sql`` on ``con``; a file that fails names itself."""
    for path in sorted(queries_dir().glob("_*.sql")):
        try:
            con.execute(path.read_text(encoding="utf-8"))
        except duckdb.Error as exc:
            raise QueryError(f"{path}: the shared macros do not load: {str(exc).splitlines()[0]}") from exc
