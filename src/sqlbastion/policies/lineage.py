"""Scopes and column lineage over a sqlglot tree, against a catalog snapshot.

Strategy: one pass over each query, scope by scope, in the spirit of
sqlglot's ``optimizer.scope`` but cheaper and fail-closed:

* a scope is the list of FROM items visible to a SELECT (base tables, views
  resolved through their definitions, CTEs, derived tables, table functions),
  chained to the enclosing scope for correlated references;
* every column reference resolves to the base-table columns its value comes
  from (``Col.sources``); a reference that cannot be proven resolves *opaque*,
  with every candidate as a source — wider, never narrower;
* ``SELECT *`` / ``t.*`` expand through the catalog; a table the catalog does
  not know expands to one opaque column;
* a name that matches a FROM item rather than a column is a PostgreSQL
  whole-row reference: all of that item's columns flow into the value;
* columns used to filter, join, group, order or de-duplicate are recorded as
  ``PredicateUse`` for the inference guard; equality with constants is marked
  as a lookup.

The resolver never raises on odd SQL: what it cannot place becomes opaque, or
``Unprovable`` for constructs it does not know at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlglot import exp

from sqlbastion.policies.calls import FLAGGED, record_call
from sqlbastion.policies.facts import (
    COUNTING_FUNCTIONS,
    SAFE_BUILTINS,
    ObjectPath,
    PredicateUse,
)
from sqlbastion.policies.model import ColumnRef, Dialect
from sqlbastion.policies.predicates import has_constant_logic, is_lookup

if TYPE_CHECKING:
    from sqlbastion.policies.catalog import Catalog, TableInfo

MAX_VIEW_DEPTH = 8
MAX_SCOPES = 500


class Unprovable(Exception):
    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


@dataclass(frozen=True, slots=True)
class Col:
    sources: frozenset[ColumnRef] = frozenset()
    direct: bool = False
    opaque: bool = False
    whole_row_of: tuple[ColumnRef, ...] = ()


OPAQUE = Col(opaque=True)


def merge_cols(cols: list[Col], *, direct: bool = False) -> Col:
    sources: set[ColumnRef] = set()
    whole: list[ColumnRef] = []
    opaque = False
    for c in cols:
        sources |= c.sources
        whole.extend(c.whole_row_of)
        opaque = opaque or c.opaque
    return Col(frozenset(sources), direct and len(cols) == 1 and cols[0].direct, opaque, tuple(dict.fromkeys(whole)))


@dataclass(slots=True)
class Source:
    alias: str
    columns: dict[str, Col] | None  # None: the columns are not known
    unknown_ref: tuple[str | None, str, str] | None = None  # (database, schema, table) for unknown columns
    path: ObjectPath | None = None


@dataclass(slots=True)
class Scope:
    parent: Scope | None
    ctes: dict[str, list[tuple[str, Col]]]
    sources: list[Source] = field(default_factory=list)


@dataclass(slots=True)
class Acc:
    """Facts gathered while resolving one statement."""

    reads: set[ObjectPath] = field(default_factory=set)
    columns_read: set[ColumnRef] = field(default_factory=set)
    predicates: list[PredicateUse] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    unknown_functions: set[str] = field(default_factory=set)
    unknown_function_columns: set[ColumnRef] = field(default_factory=set)
    counted: set[ColumnRef] = field(default_factory=set)
    copies: set[ColumnRef] = field(default_factory=set)
    features: list[tuple[str, str]] = field(default_factory=list)
    unknown_objects: set[ObjectPath] = field(default_factory=set)
    scopes: int = 0
    literal_sensitive: bool = False

    def feature(self, name: str, why: str) -> None:
        if (name, why) not in self.features:
            self.features.append((name, why))


# Query-node arguments the resolver reads itself (everything else is walked as a filter).
_HANDLED_CLAUSES = frozenset(
    {
        "expressions",
        "from_",
        "joins",
        "laterals",
        "where",
        "group",
        "having",
        "distinct",
        "order",
        "limit",
        "offset",
        "with_",
        "into",
        "locks",
        "hint",
        "kind",
        "operation_modifiers",
        "this",
        "expression",
        "by_name",
        "side",
        "on",
        "match",
        "alias",
    }
)


def _plain_count_argument(arg: exp.Expr) -> bool:
    """COUNT's argument counts values only (their number, not a predicate on them): *, a column, DISTINCT columns."""
    if isinstance(arg, exp.Distinct):
        return all(_plain_count_argument(e) for e in arg.expressions)
    while isinstance(arg, exp.Paren):
        arg = arg.this
    return isinstance(arg, (exp.Star, exp.Column, exp.Literal, exp.Null))


class Resolver:
    def __init__(
        self,
        *,
        dialect: Dialect,
        database: str | None,
        search_path: tuple[str, ...],
        catalog: Catalog | None,
        acc: Acc,
        view_depth: int = 0,
    ) -> None:
        self.dialect = dialect
        self.mysql = dialect == "mysql"
        self.database = database
        self.search_path = search_path or ("public",)
        self.catalog = catalog
        self.acc = acc
        self.view_depth = view_depth

    # -- names ------------------------------------------------------------------

    def norm(self, ident: exp.Expr | str | None) -> str:
        if ident is None:
            return ""
        if isinstance(ident, str):
            return ident.lower() if self.mysql else ident
        if isinstance(ident, exp.Identifier):
            name = str(ident.this)
            if self.mysql or not ident.quoted:
                return name.lower()
            return name
        if isinstance(ident, exp.Star):
            return "*"
        return self.norm(ident.name) if ident.name else ""

    def table_identity(self, t: exp.Table) -> tuple[str | None, str, str, TableInfo | None]:
        """(database, schema, table, catalog entry) for a table reference."""
        name = self.norm(t.args.get("this"))
        db_part = t.args.get("db")
        if self.mysql:
            schema = self.norm(db_part) if db_part is not None else (self.database or "").lower()
            info = self.catalog.table(schema, name) if self.catalog else None
            return None, schema, name, info
        database = self.norm(t.args.get("catalog")) if t.args.get("catalog") is not None else None
        database = database or self.database or (self.catalog.database if self.catalog else None)
        if db_part is not None:
            schema = self.norm(db_part)
            info = self.catalog.table(schema, name) if self.catalog else None
            return database, schema, name, info
        # PostgreSQL searches pg_catalog first unless search_path names it later.
        order = list(self.search_path)
        if "pg_catalog" not in order:
            order.insert(0, "pg_catalog")
        for schema in order:
            if schema == "$user":
                continue
            info = self.catalog.table(schema, name) if self.catalog else None
            if info is not None:
                return database, schema, name, info
        if name.startswith("pg_"):
            # Every pg_* relation PostgreSQL ships lives in pg_catalog, searched first.
            return database, "pg_catalog", name, None
        first = next((s for s in self.search_path if s != "$user"), "public")
        return database, first, name, None

    def path_of(self, database: str | None, schema: str, table: str) -> ObjectPath:
        if self.mysql:
            return (schema, table)
        return (database or "", schema, table)

    def column_ref(self, database: str | None, schema: str, table: str, column: str) -> ColumnRef:
        return ColumnRef(database=database, schema=schema, table=table, column=column)

    # -- queries ----------------------------------------------------------------

    def query(self, node: exp.Expr, parent: Scope | None) -> list[tuple[str, Col]]:
        """Output columns of a query expression (SELECT, set operation, VALUES, subquery)."""
        self.acc.scopes += 1
        if self.acc.scopes > MAX_SCOPES:
            raise Unprovable("depth", f"more than {MAX_SCOPES} query scopes")
        while isinstance(node, (exp.Subquery, exp.Paren)):
            node = node.this
        scope = Scope(parent, self.ctes(node, parent))
        if isinstance(node, exp.Select):
            return self._select(node, scope)
        if isinstance(node, exp.SetOperation):
            left = self.query(node.this, scope)
            right = self.query(node.expression, scope)
            out: list[tuple[str, Col]] = []
            for (ln, lc), (_, rc) in zip(left, right, strict=False):
                m = merge_cols([lc, rc])
                out.append((ln, Col(m.sources, lc.direct and rc.direct, m.opaque, m.whole_row_of)))
            compares = not isinstance(node, exp.Union) or node.args.get("distinct")
            if compares:
                for _, c in out:
                    self._pred_sources(c, "set_operation")
            self._order_limit(node, scope, out)
            return out
        if isinstance(node, exp.Values):
            values = [self.expr(e, scope) for e in (node.expressions[0].expressions if node.expressions else [])]
            return self._rename([(f"column{i + 1}", c) for i, c in enumerate(values)], node.args.get("alias"))
        raise Unprovable("unsupported", f"a {type(node).__name__} where a query was expected")

    def ctes(self, node: exp.Expr, parent: Scope | None) -> dict[str, list[tuple[str, Col]]]:
        """The CTEs visible inside ``node``: the parent's, then its own WITH (queries and DML alike)."""
        ctes = dict(parent.ctes) if parent else {}
        with_ = node.args.get("with_")
        if with_ is not None:
            for cte in with_.expressions:
                name = self.norm(cte.args["alias"].this) if cte.args.get("alias") else ""
                body = cte.this
                if with_.args.get("recursive") and isinstance(body, exp.SetOperation):
                    cols = self._recursive_cte(name, body, parent, ctes)
                else:
                    cols = self.query(body, Scope(parent, dict(ctes)))
                ctes[name] = self._rename(cols, cte.args.get("alias"))
        return ctes

    def _recursive_cte(
        self, name: str, body: exp.SetOperation, parent: Scope | None, ctes: dict[str, list[tuple[str, Col]]]
    ) -> list[tuple[str, Col]]:
        anchor = self.query(body.this, Scope(parent, dict(ctes)))
        current = anchor
        for _ in range(3):  # lineage only grows; three rounds reach the fixed point for lineage sets
            inner = dict(ctes)
            inner[name] = current
            step = self.query(body.expression, Scope(parent, inner))
            nxt = [(n, merge_cols([c, s])) for (n, c), (_, s) in zip(current, step, strict=False)]
            nxt = [(n, Col(c.sources, False, c.opaque, c.whole_row_of)) for n, c in nxt]
            if nxt == current:
                break
            current = nxt
        return current

    def _rename(self, cols: list[tuple[str, Col]], alias: exp.Expr | None) -> list[tuple[str, Col]]:
        if alias is None or not alias.args.get("columns"):
            return cols
        names = [self.norm(c) for c in alias.args["columns"]]
        return [(names[i] if i < len(names) else n, c) for i, (n, c) in enumerate(cols)]

    def _select(self, node: exp.Select, scope: Scope) -> list[tuple[str, Col]]:
        from_ = node.args.get("from_")
        if from_ is not None:
            self.add_source(from_.this, scope)
        for join in node.args.get("joins") or ():
            before = list(scope.sources)
            self.add_source(join.this, scope)
            if str(join.args.get("method") or "").upper() == "NATURAL":
                self._natural_join(before, scope.sources[-1])
            on = join.args.get("on")
            if on is not None:
                self.expr(on, scope, clause="join")
            for u in join.args.get("using") or ():
                name = self.norm(u)
                for src in scope.sources:
                    col = self._lookup(src, name)
                    if col is not None:
                        self._pred_sources(col, "join")
        for lateral in node.args.get("laterals") or ():
            self.add_source(lateral, scope)
        outputs: list[tuple[str, Col]] = []
        for e in node.expressions:
            outputs.extend(self.projection(e, scope))
        where = node.args.get("where")
        if where is not None:
            self.expr(where.this, scope, clause="where")
        group = node.args.get("group")
        if group is not None:
            for g in group.expressions:
                self._by_item(g, scope, outputs, "group")
        having = node.args.get("having")
        if having is not None:
            self.expr(having.this, scope, clause="having", outputs=outputs)
        distinct = node.args.get("distinct")
        if distinct is not None:
            on = distinct.args.get("on")
            if on is not None:
                for e in on.expressions if isinstance(on, exp.Tuple) else [on]:
                    self._by_item(e, scope, outputs, "distinct")
            else:
                for _, c in outputs:
                    self._pred_sources(c, "distinct")
        self._order_limit(node, scope, outputs)
        return outputs

    def _natural_join(self, left: list[Source], right: Source) -> None:
        """NATURAL JOIN compares every column name the two sides share."""
        if right.columns is None or any(s.columns is None for s in left):
            self._pred_sources(Col(opaque=True), "join")
            return
        for src in left:
            for name, col in (src.columns or {}).items():
                other = right.columns.get(name)
                if other is not None:
                    self._pred_sources(col, "join")
                    self._pred_sources(other, "join")

    def dml_order_limit(self, node: exp.Expr, scope: Scope) -> None:
        """UPDATE / DELETE … ORDER BY … LIMIT: which rows change is an answer too."""
        order = node.args.get("order")
        if order is not None:
            for o in order.expressions:
                self._by_item(o.this if isinstance(o, exp.Ordered) else o, scope, [], "order")
        lim = node.args.get("limit")
        if isinstance(lim, exp.Expr):
            for part in lim.iter_expressions():
                self.expr(part, scope, clause="limit")

    def _order_limit(self, node: exp.Expr, scope: Scope, outputs: list[tuple[str, Col]]) -> None:
        order = node.args.get("order")
        if order is not None:
            for o in order.expressions:
                self._by_item(o.this if isinstance(o, exp.Ordered) else o, scope, outputs, "order")
        for key in ("limit", "offset"):
            lim = node.args.get(key)
            if isinstance(lim, exp.Expr):
                # How many rows come back is itself an answer: a masked column here infers.
                for part in lim.iter_expressions():
                    self.expr(part, scope, clause="limit")
        # Every other clause (named WINDOW definitions, QUALIFY, FETCH, sampling,
        # dialect extras): whatever column it reads shapes the result, so it counts
        # as a filter. Unknown clauses are thereby covered, never ignored.
        for key, value in node.args.items():
            if key in _HANDLED_CLAUSES or value is None or isinstance(value, (bool, str)):
                continue
            for part in value if isinstance(value, list) else [value]:
                if isinstance(part, exp.Expr):
                    self.expr(part, scope, clause="other", outputs=outputs)

    def _by_item(self, e: exp.Expr, scope: Scope, outputs: list[tuple[str, Col]], clause: str) -> None:
        """GROUP BY / ORDER BY / DISTINCT ON item: a position, an output alias or an expression."""
        if isinstance(e, exp.Literal) and not e.is_string:
            try:
                pos = int(str(e.this))
            except ValueError:
                return
            self.acc.literal_sensitive = True
            if 1 <= pos <= len(outputs):
                self._pred_sources(outputs[pos - 1][1], clause)
            return
        if isinstance(e, exp.Column) and not e.args.get("table"):
            name = self.norm(e.this)
            for out_name, c in outputs:
                if out_name == name:
                    # Both readings (alias and source column) count: the stricter union.
                    self._pred_sources(c, clause)
        self.expr(e, scope, clause=clause, outputs=outputs)

    def projection(self, e: exp.Expr, scope: Scope) -> list[tuple[str, Col]]:
        if isinstance(e, exp.Star):
            out: list[tuple[str, Col]] = []
            for src in scope.sources:
                out.extend(self._expand(src))
            return out
        if isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            found = self._find_source(scope, self.norm(e.args.get("table")))
            if found is None:
                return [("*", OPAQUE)]
            return self._expand(found)
        if isinstance(e, exp.Alias):
            return [(self.norm(e.args.get("alias")), self.expr(e.this, scope))]
        inner = e
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Column):
            return [(self.norm(inner.this), self.expr(e, scope))]
        name = e.alias_or_name
        return [(self.norm(name) if name else "?column?", self.expr(e, scope))]

    def _expand(self, src: Source) -> list[tuple[str, Col]]:
        if src.columns is None:
            if src.unknown_ref is not None:
                db, schema, table = src.unknown_ref
                self.acc.columns_read.add(self.column_ref(db, schema, table, "*"))
            return [("*", OPAQUE)]
        for c in src.columns.values():
            self.acc.columns_read |= c.sources
        return list(src.columns.items())

    # -- FROM items -------------------------------------------------------------

    def add_source(self, item: exp.Expr, scope: Scope) -> None:
        alias_node = item.args.get("alias")
        alias = self.norm(alias_node.this) if isinstance(alias_node, exp.TableAlias) and alias_node.this else ""
        if isinstance(item, exp.Table):
            target = item.this
            if isinstance(target, exp.Func) or isinstance(item.this, exp.Anonymous):
                col = self.expr(target, scope, clause="from")
                scope.sources.append(Source(alias=alias or self.norm(target.name), columns=None))
                if col.sources or col.opaque:
                    scope.sources[-1].columns = {"?": Col(col.sources, False, True)}
                return
            if not isinstance(target, exp.Identifier):
                raise Unprovable("unsupported", f"a FROM item of type {type(target).__name__}")
            name = self.norm(target)
            if self.mysql and name == "dual" and item.args.get("db") is None and not target.quoted:
                return  # MySQL's DUAL: no table at all
            if item.args.get("db") is None and name in scope.ctes:
                cols = self._rename(scope.ctes[name], alias_node)
                scope.sources.append(Source(alias=alias or name, columns=dict(cols)))
            else:
                scope.sources.append(self.table_source(item, alias, alias_node))
            for join in item.args.get("joins") or ():
                self.add_source(join.this, scope)
                if join.args.get("on") is not None:
                    self.expr(join.args["on"], scope, clause="join")
            return
        if isinstance(item, exp.Subquery):
            cols = self._rename(self.query(item.this, Scope(scope.parent, dict(scope.ctes))), alias_node)
            scope.sources.append(Source(alias=alias, columns=dict(cols)))
            return
        if isinstance(item, exp.Lateral):
            inner = item.this
            if isinstance(inner, exp.Subquery):
                cols = self._rename(self.query(inner.this, scope), alias_node)
                scope.sources.append(Source(alias=alias, columns=dict(cols)))
            else:
                col = self.expr(inner, scope, clause="from")
                scope.sources.append(Source(alias=alias, columns={"?": Col(col.sources, False, True)}))
            return
        if isinstance(item, exp.Values):
            cols = self.query(item, scope)
            scope.sources.append(Source(alias=alias, columns=dict(cols)))
            return
        if isinstance(item, exp.Unnest):
            col = merge_cols([self.expr(e, scope, clause="from") for e in item.expressions])
            names = [self.norm(c) for c in alias_node.args.get("columns") or ()] if alias_node else []
            by_name = {n: Col(col.sources, False, col.opaque) for n in names} or {"?": Col(col.sources, False, True)}
            scope.sources.append(Source(alias=alias or "unnest", columns=by_name))
            return
        raise Unprovable("unsupported", f"a FROM item of type {type(item).__name__}")

    def table_source(self, item: exp.Table, alias: str, alias_node: exp.Expr | None) -> Source:
        database, schema, name, info = self.table_identity(item)
        path = self.path_of(database, schema, name)
        self.acc.reads.add(path)
        if info is None:
            self.acc.unknown_objects.add(path)
            return Source(alias=alias or name, columns=None, unknown_ref=(database, schema, name), path=path)
        if info.view_sql is not None:
            cols = self._view_columns(info, database)
            own = {
                c: Col(
                    frozenset(lc.sources | {self.column_ref(database, schema, name, c)}),
                    lc.direct,
                    lc.opaque,
                    lc.whole_row_of,
                )
                for c, lc in cols
            }
        else:
            own = self._base_columns(info, database, schema, name)
        source = Source(alias=alias or name, columns=own, path=path)
        if alias_node is not None and alias_node.args.get("columns"):
            source.columns = dict(self._rename(list(own.items()), alias_node))
        return source

    def _base_columns(self, info: TableInfo, database: str | None, schema: str, name: str) -> dict[str, Col]:
        """A base table's columns as lineage; memoised on the (immutable) catalog snapshot.

        Callers never mutate the returned dict (sources get new dicts when renamed).
        """
        key = ("base", database, schema, name)
        memo = self.catalog.memo if self.catalog is not None else None
        if memo is not None:
            hit = memo.get(key)
            if isinstance(hit, dict):
                return hit
        own = {c: Col(frozenset({self.column_ref(database, schema, name, c)}), True) for c in info.columns}
        if memo is not None:
            memo[key] = own
        return own

    def _view_columns(self, info: TableInfo, database: str | None) -> list[tuple[str, Col]]:
        """A view's output lineage through its definition (memoised on the catalog snapshot)."""
        key = ("view", database, info.schema, info.name)
        memo = self.catalog.memo if self.catalog is not None else None
        if memo is not None:
            hit = memo.get(key)
            if isinstance(hit, list):
                return hit
        cols = self._resolve_view(info, database)
        if memo is not None:
            memo[key] = cols
        return cols

    def _resolve_view(self, info: TableInfo, database: str | None) -> list[tuple[str, Col]]:
        """A view's output lineage through its definition; facts inside it belong to its owner."""
        from sqlbastion.policies.lexer import LexError, LexerState, lex

        if self.view_depth >= MAX_VIEW_DEPTH:
            raise Unprovable("depth", f"views nested deeper than {MAX_VIEW_DEPTH}")
        import sqlglot

        try:
            stmts = lex(info.view_sql or "", LexerState(dialect=self.dialect))
            if len(stmts) != 1:
                raise Unprovable("view", f"the definition of view {info.schema}.{info.name} is not one query")
            tree = sqlglot.parse_one(stmts[0].text, read=self.dialect)
        except (LexError, sqlglot.errors.ParseError):
            raise Unprovable("view", f"the definition of view {info.schema}.{info.name} cannot be parsed") from None
        sub = Resolver(
            dialect=self.dialect,
            database=info.schema if self.mysql else database,
            search_path=(info.schema, "public") if not self.mysql else (),
            catalog=self.catalog,
            acc=Acc(),
            view_depth=self.view_depth + 1,
        )
        cols = sub.query(tree, None)
        names = list(info.columns)
        return [(names[i] if i < len(names) else n, c) for i, (n, c) in enumerate(cols)]

    # -- columns ----------------------------------------------------------------

    def _find_source(self, scope: Scope | None, qual: str, db: str | None = None) -> Source | None:
        while scope is not None:
            for src in scope.sources:
                if src.alias == qual or (self.mysql and src.alias.lower() == qual.lower()):
                    if db and src.path and len(src.path) >= 2 and src.path[-2] != db:
                        continue
                    return src
            scope = scope.parent
        return None

    def _lookup(self, src: Source, name: str) -> Col | None:
        if src.columns is None:
            if src.unknown_ref is None:
                return OPAQUE
            db, schema, table = src.unknown_ref
            ref = self.column_ref(db, schema, table, name)
            return Col(frozenset({ref}), True)
        col = src.columns.get(name)
        if col is None and self.mysql:
            for k, v in src.columns.items():
                if k.lower() == name:
                    return v
        if col is None and "?" in src.columns:
            return src.columns["?"]
        return col

    def column(self, c: exp.Column, scope: Scope) -> Col:
        name = self.norm(c.this)
        qual_node = c.args.get("table")
        if qual_node is not None:
            qual = self.norm(qual_node)
            db = self.norm(c.args.get("db")) if c.args.get("db") is not None else None
            src = self._find_source(scope, qual, db)
            if src is None:
                return OPAQUE
            col = self._lookup(src, name)
            return col if col is not None else OPAQUE
        s: Scope | None = scope
        while s is not None:
            found: list[Col] = []
            unknown: list[Col] = []
            for src in s.sources:
                if src.columns is None:
                    col = self._lookup(src, name)
                    if col is not None:
                        unknown.append(col)
                else:
                    col = self._lookup(src, name)
                    if col is not None:
                        found.append(col)
            if len(found) == 1 and not unknown:
                return found[0]
            if found or unknown:
                return merge_cols(found + unknown, direct=len(found) + len(unknown) == 1)
            s = s.parent
        src = self._find_source(scope, name)
        if src is not None:
            return self._whole_row(src)
        return OPAQUE

    def _whole_row(self, src: Source) -> Col:
        if src.columns is None:
            return Col(opaque=True)
        cols = list(src.columns.values())
        merged = merge_cols(cols)
        whole = tuple(sorted(merged.sources, key=str))
        return Col(merged.sources, False, merged.opaque or not cols, whole)

    def _pred_sources(self, col: Col, clause: str, *, lookup: bool = False) -> None:
        for ref in col.sources:
            self.acc.predicates.append(PredicateUse(column=ref, lookup=lookup, clause=clause))
        if col.opaque and not col.sources:
            self.acc.predicates.append(
                PredicateUse(
                    column=ColumnRef(database=None, schema=None, table="?", column="?"), lookup=False, clause=clause
                )
            )

    # -- expressions ------------------------------------------------------------

    def expr(
        self,
        root: exp.Expr,
        scope: Scope,
        *,
        clause: str | None = None,
        outputs: list[tuple[str, Col]] | None = None,
    ) -> Col:
        """The lineage of an expression's value; records functions, predicates and copies."""
        if clause in ("where", "having", "join") and not self.acc.literal_sensitive and has_constant_logic(root):
            self.acc.literal_sensitive = True
        collected: list[Col] = []
        stack: list[exp.Expr] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, exp.Column):
                if isinstance(node.this, exp.Star):
                    whole = self._whole_row(
                        self._find_source(scope, self.norm(node.args.get("table"))) or Source(alias="", columns=None)
                    )
                    if clause is not None:
                        # ORDER BY t.* / GROUP BY t.* compare whole rows: every column is used
                        self._pred_sources(whole, clause)
                    collected.append(whole)
                    continue
                col = self.column(node, scope)
                if outputs is not None and not node.args.get("table"):
                    # ORDER BY / HAVING / GROUP BY names may be output aliases; when a name is
                    # both an alias and a source column, the servers' preference differs by
                    # clause (MySQL's HAVING takes the alias): both are taken as used.
                    name = self.norm(node.this)
                    matches = [c for n, c in outputs if n == name]
                    if matches:
                        col = merge_cols(matches) if col is OPAQUE else merge_cols([col, *matches])
                self.acc.columns_read |= col.sources
                if clause is not None:
                    self._pred_sources(col, clause, lookup=is_lookup(node, mysql=self.mysql))
                collected.append(col)
                continue
            if isinstance(node, (exp.Subquery, exp.Select, exp.SetOperation)):
                outs = self.query(node, scope)
                sub = merge_cols([c for _, c in outs])
                if clause is not None:
                    self._pred_sources(sub, clause)
                collected.append(Col(sub.sources, False, sub.opaque, sub.whole_row_of))
                continue
            if (
                isinstance(node, exp.Dot)
                and isinstance(node.this, exp.Paren)
                and isinstance(node.this.this, exp.Column)
            ):
                inner = node.this.this
                src = self._find_source(scope, self.norm(inner.this)) if not inner.args.get("table") else None
                if src is not None and src.columns is not None:
                    col = self._lookup(src, self.norm(node.expression)) or OPAQUE
                    self.acc.columns_read |= col.sources
                    if clause is not None:
                        self._pred_sources(col, clause)
                    collected.append(col)
                    continue
            if isinstance(node, exp.PropertyEQ):
                value = self.expr(node.expression, scope)
                self.acc.copies |= value.sources
                self.acc.feature("user_variable", "assigns a user variable")
                collected.append(value)
                continue
            if isinstance(node, exp.Window):
                for p in node.args.get("partition_by") or ():
                    collected.append(self.expr(p, scope, clause="window", outputs=outputs))
                order = node.args.get("order")
                if order is not None:
                    for o in order.expressions:
                        collected.append(self.expr(o, scope, clause="window", outputs=outputs))
                stack.append(node.this)
                continue
            if isinstance(node, exp.Func):
                name = record_call(node, self.acc)
                if name in COUNTING_FUNCTIONS:
                    count_args = list(node.iter_expressions())
                    counted = merge_cols([self.expr(a, scope) for a in count_args])
                    if all(_plain_count_argument(a) for a in count_args):
                        self.acc.counted |= counted.sources
                    else:
                        # COUNT(NULLIF(col > 'x', false)) counts the rows a predicate on the
                        # column keeps: a filter, not a count of values.
                        self._pred_sources(counted, "count")
                    continue
                if name not in SAFE_BUILTINS and isinstance(node, exp.Anonymous) and name not in FLAGGED:
                    args = merge_cols([self.expr(a, scope) for a in node.iter_expressions()])
                    self.acc.unknown_functions.add(name)
                    self.acc.unknown_function_columns |= args.sources
                    collected.append(Col(args.sources, False, True, args.whole_row_of))
                    continue
            stack.extend(node.iter_expressions())
        if not collected:
            if isinstance(root, (exp.Identifier, exp.Var)) and clause is None:
                # A bare word as a value is not a column sqlglot resolved: MySQL's
                # "_binary mobile" reads here as the word "_binary" aliased "mobile",
                # while the server reads a charset introducer over the column.
                return OPAQUE
            return Col()
        root_inner = root
        while isinstance(root_inner, (exp.Paren, exp.Alias)):
            root_inner = root_inner.this
        direct = isinstance(root_inner, exp.Column) and len(collected) == 1 and collected[0].direct
        merged = merge_cols(collected)
        return Col(merged.sources, direct, merged.opaque, merged.whole_row_of)
