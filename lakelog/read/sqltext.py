"""Where the ``$name`` parameters of a DuckDB query are: a scanner that knows quotes and comments.

A ``$name`` is a bound parameter only in SQL code. Inside a string literal (``'…'``, ``E'…'``,
``$$…$$``, ``$tag$…$tag$``) it is text that DuckDB never binds, inside a quoted identifier
(``"…"``) it is part of a name, and inside a comment (``-- …``, ``/* … */``) it is prose. A regular
expression over the raw text cannot tell these apart, so the loader scans the SQL once, token by
token, the way the SQL lexer does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKENS = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<string>(?<![\w$])[eE]'(?:\\.|''|[^'\\])*(?:'|\Z)
               |'(?:''|[^'])*(?:'|\Z)
               |\$(?P<tag>[A-Za-z_]\w*|)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<identifier>"(?:""|[^"])*(?:"|\Z))
    | (?P<parameter>\$(?P<name>[A-Za-z_]\w*))
    """,
    re.S | re.X,
)
_LOOSE = re.compile(r"\$([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Placeholders:
    """The ``$name`` occurrences of one SQL text, by where they stand."""

    code: tuple[str, ...]
    """Names used as parameters, in order of first use."""
    quoted: tuple[str, ...]
    """Names written inside string literals or quoted identifiers: text, never bound."""
    commented: tuple[str, ...]
    """Names mentioned in comments: prose, never bound."""


def scan(sql: str) -> Placeholders:
    """Sort every ``$name`` of ``sql`` into code, quoted text and comments."""
    code: dict[str, None] = {}
    quoted: dict[str, None] = {}
    commented: dict[str, None] = {}
    for match in _TOKENS.finditer(sql):
        if match.group("parameter"):
            code.setdefault(match.group("name"), None)
        elif match.group("comment") is not None:
            commented.update(dict.fromkeys(_LOOSE.findall(match.group("comment"))))
        else:  # a string literal or a quoted identifier
            text = match.group(0)
            if text.startswith("$"):  # $tag$…$tag$: only the body is text
                fence = len(match.group("tag")) + 2
                text = text[fence:-fence] if len(text) >= 2 * fence else text[fence:]
            quoted.update(dict.fromkeys(_LOOSE.findall(text)))
    return Placeholders(tuple(code), tuple(quoted), tuple(commented))
