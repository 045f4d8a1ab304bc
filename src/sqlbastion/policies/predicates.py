"""The shape of filters: equality lookups and constant logic.

Two questions about a WHERE / JOIN / HAVING expression that the decision
depends on, answered from the tree alone:

* is a column only compared for equality with constants (``col = 'x'``,
  ``col IN ('x', 'y')``, ``col = ?``)? Such lookups are the one use of a masked
  column a role may be allowed (``lookups`` in the policy);
* does the filter hold constant logic (``1=1``, ``OR 0+1``, ``LIKE '%'``,
  ``id = id``)? Then the tautology rule depends on literal values, and the
  decision cache must key the statement by its exact text.
"""

from __future__ import annotations

from sqlglot import exp

_PRED_PARENTS = (exp.And, exp.Or, exp.Not, exp.Paren, exp.Where, exp.Having, exp.Join)
_CONSTANTS = (exp.Literal, exp.Placeholder, exp.Parameter, exp.Null, exp.Boolean)


# An IN list longer than this is enumeration, not a lookup: it is treated as a
# comparison (the inference guard refuses it on masked columns).
MAX_LOOKUP_VALUES = 100


def _constant(e: exp.Expr, *, mysql: bool) -> bool:
    if mysql:
        # MySQL compares a string column with a number (or TRUE, or a user variable that
        # may hold one) as DOUBLE: '138-0000-1111' = 138 holds, and digits past the 15th
        # are lost, so such an "equality" matches a prefix or a range of values, not one.
        if isinstance(e, exp.Literal):
            return e.is_string
        return isinstance(e, (exp.Placeholder, exp.Null))
    return isinstance(e, _CONSTANTS) or (isinstance(e, exp.Neg) and isinstance(e.this, exp.Literal))


def is_lookup(col: exp.Column, *, mysql: bool = False) -> bool:
    """``col = constant`` or ``col IN (constants)`` directly under boolean connectives.

    With ``mysql``, only string literals, ``?`` and NULL are constants of a lookup
    (see ``_constant``).
    """
    parent = col.parent
    if isinstance(parent, exp.EQ):
        other = parent.expression if parent.this is col else parent.this
        ok = _constant(other, mysql=mysql)
    elif isinstance(parent, exp.In) and parent.this is col and not parent.args.get("query"):
        values = parent.expressions
        ok = len(values) <= MAX_LOOKUP_VALUES and all(_constant(e, mysql=mysql) for e in values)
    else:
        return False
    up = parent.parent
    while isinstance(up, exp.Paren):
        up = up.parent
    return ok and (up is None or isinstance(up, _PRED_PARENTS))


_COMPARISONS = (
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.NullSafeEQ,
    exp.Like,
    exp.ILike,
    exp.In,
    exp.Between,
    exp.Is,
    exp.RegexpLike,
)
_CONNECTIVES = (exp.And, exp.Or, exp.Not, exp.Paren, exp.Xor)


def _has_column(e: exp.Expr) -> bool:
    return any(isinstance(n, exp.Column) for n in e.walk())


def has_constant_logic(root: exp.Expr) -> bool:
    """Whether a filter holds a comparison of constants or a bare constant (1=1, TRUE, 'a' LIKE 'a', OR 1).

    Such filters make the decision depend on literal values (the tautology
    rules), so the statement must not share a cache entry with other literals.
    """
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, _CONNECTIVES):
            stack.extend(node.iter_expressions())
            continue
        if not _has_column(node):
            return True  # a row-independent operand: its value decides the tautology rule
        if isinstance(node, _COMPARISONS):
            operands = list(node.iter_expressions())
            if not all(_has_column(o) for o in operands):
                # A constant side: the value decides whether the comparison is constant.
                if not any(_has_column(o) for o in operands):
                    return True
                if (
                    isinstance(node, (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ))
                    and len(operands) == 2
                    and (operands[0] == operands[1])
                ):
                    return True
                if isinstance(node, exp.Like):
                    return True  # col LIKE '%' is always true for non-NULL values
            elif len(operands) == 2 and operands[0] == operands[1]:
                return True
    return False
