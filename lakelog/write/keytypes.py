"""The type of each ``keys`` column of ``log_predictions``, fixed by its first batch for the whole run.

Parquet part files of one table must agree on a column's type, and a diff must compare like with
like, so a key column that held strings keeps holding strings (and integers integers) across calls,
flushes and resumes; a batch of the other type is refused on the caller's thread.
"""

from __future__ import annotations

from collections.abc import Mapping

from lakelog.errors import InvalidArgumentError

_WORDS = {"str": "strings", "int": "integers"}


def check_key_types(is_text: Mapping[str, bool], key_types: dict[str, str]) -> None:
    """Refuse a batch whose key columns (name -> holds strings) change a type fixed earlier in
    ``key_types`` (name -> "str" or "int", the run's); then record the types of new columns."""
    kinds = {name: "str" if text else "int" for name, text in is_text.items()}
    for name, kind in kinds.items():
        fixed = key_types.get(name)
        if fixed is not None and fixed != kind:
            raise InvalidArgumentError(
                f"keys[{name!r}]: this run stores {name!r} as {_WORDS[fixed]} (fixed by its first batch for "
                f"the whole run); got {_WORDS[kind]}: convert them (e.g. str(id)) or use another key name"
            )
    for name, kind in kinds.items():
        key_types.setdefault(name, kind)
