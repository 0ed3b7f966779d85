"""DuckDB constructs whose meaning sqlglot does not carry over to Spark SQL, rewritten so both engines agree.

sqlglot translates the syntax; these rewrites keep the answers equal where the two engines differ
in meaning (each checked against both engines by tests/test_spark.py):

- ``len(x)``/``length(x)``: ``size`` for lists, ``length`` for text (from the types sqlglot infers;
  where unknown, ``len`` is taken for a list and ``length`` for text);
- ``x[i]`` with a computed index: DuckDB counts from 1, Spark's ``x[i]`` from 0 (``element_at``),
  and so does the index of ``lambda x, i: …``;
  ``x[a:b]`` (1-based, both ends included) is ``slice(x, a, b - a + 1)``;
- ``list(v ORDER BY k …)`` and ``first(v ORDER BY k …)``: Spark's ``collect_list`` keeps no order,
  so the values are collected with their keys and sorted by a comparator (DuckDB's NULLS LAST);
- ``format('{} … {:.3g}', …)``: fmt's ``{}`` and ``{:.Ng}`` become Java's ``%s`` with numbers
  first printed as fmt prints them (``3.0``, ``1e-05``, ``1.23e+07``), and a NULL argument makes
  the whole text NULL, as in DuckDB;
- ``SELECT unnest({'a': x, …})`` (a struct spread into columns) is ``SELECT x AS a, …``, and several
  ``unnest(list)`` in one SELECT (walked side by side) one ``inline(arrays_zip(…))``;
- ``isfinite``/``isinf`` (Spark has neither) and ``isnan`` (Spark's is false for NULL, DuckDB's NULL);
- ``quantile_cont``/``quantile_disc``, ``epoch(t)`` (seconds with the fraction), ``list_bool_and``/
  ``list_bool_or``, ``list_position`` (NULL when absent), ``list_intersect``.
"""

from __future__ import annotations

import re

from sqlglot import exp

_TEXT = {exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT, exp.DataType.Type.CHAR, exp.DataType.Type.NCHAR}
_FLOATS = {exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, exp.DataType.Type.UNKNOWN}
L, R = "lakelog_l", "lakelog_r"
"""Lambda variables of the rewrites: names no query uses for a table or a column."""
_FMT = re.compile(r"\{\{|\}\}|\{(?::\.(\d+)g)?\}|%|\{[^}]*\}")


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _parse(sql: str, **values: exp.Expression) -> exp.Expression:
    """A Spark expression from a template whose ``{name}`` slots take the given expressions."""
    tree = exp.maybe_parse(re.sub(r"\{(\w+)\}", r"__slot_\1", sql), dialect="spark")

    def fill(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name.startswith("__slot_"):
            return exp.paren(values[node.name[len("__slot_") :]].copy(), copy=False)
        return node

    return tree.transform(fill)


def _type(node: exp.Expression) -> exp.DataType.Type:
    kind = getattr(node, "type", None)
    return kind.this if isinstance(kind, exp.DataType) else exp.DataType.Type.UNKNOWN


def _is_text(node: exp.Expression) -> bool:
    return _type(node) in _TEXT or (isinstance(node, exp.Literal) and node.is_string)


# -- numbers printed the way DuckDB's format (fmt) prints them ----------------------------------------

_SHORTEST = """CASE
  WHEN isnan({x}) THEN 'nan' WHEN {x} = double('inf') THEN 'inf' WHEN {x} = double('-inf') THEN '-inf'
  WHEN {x} = 0 THEN '0.0'
  WHEN abs({x}) >= 1e-4 AND abs({x}) < 1 THEN regexp_replace(CAST(CAST({x} AS DECIMAL(38, 24)) AS STRING), '0+$', '')
  WHEN abs({x}) >= 1 AND abs({x}) < 1e16
    THEN regexp_replace(regexp_replace(CAST(CAST({x} AS DECIMAL(38, 20)) AS STRING), '0+$', ''), '[.]$', '.0')
  ELSE concat(regexp_replace(regexp_extract(CAST({x} AS STRING), '^(-?[0-9.]+)E', 1), '[.]0$', ''), 'e',
    IF(CAST(regexp_extract(CAST({x} AS STRING), 'E(-?[0-9]+)$', 1) AS INT) < 0, '-', '+'),
    lpad(CAST(abs(CAST(regexp_extract(CAST({x} AS STRING), 'E(-?[0-9]+)$', 1) AS INT)) AS STRING), 2, '0'))
END"""
"""fmt's ``{}`` of a double: the shortest digits, plain from 1e-4 to 1e16 (``3.0``), else ``1e-05``."""

_GENERAL = """CASE
  WHEN isnan({x}) THEN 'nan' WHEN {x} = double('inf') THEN 'inf' WHEN {x} = double('-inf') THEN '-inf'
  WHEN {x} = 0 THEN '0'
  WHEN CAST(substring_index(format_string('%.{p1}e', {x}), 'e', -1) AS INT) BETWEEN -4 AND {p} - 1
    THEN regexp_replace(regexp_replace(format_string(concat('%.', CAST({p} - 1
      - CAST(substring_index(format_string('%.{p1}e', {x}), 'e', -1) AS INT) AS STRING), 'f'), {x}),
      '([.][0-9]*[1-9])0+$|[.]0*$', '$1'), '^-0$', '0')
  ELSE regexp_replace(format_string('%.{p1}e', {x}), '([.][0-9]*[1-9])0+e|[.]0*e', '$1e')
END"""
"""fmt's ``{:.Pg}`` (C's %g): P significant digits, trailing zeros dropped, ``e±XX`` outside 1e-4..1e{P}."""


def _shortest(value: exp.Expression) -> exp.Expression:
    kind = _type(value)
    if kind not in _FLOATS:
        return value
    x = exp.cast(value.copy(), "double")
    if kind == exp.DataType.Type.FLOAT:  # a float's own shortest digits, not its double expansion
        x = exp.cast(exp.cast(value.copy(), "string"), "double")
    text = _parse(_SHORTEST, x=x)
    if kind == exp.DataType.Type.UNKNOWN:  # decided when Spark knows the type
        return _parse(
            "CASE WHEN typeof({v}) IN ('double', 'float') THEN {t} ELSE CAST({v} AS STRING) END",
            v=value,
            t=text,
        )
    return text


def _general(value: exp.Expression, digits: int) -> exp.Expression:
    p = max(digits, 1)
    template = _GENERAL.replace("{p1}", str(p - 1)).replace("{p}", str(p))
    return _parse(template, x=exp.cast(value.copy(), "double"))


def _format(node: exp.Format) -> exp.Expression:
    template = node.this
    if not (isinstance(template, exp.Literal) and template.is_string):
        return node
    args = list(node.expressions)
    pieces: list[str] = []
    values: list[exp.Expression] = []
    used = 0

    def piece(match: re.Match[str]) -> str:
        nonlocal used
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if token == "%":
            return "%%"
        if used >= len(args):
            return token
        value = args[used]
        used += 1
        if match.group(1) is not None:
            values.append(_general(value, int(match.group(1))))
        elif token == "{}":
            values.append(_shortest(value))
        else:  # another fmt spec: printed as text
            values.append(value)
        return "%s"

    pieces.append(_FMT.sub(piece, template.this))
    out = exp.Anonymous(this="FORMAT_STRING", expressions=[exp.Literal.string("".join(pieces)), *values])
    if not args:
        return out
    any_null = exp.or_(*[exp.Is(this=a.copy(), expression=exp.Null()) for a in args])
    return exp.If(this=any_null, true=exp.Null(), false=out)


# -- lists ---------------------------------------------------------------------------------------------


def _sorted_values(
    value: exp.Expression, order: list[exp.Ordered], distinct: bool, where: exp.Expression | None
) -> exp.Expression:
    """Collect ``value`` with its sort keys (rows passing ``where``), sort them as DuckDB orders, keep the values."""
    fields: list[exp.Expression] = []
    for i, key in enumerate(order):
        fields += [exp.Literal.string(f"k{i}"), key.this.copy()]
    fields += [exp.Literal.string("v"), value.copy()]
    packed = _fn("NAMED_STRUCT", *fields)
    collected: exp.Expression = _fn("COLLECT_SET" if distinct else "COLLECT_LIST", packed)
    if where is not None:
        collected = exp.Filter(this=collected, expression=exp.Where(this=where.copy()))
    compare = "0"
    for i in reversed(range(len(order))):
        desc = bool(order[i].args.get("desc"))
        nulls_first = bool(order[i].args.get("nulls_first"))
        lo, hi = ("1", "-1") if desc else ("-1", "1")
        null_l, null_r = ("-1", "1") if nulls_first else ("1", "-1")
        compare = (
            f"CASE WHEN {L}.k{i} IS NULL AND {R}.k{i} IS NULL THEN {compare} "
            f"WHEN {L}.k{i} IS NULL THEN {null_l} WHEN {R}.k{i} IS NULL THEN {null_r} "
            f"WHEN {L}.k{i} < {R}.k{i} THEN {lo} WHEN {L}.k{i} > {R}.k{i} THEN {hi} ELSE {compare} END"
        )
    return _parse(f"transform(array_sort({{c}}, ({L}, {R}) -> {compare}), {L} -> {L}.v)", c=collected)


def _ordered_aggregate(node: exp.Expression, where: exp.Expression | None = None) -> exp.Expression | None:
    """``list(v ORDER BY …)`` / ``first(v ORDER BY …)`` (``DISTINCT`` and ``FILTER`` kept), or None."""
    inner = node.this
    distinct = False
    if isinstance(inner, exp.Distinct) and len(inner.expressions) == 1:
        distinct, inner = True, inner.expressions[0]
    if not isinstance(inner, exp.Order):
        return None
    value = inner.this
    if isinstance(value, exp.Distinct) and len(value.expressions) == 1:
        distinct, value = True, value.expressions[0]
    values = _sorted_values(value, list(inner.expressions), distinct, where)
    if isinstance(node, exp.First):
        return _fn("ELEMENT_AT", values, exp.Literal.number(1))
    return values


def _bracket(node: exp.Bracket) -> exp.Expression:
    if len(node.expressions) != 1:
        return node
    index = node.expressions[0]
    if _type(node.this) not in (exp.DataType.Type.ARRAY, exp.DataType.Type.UNKNOWN):
        return node
    if isinstance(index, exp.Slice):  # DuckDB x[a:b]: 1-based, both ends included
        start = index.this or exp.Literal.number(1)
        end = index.expression or _fn("SIZE", node.this.copy())
        length = _parse("CAST({e} - {s} + 1 AS INT)", e=end, s=start)
        return _fn("SLICE", node.this.copy(), exp.cast(start.copy(), "int"), length)
    if isinstance(index, exp.Literal):  # sqlglot already counts literal indexes from 0
        return node
    # DuckDB's computed index counts from 1, as element_at's does (an INT there)
    return _fn("ELEMENT_AT", node.this.copy(), exp.cast(index.copy(), "int"))


def _indexed_lambda(node: exp.Lambda) -> exp.Expression:
    """``lambda x, i: …``: DuckDB's index counts from 1, Spark's from 0, so the body reads ``i + 1``."""
    index = node.expressions[1].name
    for ident in list(node.this.find_all(exp.Identifier)):
        if ident.name != index:
            continue
        target = ident.parent if isinstance(ident.parent, exp.Column) and not ident.parent.table else ident
        if target is node.this:
            node.set("this", exp.paren(exp.Add(this=target.copy(), expression=exp.Literal.number(1))))
        else:
            target.replace(exp.paren(exp.Add(this=target.copy(), expression=exp.Literal.number(1))))
    return node


def _anonymous(node: exp.Anonymous) -> exp.Expression:
    name = node.name.upper()
    args = list(node.expressions)
    if name == "LEN" and len(args) == 1:  # len(x): a list unless x is known to be text
        return exp.Length(this=args[0].copy()) if _is_text(args[0]) else exp.ArraySize(this=args[0].copy())
    if name == "ISFINITE" and len(args) == 1:
        return _parse("NOT (isnan({x}) OR abs({x}) = double('inf'))", x=args[0])
    renamed = {
        "LIST_BOOL_AND": "ARRAY_MIN",
        "LIST_BOOL_OR": "ARRAY_MAX",
        "LIST_INTERSECT": "ARRAY_INTERSECT",
        "ERROR": "RAISE_ERROR",
    }
    if name in renamed:
        return _fn(renamed[name], *[a.copy() for a in args])
    if name in ("LIST_POSITION", "LIST_INDEXOF") and len(args) == 2:
        return _parse("NULLIF(array_position({a}, {b}), 0)", a=args[0], b=args[1])
    return node


def _struct_fields(node: exp.Expression) -> list[exp.Expression] | None:
    """``unnest({'a': x, …})`` in a select list: DuckDB spreads the struct into columns ``x AS a, …``."""
    inner = node.this if isinstance(node, exp.Explode | exp.Unnest) else None
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if not isinstance(inner, exp.Struct):
        return None
    fields = []
    for item in inner.expressions:
        if not isinstance(item, exp.PropertyEQ):
            return None
        fields.append(exp.alias_(item.expression.copy(), item.this.name))
    return fields


def _zip_unnests(projections: list[exp.Expression]) -> list[exp.Expression]:
    """Several ``unnest(list)`` in one select list walk the lists side by side in DuckDB; Spark allows one
    generator per SELECT, so they become one ``inline(arrays_zip(…)) AS (…)`` where the first stood."""
    found = [
        i
        for i, item in enumerate(projections)
        if isinstance(item.unalias() if isinstance(item, exp.Alias) else item, exp.Explode | exp.Unnest)
    ]
    if len(found) < 2:
        return projections
    arrays, names = [], []
    for n, i in enumerate(found):
        item = projections[i]
        call = item.this if isinstance(item, exp.Alias) else item
        arrays.append(call.this.copy() if isinstance(call, exp.Explode) else call.expressions[0].copy())
        names.append(exp.to_identifier(item.alias if isinstance(item, exp.Alias) else f"lakelog_u{n}"))
    zipped = exp.Aliases(this=_fn("INLINE", _fn("ARRAYS_ZIP", *arrays)), expressions=names)
    return [zipped if i == found[0] else item for i, item in enumerate(projections) if i not in found[1:]]


def _spread_structs(node: exp.Select) -> exp.Select:
    projections: list[exp.Expression] = []
    changed = False
    for item in node.expressions:
        fields = _struct_fields(item)
        changed = changed or fields is not None
        projections.extend(fields if fields is not None else [item])
    zipped = _zip_unnests(projections)
    if changed or zipped is not projections:
        node.set("expressions", zipped)
    return node


def adapt_tree(tree: exp.Expression) -> exp.Expression:
    """Every node of a DuckDB tree (types annotated) rewritten for Spark, children before parents."""
    for node in reversed(list(tree.dfs())):
        new = adapt(node)
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


def adapt(node: exp.Expression) -> exp.Expression:
    """One node rewritten for Spark (its children already are), or the node itself."""
    if isinstance(node, exp.Select):
        return _spread_structs(node)
    if isinstance(node, exp.Length):  # length(x): text unless x is known to be a list
        return exp.ArraySize(this=node.this.copy()) if _type(node.this) == exp.DataType.Type.ARRAY else node
    if isinstance(node, exp.Bracket):
        return _bracket(node)
    if isinstance(node, exp.Format):
        return _format(node)
    if isinstance(node, exp.ArrayAgg | exp.First):
        if isinstance(node.parent, exp.Filter) and node.arg_key == "this":
            return node  # rewritten with its FILTER clause, below
        return _ordered_aggregate(node) or node
    if isinstance(node, exp.Filter) and isinstance(node.this, exp.ArrayAgg | exp.First):
        where = node.expression.this if isinstance(node.expression, exp.Where) else node.expression
        return _ordered_aggregate(node.this, where) or node
    if isinstance(node, exp.Cast) and node.to.this == exp.DataType.Type.JSON:
        return node.this.copy() if _type(node.this) in _TEXT | {exp.DataType.Type.UNKNOWN} else node
    if isinstance(node, exp.Anonymous):
        return _anonymous(node)
    if (
        isinstance(node, exp.Lambda)
        and len(node.expressions) == 2
        and isinstance(node.parent, exp.ArrayFilter | exp.Transform)
    ):
        return _indexed_lambda(node)
    if isinstance(node, exp.IsNan):
        return _parse("IF({x} IS NULL, NULL, isnan({x}))", x=node.this)
    if isinstance(node, exp.IsInf):
        return _parse("abs({x}) = double('inf')", x=node.this)
    if isinstance(node, exp.PercentileCont):
        return _fn("PERCENTILE", node.this.copy(), node.expression.copy())
    if isinstance(node, exp.PercentileDisc):
        return exp.WithinGroup(
            this=_fn("PERCENTILE_DISC", node.expression.copy()),
            expression=exp.Order(expressions=[exp.Ordered(this=node.this.copy(), nulls_first=False)]),
        )
    if isinstance(node, exp.TimeToUnix):
        return _parse("unix_micros({t}) / 1e6", t=node.this)
    return node
