"""Is a WHERE clause always true? A small constant folder for the tautology rule.

Only what can be proven is reported: ``1=1``, ``TRUE``, ``'a'='a'``, ``NOT FALSE``,
``x OR 1``, ``id = id``, ``col LIKE '%'``, ``1 IN (1, 2)``, ``2 BETWEEN 1 AND 3``,
``x IS NULL OR x IS NOT NULL``. ``None`` means "not provably constant", which
the rule treats as a real filter. A clause that compares a column with itself
is counted as a tautology although NULLs fail it: it is a mass update all the
same.
"""

from __future__ import annotations

import fnmatch
from decimal import Decimal, InvalidOperation

from sqlglot import exp

Value = Decimal | str | bool | None

_UNKNOWN = object()


def _const(e: exp.Expr, mysql: bool) -> object:
    """The constant value of ``e`` or _UNKNOWN."""
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.Boolean):
        return bool(e.this)
    if isinstance(e, exp.Null):
        return None
    if isinstance(e, exp.Literal):
        if e.is_string:
            return str(e.this)
        try:
            return Decimal(str(e.this))
        except InvalidOperation:
            return _UNKNOWN
    if isinstance(e, exp.Neg):
        v = _const(e.this, mysql)
        return -v if isinstance(v, Decimal) else _UNKNOWN
    if isinstance(e, (exp.Add, exp.Sub, exp.Mul)):
        a, b = _const(e.this, mysql), _const(e.expression, mysql)
        if isinstance(a, Decimal) and isinstance(b, Decimal):
            return a + b if isinstance(e, exp.Add) else a - b if isinstance(e, exp.Sub) else a * b
        return _UNKNOWN
    t = truth(e, mysql)
    return _UNKNOWN if t is _UNKNOWN else t


def _num(v: object, mysql: bool) -> object:
    if isinstance(v, bool):
        return Decimal(int(v))
    if isinstance(v, str) and mysql:
        # MySQL compares a string with a number numerically (leading digits).
        digits = ""
        for ch in v.strip():
            if ch.isdigit() or (ch in "+-." and not digits.strip("+-")):
                digits += ch
            else:
                break
        try:
            return Decimal(digits) if digits.strip("+-.") else Decimal(0)
        except InvalidOperation:
            return Decimal(0)
    return v


def _compare(op: type[exp.Expr], a: object, b: object, mysql: bool) -> object:
    if a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    if a is None or b is None:
        return None
    if isinstance(a, Decimal) or isinstance(b, Decimal):
        a, b = _num(a, mysql), _num(b, mysql)
    if type(a) is not type(b):
        return _UNKNOWN
    try:
        if op is exp.EQ or op is exp.NullSafeEQ:
            return a == b
        if op is exp.NEQ:
            return a != b
        if op is exp.GT:
            return a > b  # type: ignore[operator]  # both sides are the same comparable type here
        if op is exp.GTE:
            return a >= b  # type: ignore[operator]  # as above
        if op is exp.LT:
            return a < b  # type: ignore[operator]  # as above
        if op is exp.LTE:
            return a <= b  # type: ignore[operator]  # as above
    except TypeError:
        return _UNKNOWN
    return _UNKNOWN


def _is_true(v: object, mysql: bool) -> object:
    if v is _UNKNOWN or v is None:
        return v
    if isinstance(v, bool):
        return v
    n = _num(v, mysql)
    if isinstance(n, Decimal):
        return n != 0
    return _UNKNOWN


def truth(e: exp.Expr, mysql: bool) -> object:
    """True / False / None (SQL NULL) when provable, else _UNKNOWN."""
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.Not):
        v = truth(e.this, mysql)
        return (not v) if isinstance(v, bool) else v
    if isinstance(e, exp.And):
        a, b = truth(e.this, mysql), truth(e.expression, mysql)
        if a is False or b is False:
            return False
        if a is True and b is True:
            return True
        return _UNKNOWN
    if isinstance(e, (exp.Or, exp.Xor)) and isinstance(e, exp.Or):
        a, b = truth(e.this, mysql), truth(e.expression, mysql)
        if a is True or b is True:
            return True
        if a is False and b is False:
            return False
        if _null_complement(e.this, e.expression):
            return True
        return _UNKNOWN
    if isinstance(e, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ)):
        if (
            e.this == e.expression
            and isinstance(e.this, (exp.Column, exp.Cast, exp.Func))
            and isinstance(e, (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ))
        ):
            return True
        return _compare(type(e), _const(e.this, mysql), _const(e.expression, mysql), mysql)
    if isinstance(e, exp.Is):
        v = _const(e.this, mysql)
        if isinstance(e.expression, exp.Null) and v is not _UNKNOWN:
            return (v is None) != bool(e.args.get("negate"))
        return _UNKNOWN
    if isinstance(e, exp.Like):
        pattern = _const(e.expression, mysql)
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"}:
            return True
        v = _const(e.this, mysql)
        if isinstance(v, str) and isinstance(pattern, str):
            glob = pattern.replace("*", "[*]").replace("?", "[?]").replace("%", "*").replace("_", "?")
            return fnmatch.fnmatchcase(v.lower() if mysql else v, glob.lower() if mysql else glob)
        return _UNKNOWN
    if isinstance(e, exp.In) and not e.args.get("query"):
        v = _const(e.this, mysql)
        if v is _UNKNOWN:
            return _UNKNOWN
        for item in e.expressions:
            if _compare(exp.EQ, v, _const(item, mysql), mysql) is True:
                return True
        return _UNKNOWN
    if isinstance(e, exp.Between):
        v, lo, hi = _const(e.this, mysql), _const(e.args["low"], mysql), _const(e.args["high"], mysql)
        a, b = _compare(exp.GTE, v, lo, mysql), _compare(exp.LTE, v, hi, mysql)
        if isinstance(a, bool) and isinstance(b, bool):
            return a and b
        return _UNKNOWN
    if isinstance(e, (exp.Literal, exp.Boolean, exp.Null, exp.Neg, exp.Add, exp.Sub, exp.Mul)):
        return _is_true(_const(e, mysql), mysql)
    return _UNKNOWN


def _null_complement(a: exp.Expr, b: exp.Expr) -> bool:
    """``x IS NULL OR x IS NOT NULL`` (either order)."""

    def parts(e: exp.Expr) -> tuple[bool, exp.Expr] | None:
        while isinstance(e, exp.Paren):
            e = e.this
        negated = False
        if isinstance(e, exp.Not):
            negated, e = True, e.this
            while isinstance(e, exp.Paren):
                e = e.this
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null):
            return negated != bool(e.args.get("negate")), e.this
        return None

    pa, pb = parts(a), parts(b)
    return pa is not None and pb is not None and pa[0] != pb[0] and pa[1] == pb[1]


def _disjuncts(e: exp.Expr) -> list[exp.Expr]:
    while isinstance(e, exp.Paren):
        e = e.this
    if isinstance(e, exp.Or):
        return _disjuncts(e.this) + _disjuncts(e.expression)
    return [e]


def references_rows(e: exp.Expr) -> bool:
    """Whether ``e`` reads any column at all (a subquery's own columns count too)."""
    return any(isinstance(n, exp.Column) for n in e.walk())


def is_tautology(where: exp.Expr, *, mysql: bool) -> bool:
    """True when the filter is provably always true, or holds a row-independent branch
    (``… OR 1 DIV 1``, ``… OR abs(1)``, ``… OR EXISTS (SELECT 1)``) not provably false.

    The second part fails closed: the constants a server can evaluate are endless,
    so a disjunct that does not look at the row counts as true unless proven false.
    """
    if truth(where, mysql) is True:
        return True
    return any(not references_rows(d) and truth(d, mysql) is not False for d in _disjuncts(where))
