"""Statement handlers shared by the analyser: queries and writes, with their lineage.

``StatementBase`` holds what every statement handler needs (the session
context, the catalog, parsing that fails closed, turning gathered facts into
``StatementFacts``) and the handlers of the statements that read or write rows:
SELECT (and SELECT … INTO), INSERT / REPLACE, UPDATE, DELETE, MERGE and COPY.
``analyze._Analyzer`` adds dispatch, DDL and keyword-only statements.
"""

from __future__ import annotations

import itertools

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sqlbastion.policies.catalog import Catalog
from sqlbastion.policies.facts import ObjectPath, StatementFacts
from sqlbastion.policies.lexer import Token, tokens
from sqlbastion.policies.lineage import Acc, Col, Resolver, Scope, Source, Unprovable
from sqlbastion.policies.model import ColumnRef, OutputColumn, StatementContext
from sqlbastion.policies.truth import is_tautology

_INSERT_ARGS = frozenset({"this", "expression", "conflict", "returning", "with_", "hint"})
_UPDATE_ARGS = frozenset({"this", "expressions", "from_", "where", "returning", "order", "limit", "with_", "hint"})
_DELETE_ARGS = frozenset({"this", "using", "where", "returning", "order", "limit", "tables", "with_", "hint"})
_MERGE_ARGS = frozenset({"this", "using", "on", "whens", "with_", "returning"})


class StatementBase:
    def __init__(self, ctx: StatementContext, catalog: Catalog | None, message_statements: int) -> None:
        self.ctx = ctx
        self.dialect = ctx.dialect
        self.mysql = ctx.dialect == "mysql"
        self.catalog = catalog
        self.message_statements = message_statements

    def resolver(self, acc: Acc) -> Resolver:
        return Resolver(
            dialect=self.dialect,
            database=self.ctx.database,
            search_path=self.ctx.search_path,
            catalog=self.catalog,
            acc=acc,
        )

    # -- dispatch ---------------------------------------------------------------

    def feature(self, feature: str, why: str, *, kind: str, admin: bool = False) -> StatementFacts:
        needs: frozenset[tuple[str, ObjectPath]] = frozenset({("admin", ())}) if admin else frozenset()
        return StatementFacts(kind=kind, features=((feature, why),), needs=needs)

    def _parse(self, text: str) -> exp.Expr:
        try:
            trees = sqlglot.parse(text, read=self.dialect)
        except (SqlglotError, RecursionError, ValueError) as exc:
            retry = self._without_array_suffixes(text)
            if retry is None:
                raise Unprovable("parse", f"the statement cannot be parsed ({type(exc).__name__})") from None
            try:
                trees = sqlglot.parse(retry, read=self.dialect)
            except (SqlglotError, RecursionError, ValueError):
                raise Unprovable("parse", f"the statement cannot be parsed ({type(exc).__name__})") from None
        trees = [t for t in trees if t is not None]
        if len(trees) != 1:
            raise Unprovable("parse", "the statement does not parse as exactly one statement")
        tree = trees[0]
        if tree is None:
            raise Unprovable("parse", "the statement is empty")
        if isinstance(tree, exp.Command):
            raise Unprovable("command", f"the parser only recognised {str(tree.this).upper()!r} as a raw command")
        return tree

    def _without_array_suffixes(self, text: str) -> str | None:
        """PostgreSQL ``x::oid[]``: sqlglot cannot read ``[]`` after types it does not know.

        Empty brackets only ever follow a type name in PostgreSQL, and whether a
        cast is to an array or a scalar changes nothing the analysis looks at, so
        the statement is parsed again without them.
        """
        if self.mysql:
            return None
        toks = self.tokens_of(text)
        cut = [
            (a.start, b.end)
            for a, b in itertools.pairwise(toks)
            if a.text == "[" and b.text == "]" and a.kind == b.kind == "punct"
        ]
        if not cut:
            return None
        out: list[str] = []
        pos = 0
        for start, end in cut:
            out.append(text[pos:start])
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def finish(
        self,
        kind: str,
        acc: Acc,
        *,
        outputs: list[tuple[str, Col]] | None = None,
        writes: set[ObjectPath] | None = None,
        needs: set[tuple[str, ObjectPath]] | None = None,
        where: exp.Expr | None = None,
        limit: int | None = None,
        produces_rows: bool = False,
    ) -> StatementFacts:
        out_cols: list[OutputColumn] = []
        transformed: set[ColumnRef] = set()
        for name, c in outputs or ():
            out_cols.append(
                OutputColumn(
                    name=name, sources=c.sources, direct=c.direct, opaque=c.opaque, whole_row_of=c.whole_row_of
                )
            )
            if not c.direct:
                transformed |= c.sources
        need_set = set(needs or ())
        for path in acc.reads:
            need_set.add(("select", path))
        return StatementFacts(
            kind=kind,
            needs=frozenset(need_set),
            reads=frozenset(acc.reads),
            writes=frozenset(writes or ()),
            columns_read=frozenset(acc.columns_read),
            predicates=tuple(dict.fromkeys(acc.predicates)),
            outputs=tuple(out_cols),
            produces_rows=produces_rows,
            transformed=frozenset(transformed),
            counted=frozenset(acc.counted),
            copies=frozenset(acc.copies),
            functions=frozenset(acc.functions),
            unknown_functions=frozenset(acc.unknown_functions),
            unknown_function_columns=frozenset(acc.unknown_function_columns),
            unknown_objects=frozenset(acc.unknown_objects),
            has_where=where is not None,
            where_tautology=where is not None and is_tautology(where, mysql=self.mysql),
            limit=limit,
            features=tuple(acc.features),
            literal_sensitive=acc.literal_sensitive,
        )

    def _limit(self, tree: exp.Expr) -> int | None:
        lim = tree.args.get("limit")
        value = lim.args.get("expression") if isinstance(lim, exp.Limit) else None
        if isinstance(value, exp.Literal) and not value.is_string:
            try:
                return int(str(value.this))
            except ValueError:
                return None
        return None

    def _query(self, tree: exp.Expr, r: Resolver, acc: Acc) -> StatementFacts:
        into = tree.args.get("into")
        if into is not None:
            tree = tree.copy()
            tree.set("into", None)
        outputs = r.query(tree, None)
        where_node = tree.args.get("where")
        where = where_node.this if isinstance(where_node, exp.Where) else None
        if into is None:
            return self.finish("select", acc, outputs=outputs, where=where, limit=self._limit(tree), produces_rows=True)
        for _, c in outputs:
            acc.copies |= c.sources
        target = into.this
        if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier) and not self.mysql:
            path = self._target(target, r)
            acc.feature("data_copy", "SELECT ... INTO creates a table from a query")
            return self.finish("create_table", acc, writes={path}, needs={("ddl", path), ("insert", path)}, where=where)
        acc.feature("user_variable", "SELECT ... INTO stores values in variables")
        return self.finish("select_into", acc, where=where)

    def _target(self, t: exp.Expr, r: Resolver) -> ObjectPath:
        while isinstance(t, exp.Schema):
            t = t.this
        if not isinstance(t, exp.Table) or not isinstance(t.this, exp.Identifier):
            raise Unprovable("unsupported", "a statement target that is not a plain table")
        database, schema, name, _ = r.table_identity(t)
        return r.path_of(database, schema, name)

    def _target_scope(self, t: exp.Expr, r: Resolver, scope: Scope) -> ObjectPath:
        """Add a write target to ``scope`` (its columns are visible to SET / WHERE / RETURNING)."""
        while isinstance(t, exp.Schema):
            t = t.this
        if not isinstance(t, exp.Table):
            raise Unprovable("unsupported", "a statement target that is not a plain table")
        alias_node = t.args.get("alias")
        alias = r.norm(alias_node.this) if alias_node is not None and alias_node.this else ""
        before = set(r.acc.reads)
        source = r.table_source(t, alias, None)
        # Being written is not being read: only WHERE/SET/RETURNING references count as reads.
        if source.path not in before:
            r.acc.reads.discard(source.path or ())
        scope.sources.append(source)
        return source.path or ()

    def _returning(self, tree: exp.Expr, r: Resolver, scope: Scope) -> list[tuple[str, Col]] | None:
        ret = tree.args.get("returning")
        if ret is None:
            return None
        out: list[tuple[str, Col]] = []
        for e in ret.expressions:
            out.extend(r.projection(e, scope))
        return out

    def _walk_rest(self, tree: exp.Expr, r: Resolver, scope: Scope, handled: frozenset[str]) -> None:
        """Arguments a handler does not model are walked as filters: covered, never ignored."""
        for key, value in tree.args.items():
            if key in handled or value is None or isinstance(value, (bool, str)):
                continue
            for part in value if isinstance(value, list) else [value]:
                if isinstance(part, exp.Expr):
                    r.expr(part, scope, clause="other")

    def _insert(self, tree: exp.Insert, r: Resolver, acc: Acc, kind: str) -> StatementFacts:
        scope = Scope(None, r.ctes(tree, None))
        path = self._target_scope(tree.this, r, scope)
        needs: set[tuple[str, ObjectPath]] = {("insert", path)}
        if kind == "replace":
            needs.add(("delete", path))
        src = tree.args.get("expression")
        if isinstance(src, (exp.Select, exp.SetOperation, exp.Subquery)):
            outs = r.query(src, Scope(None, scope.ctes))
            for _, c in outs:
                acc.copies |= c.sources
            acc.feature("data_copy", "INSERT ... SELECT copies rows")
        elif src is not None:
            # VALUES / SET values: a subquery inside copies what it reads.
            value = r.expr(src, Scope(None, scope.ctes))
            acc.copies |= value.sources
        conflict = tree.args.get("conflict")
        if conflict is not None:
            needs.add(("update", path))
            excluded = Scope(scope, scope.ctes)
            excluded.sources.append(Source(alias="excluded", columns=dict(scope.sources[0].columns or {}) or None))
            for e in conflict.expressions:
                value = r.expr(e.expression if isinstance(e, exp.EQ) else e, excluded)
                acc.copies |= value.sources
            condition = conflict.args.get("where")
            if isinstance(condition, exp.Expr):
                r.expr(condition.this if isinstance(condition, exp.Where) else condition, excluded, clause="where")
        returning = self._returning(tree, r, scope)
        self._walk_rest(tree, r, scope, _INSERT_ARGS)
        return self.finish(
            kind, acc, outputs=returning, writes={path}, needs=needs, produces_rows=returning is not None
        )

    def _update(self, tree: exp.Update, r: Resolver, acc: Acc) -> StatementFacts:
        scope = Scope(None, r.ctes(tree, None))
        path = self._target_scope(tree.this, r, scope)
        writes = {path}
        for join in tree.this.args.get("joins") or ():
            r.add_source(join.this, scope)
            if join.args.get("on") is not None:
                r.expr(join.args["on"], scope, clause="join")
        from_ = tree.args.get("from_")
        if from_ is not None:
            r.add_source(from_.this, scope)
        for assignment in tree.expressions:
            if not isinstance(assignment, exp.EQ):
                raise Unprovable("unsupported", "an UPDATE assignment that is not column = value")
            left = assignment.this
            if isinstance(left, exp.Column) and left.args.get("table") is not None:
                qual = r.norm(left.args["table"])
                for src in scope.sources:
                    if src.alias == qual and src.path is not None:
                        writes.add(src.path)
            value = r.expr(assignment.expression, scope)
            acc.copies |= value.sources
        return self._finish_dml("update", tree, r, scope, acc, writes=writes, rest_args=_UPDATE_ARGS)

    def _delete(self, tree: exp.Delete, r: Resolver, acc: Acc) -> StatementFacts:
        scope = Scope(None, r.ctes(tree, None))
        path = self._target_scope(tree.this, r, scope)
        writes = {path}
        for join in tree.this.args.get("joins") or ():
            r.add_source(join.this, scope)
            if join.args.get("on") is not None:
                r.expr(join.args["on"], scope, clause="join")
        for u in tree.args.get("using") or ():
            r.add_source(u, scope)
        for t in tree.args.get("tables") or ():
            # MySQL multi-table DELETE: the listed names (aliases or tables) are the targets.
            name = r.norm(t.this) if isinstance(t, exp.Table) else ""
            for src in scope.sources:
                if src.alias == name and src.path is not None:
                    writes.add(src.path)
        return self._finish_dml("delete", tree, r, scope, acc, writes=writes, rest_args=_DELETE_ARGS)

    def _finish_dml(
        self,
        kind: str,
        tree: exp.Update | exp.Delete,
        r: Resolver,
        scope: Scope,
        acc: Acc,
        *,
        writes: set[ObjectPath],
        rest_args: frozenset[str],
    ) -> StatementFacts:
        """What UPDATE and DELETE share after their targets: WHERE, ORDER/LIMIT, RETURNING, the rest."""
        where_node = tree.args.get("where")
        where = where_node.this if isinstance(where_node, exp.Where) else None
        if where is not None:
            r.expr(where, scope, clause="where")
        r.dml_order_limit(tree, scope)
        returning = self._returning(tree, r, scope)
        self._walk_rest(tree, r, scope, rest_args)
        return self.finish(
            kind,
            acc,
            outputs=returning,
            writes=writes,
            needs={(kind, w) for w in writes},
            where=where,
            limit=self._limit(tree),
            produces_rows=returning is not None,
        )

    def _merge(self, tree: exp.Merge, r: Resolver, acc: Acc) -> StatementFacts:
        scope = Scope(None, r.ctes(tree, None))
        path = self._target_scope(tree.this, r, scope)
        using = tree.args.get("using")
        if using is not None:
            r.add_source(using, scope)
            for c in (scope.sources[-1].columns or {}).values():
                acc.copies |= c.sources
        if tree.args.get("on") is not None:
            r.expr(tree.args["on"], scope, clause="join")
        whens = tree.args.get("whens")
        if whens is not None:
            r.expr(whens, scope, clause="where")  # WHEN … AND conditions pick the rows
        acc.feature("data_copy", "MERGE copies rows from its source")
        self._walk_rest(tree, r, scope, _MERGE_ARGS)
        return self.finish(
            "merge",
            acc,
            writes={path},
            needs={("insert", path), ("update", path), ("delete", path)},
            where=tree.args.get("on"),
        )

    def _copy(self, tree: exp.Copy, r: Resolver, acc: Acc) -> StatementFacts:
        source = tree.this
        files = tree.args.get("files") or []
        to_client = all(
            isinstance(f, (exp.Identifier, exp.Var, exp.Column)) and f.name.upper() in ("STDIN", "STDOUT")
            for f in files
        )
        if not to_client or any(isinstance(f, exp.Literal) for f in files):
            acc.feature("file_access", "COPY reads or writes a server file or program")
        copy_from = bool(tree.args.get("kind"))
        if isinstance(source, (exp.Subquery, exp.Select)):
            outputs = r.query(source, None)
            path = None
        else:
            scope = Scope(None, r.ctes(tree, None))
            path = self._target_scope(source, r, scope)
            src = scope.sources[0]
            cols = [r.norm(c) for c in source.expressions] if isinstance(source, exp.Schema) else None
            if src.columns is None:
                outputs = [("*", Col(opaque=True))]
            else:
                outputs = [(n, c) for n, c in src.columns.items() if cols is None or n in cols]
            if not copy_from:
                acc.reads.add(path)
                for _, c in outputs:
                    acc.columns_read |= c.sources
        if copy_from:
            return self.finish(
                "copy_from", acc, writes={path} if path else set(), needs={("insert", path)} if path else set()
            )
        return self.finish("copy_to", acc, outputs=outputs, needs={("export", path or ())}, produces_rows=True)

    # -- keyword-driven statements ----------------------------------------------

    def tokens_of(self, text: str) -> list[Token]:
        return tokens(text, mysql=self.mysql)
