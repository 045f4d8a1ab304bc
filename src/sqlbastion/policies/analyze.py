"""SQL text → StatementFacts, fail closed.

Strategy: ``lexer.lex`` first reads the message the way the server will
(executable comments expanded, literals decoded under the session's
``sql_mode`` / ``standard_conforming_strings``) and splits it into statements.
Each statement is then classified by its leading keywords; statements sqlglot
does not model (or models as a lenient ``exp.Command``) are handled from their
keywords alone, and everything else goes through sqlglot and ``lineage``.

Every gap ends in ``unprovable``: a parse error, an ``exp.Command`` fallback,
an unknown statement shape, a size, depth or count limit, a lexer-state change
that cannot be followed. The engine turns that into a block (or, per role,
review / audit-only), never into an allow.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlglot import exp

from sqlbastion import logs
from sqlbastion.policies.catalog import Catalog
from sqlbastion.policies.facts import ObjectPath, PredicateUse, StatementFacts
from sqlbastion.policies.lexer import LexedStatement, LexError, LexerState, lex
from sqlbastion.policies.lineage import Acc, Resolver, Unprovable
from sqlbastion.policies.model import ColumnRef, StatementContext
from sqlbastion.policies.settings import encoding_is_safe, session_setting
from sqlbastion.policies.statements import StatementBase

__all__ = ["Analysis", "AnalysisLimits", "analyze", "analyze_lexed", "lex_message"]

log = logs.get_logger("policies.analyze")


@dataclass(frozen=True, kw_only=True, slots=True)
class AnalysisLimits:
    max_statement_bytes: int = 1 << 20
    max_statements: int = 64


@dataclass(frozen=True, kw_only=True, slots=True)
class Analysis:
    statements: tuple[StatementFacts, ...]
    unprovable: tuple[str, str] | None = None  # message-level: lexer, size, count


def _unprovable(kind: str, code: str, why: str) -> StatementFacts:
    return StatementFacts(kind=kind, unprovable=(code, why))


_TX_HEADS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "END", "ABORT", "SAVEPOINT", "RELEASE", "XA"})
_MAINTENANCE = frozenset(
    {"VACUUM", "ANALYZE", "ANALYSE", "CLUSTER", "REINDEX", "OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM"}
)
_SERVER_ADMIN = frozenset(
    {"CHECKPOINT", "FLUSH", "PURGE", "INSTALL", "UNINSTALL", "SHUTDOWN", "CHANGE", "BINLOG", "CACHE"}
)
_CODE_OBJECTS = frozenset(
    {
        "FUNCTION",
        "PROCEDURE",
        "TRIGGER",
        "EVENT",
        "RULE",
        "AGGREGATE",
        "OPERATOR",
        "LANGUAGE",
        "EXTENSION",
        "CAST",
        "TRANSFORM",
        "CONVERSION",
        "PACKAGE",
    }
)
_USER_OBJECTS = frozenset({"USER", "ROLE", "GROUP"})
_SHOW_SAFE = frozenset(
    {
        "TABLES",
        "FULL",
        "DATABASES",
        "SCHEMAS",
        "COLUMNS",
        "FIELDS",
        "INDEX",
        "INDEXES",
        "KEYS",
        "CREATE",
        "TABLE",
        "VARIABLES",
        "SESSION",
        "STATUS",
        "COLLATION",
        "CHARACTER",
        "CHARSET",
        "ENGINES",
        "GRANTS",
        "PRIVILEGES",
        "PLUGINS",
        "TRIGGERS",
        "FUNCTION",
        "PROCEDURE",
        "EVENTS",
        "OPEN",
        "PROFILE",
        "PROFILES",
        "WARNINGS",
        "ERRORS",
        "COUNT",
        "LOCAL",
        "STORAGE",
        "TRANSACTION",
        "TIME",
        "SEARCH_PATH",
        "SERVER_VERSION",
        "ALL",
        "TIMEZONE",
        "CLIENT_ENCODING",
        "SERVER_ENCODING",
        "STANDARD_CONFORMING_STRINGS",
        "IS_SUPERUSER",
        "DATESTYLE",
        "INTERVALSTYLE",
        "APPLICATION_NAME",
        "DEFAULT_TRANSACTION_ISOLATION",
        "MAX_IDENTIFIER_LENGTH",
        "INTEGER_DATETIMES",
        "LC_COLLATE",
        "LC_CTYPE",
        "SQL_MODE",
    }
)
_SHOW_OTHER_SESSIONS = frozenset({"PROCESSLIST", "ENGINE", "ENGINES_STATUS", "EXPLAIN", "INNODB"})
_SHOW_ADMIN = frozenset({"BINLOG", "BINARY", "RELAYLOG", "MASTER", "SLAVE", "REPLICA", "REPLICAS", "HOSTS"})
_EXPLAIN_OPTIONS = frozenset(
    {
        "EXPLAIN",
        "DESCRIBE",
        "DESC",
        "ANALYZE",
        "ANALYSE",
        "VERBOSE",
        "EXTENDED",
        "PARTITIONS",
        "FORMAT",
        "JSON",
        "TREE",
        "TRADITIONAL",
        "TEXT",
        "XML",
        "YAML",
    }
)
_QUERY_HEADS = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})
_WRITE_KINDS = frozenset({"insert", "update", "delete", "merge", "replace", "create_table", "truncate"})


class _Analyzer(StatementBase):
    def statement(self, st: LexedStatement) -> StatementFacts:
        head = st.head
        h0 = head[0] if head else ""
        h1 = head[1] if len(head) > 1 else ""
        words = st.words
        if not h0:
            return _unprovable("unknown", "type", "the statement starts with no keyword")
        if h0 in _TX_HEADS or (h0 == "START" and h1 == "TRANSACTION"):
            return StatementFacts(kind="transaction")
        if h0 == "DO" and self.mysql:
            # MySQL DO evaluates expressions and discards the result: analyse it as a SELECT.
            facts = self._parsed("SELECT" + st.text[2:] if st.text[:2].upper() == "DO" else st.text)
            return replace(facts, kind="do", outputs=(), produces_rows=False)
        if h0 in ("PREPARE", "EXECUTE", "CALL", "DO"):
            return self.feature("dynamic_sql", f"{h0} runs SQL the proxy cannot see at this point", kind=h0.lower())
        if h0 == "DEALLOCATE" or (h0 in ("FETCH", "MOVE", "CLOSE") and not self.mysql):
            return StatementFacts(kind="cursor" if h0 != "DEALLOCATE" else "deallocate")
        if h0 == "DECLARE" and not self.mysql:
            return self._declare(st)
        if h0 in ("GRANT", "REVOKE"):
            return self.feature("grant", f"{h0} changes privileges", kind=h0.lower(), admin=True)
        if h0 == "LOCK":
            return self.feature("lock_statement", "LOCK holds locks other sessions wait on", kind="lock")
        if h0 == "UNLOCK":
            return StatementFacts(kind="unlock")
        if h0 in _MAINTENANCE:
            return StatementFacts(kind="maintenance", needs=frozenset({("ddl", ())}))
        if h0 in _SERVER_ADMIN or (h0 in ("START", "STOP") and h1 in ("SLAVE", "REPLICA", "GROUP_REPLICATION")):
            return self.feature(
                "server_settings",
                f"{h0} {h1}".strip() + " is a server administration command",
                kind="admin",
                admin=True,
            )
        if h0 in ("LISTEN", "NOTIFY"):
            return self.feature("other_sessions", f"{h0} crosses sessions on the shared backend account", kind="notify")
        if h0 == "UNLISTEN":
            return StatementFacts(kind="notify")
        if h0 == "KILL":
            return self.feature("other_sessions", "KILL ends another session", kind="kill")
        if h0 == "HANDLER":
            return self.feature("handler", "HANDLER reads rows bypassing SQL analysis", kind="handler")
        if h0 == "LOAD":
            if h1 in ("DATA", "XML"):
                return self.feature("file_access", f"LOAD {h1} reads a file", kind="load_data")
            return self.feature(
                "server_settings", "LOAD INDEX is a server administration command", kind="admin", admin=True
            )
        if h0 == "DISCARD":
            return StatementFacts(kind="discard", effects=(("reset", "all"),), lexer_change=True)
        if h0 == "RESET" and not self.mysql:
            return self._pg_reset(head)
        if h0 == "RESET":
            return self.feature("server_settings", "RESET is a server administration command", kind="admin", admin=True)
        if h0 == "HELP":
            return StatementFacts(kind="help")
        if h0 == "RENAME":
            if h1 == "USER":
                return self.feature("user_admin", "RENAME USER changes accounts", kind="rename_user", admin=True)
            facts = self._ddl_keywords(st, "rename")
            return replace(facts, features=(("alter_destructive", "RENAME TABLE renames tables"),))
        if h0 in ("COMMENT", "SECURITY", "IMPORT", "REFRESH"):
            return self._ddl_keywords(st, h0.lower())
        if h0 in ("CREATE", "ALTER", "DROP"):
            special = self._ddl_head(st, h0)
            if special is not None:
                return special
        if h0 == "SHOW":
            return self._show(head, st.text)
        if h0 in ("EXPLAIN", "DESCRIBE", "DESC"):
            return self._explain(st)
        if self.mysql and "INTO" in words and ("OUTFILE" in words or "DUMPFILE" in words):
            return self.feature(
                "file_access", "SELECT ... INTO OUTFILE/DUMPFILE writes a server file", kind="select_into_file"
            )
        if h0 == "SET":
            return self._set(st)
        if self.mysql and h0 in ("SELECT", "WITH") and "INTO" in st.words:
            trailing = self._trailing_into(st.text)
            if trailing is not None:
                return trailing
        text = st.text
        if h0 in ("INSERT", "REPLACE") and ("VALUES" in words or "VALUE" in words):
            text = self._first_values_row(text)
        kind_override = None
        if h0 == "REPLACE" and self.mysql:
            text = "INSERT" + text[len("REPLACE") :] if text[:7].upper() == "REPLACE" else text
            kind_override = "replace"
        return self._parsed(text, kind_override)

    def _ddl_keywords(self, st: LexedStatement, kind: str) -> StatementFacts:
        return StatementFacts(kind=kind, needs=frozenset({("ddl", ())}))

    def _ddl_head(self, st: LexedStatement, verb: str) -> StatementFacts | None:
        words = st.head[1:6]
        lower = verb.lower()
        if any(w in _USER_OBJECTS for w in words[:2]):
            return self.feature("user_admin", f"{verb} {words[0]} changes accounts", kind=f"{lower}_user", admin=True)
        if verb == "ALTER" and words[:1] == ("SYSTEM",):
            return self.feature(
                "server_settings", "ALTER SYSTEM changes server settings", kind="alter_system", admin=True
            )
        if verb == "ALTER" and words[:2] == ("DEFAULT", "PRIVILEGES"):
            return self.feature("grant", "ALTER DEFAULT PRIVILEGES changes privileges", kind="grant", admin=True)
        if verb in ("CREATE", "ALTER") and any(w in _CODE_OBJECTS for w in words):
            what = next(w for w in words if w in _CODE_OBJECTS)
            return self.feature(
                "code_create", f"{verb} {what} creates code that runs later", kind=f"{lower}_{what.lower()}"
            )
        if verb == "DROP" and any(w in _CODE_OBJECTS for w in words[:2]):
            return StatementFacts(kind="drop_code", needs=frozenset({("ddl", ())}))
        if verb == "ALTER" and words[:1] in (("DATABASE",), ("SCHEMA",), ("SEQUENCE",), ("INDEX",)):
            return StatementFacts(kind=f"alter_{words[0].lower()}", needs=frozenset({("ddl", ())}))
        return None

    # -- parsed statements --------------------------------------------------------

    def _parsed(self, text: str, kind_override: str | None = None) -> StatementFacts:
        tree = self._parse(text)
        acc = Acc()
        r = self.resolver(acc)
        if isinstance(tree, (exp.Select, exp.SetOperation, exp.Values)) or (
            isinstance(tree, exp.Subquery) and isinstance(tree.this, (exp.Select, exp.SetOperation))
        ):
            return self._query(tree, r, acc)
        if isinstance(tree, exp.Insert):
            return self._insert(tree, r, acc, kind_override or "insert")
        if isinstance(tree, exp.Update):
            return self._update(tree, r, acc)
        if isinstance(tree, exp.Delete):
            return self._delete(tree, r, acc)
        if isinstance(tree, exp.Merge):
            return self._merge(tree, r, acc)
        if isinstance(tree, exp.Create):
            return self._create(tree, r, acc)
        if isinstance(tree, exp.Drop):
            return self._drop(tree, r)
        if isinstance(tree, exp.Alter):
            return self._alter(tree, r)
        if isinstance(tree, exp.TruncateTable):
            paths = [self._target(t, r) for t in tree.expressions if isinstance(t, exp.Table)]
            return StatementFacts(
                kind="truncate",
                writes=frozenset(paths),
                needs=frozenset(("delete", p) for p in paths),
                features=(("truncate", "TRUNCATE removes every row"),),
            )
        if isinstance(tree, exp.Use):
            name = r.norm(tree.this.this if isinstance(tree.this, exp.Table) else tree.this)
            return StatementFacts(kind="use", effects=(("database", name),), lexer_change=True)
        if isinstance(tree, (exp.Transaction, exp.Commit, exp.Rollback)):
            return StatementFacts(kind="transaction")
        if isinstance(tree, exp.Copy) and not self.mysql:
            return self._copy(tree, r, acc)
        raise Unprovable("type", f"statements of type {type(tree).__name__} are not analysed")

    def _create(self, tree: exp.Create, r: Resolver, acc: Acc) -> StatementFacts:
        kind = str(tree.args.get("kind") or "").upper()
        if kind in _CODE_OBJECTS:
            return self.feature(
                "code_create", f"CREATE {kind} creates code that runs later", kind=f"create_{kind.lower()}"
            )
        if kind in ("DATABASE", "SCHEMA"):
            name = r.norm(tree.this.this if isinstance(tree.this, exp.Table) else tree.this)
            path: ObjectPath = (name,) if self.mysql else ((self.ctx.database or ""), name)
            return StatementFacts(kind=f"create_{kind.lower()}", needs=frozenset({("ddl", path)}))
        target = tree.this
        if kind == "INDEX":
            table = target.args.get("table") if isinstance(target, exp.Index) else None
            path = self._target(table, r) if table is not None else ()
            return StatementFacts(kind="create_index", needs=frozenset({("ddl", path)}), writes=frozenset({path}))
        if kind not in ("TABLE", "VIEW", "SEQUENCE"):
            raise Unprovable("type", f"CREATE {kind or '?'} is not analysed")
        path = self._target(target, r)
        body = tree.args.get("expression")
        props = tree.args.get("properties")
        temporary = props is not None and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions)
        if temporary:
            acc.feature("temporary_table", "creates a temporary table")
        needs = {("ddl", path)}
        if isinstance(body, (exp.Select, exp.SetOperation, exp.Subquery)):
            outs = r.query(body, None)
            for _, c in outs:
                acc.copies |= c.sources
            acc.feature("data_copy", f"CREATE {kind} ... AS copies query results")
            if kind == "TABLE":
                needs.add(("insert", path))
        return self.finish(f"create_{kind.lower()}", acc, writes={path}, needs=needs)

    def _drop(self, tree: exp.Drop, r: Resolver) -> StatementFacts:
        kind = str(tree.args.get("kind") or "").upper()
        paths: list[ObjectPath] = []
        if kind in ("DATABASE", "SCHEMA"):
            target = tree.this if tree.args.get("this") is not None else None
            names = [target] if target is not None else list(tree.args.get("tables") or [])
            for t in names:
                name = r.norm(t.this if isinstance(t, exp.Table) else t)
                paths.append((name,) if self.mysql else ((self.ctx.database or ""), name))
        else:
            for t in tree.args.get("tables") or ([tree.this] if tree.args.get("this") is not None else []):
                if isinstance(t, exp.Table):
                    paths.append(self._target(t, r))
        features: tuple[tuple[str, str], ...] = ()
        if kind in ("DATABASE", "SCHEMA", "TABLE", "VIEW"):
            features = (("drop_object", f"DROP {kind} destroys {', '.join('.'.join(p) for p in paths)}"),)
        elif kind in _USER_OBJECTS:
            return self.feature("user_admin", f"DROP {kind} changes accounts", kind="drop_user", admin=True)
        return StatementFacts(
            kind=f"drop_{kind.lower() or 'object'}",
            writes=frozenset(paths),
            needs=frozenset(("ddl", p) for p in paths) or frozenset({("ddl", ())}),
            features=features,
        )

    def _alter(self, tree: exp.Alter, r: Resolver) -> StatementFacts:
        kind = str(tree.args.get("kind") or "").upper()
        path = self._target(tree.this, r) if isinstance(tree.this, exp.Table) else ()
        why: list[str] = []
        for action in tree.args.get("actions") or ():
            if isinstance(action, exp.Drop):
                why.append(f"drops {str(action.args.get('kind') or 'an object').lower()}")
            elif isinstance(action, exp.DropPrimaryKey):
                why.append("drops the primary key")
            elif isinstance(action, exp.AlterColumn) and action.args.get("dtype") is not None:
                why.append("changes a column's type")
            elif type(action).__name__ in ("ModifyColumn", "ChangeColumn"):
                why.append("redefines a column")
            elif type(action).__name__ in ("RenameColumn", "AlterRename"):
                # Renaming breaks applications and sheds classifications bound to the old name.
                why.append("renames a column" if type(action).__name__ == "RenameColumn" else "renames the table")
        features = (("alter_destructive", "; ".join(why)),) if why else ()
        return StatementFacts(
            kind=f"alter_{kind.lower() or 'object'}",
            writes=frozenset({path}),
            needs=frozenset({("ddl", path)}),
            features=features,
        )

    def _first_values_row(self, text: str) -> str:
        """``INSERT … VALUES (…), (…), …`` of constants only: analyse the first row alone.

        Rows of plain constants add nothing the analysis looks at, and a bulk
        insert of thousands of rows would otherwise cost seconds to parse. Any
        other shape (functions, subqueries, ON DUPLICATE KEY / ON CONFLICT,
        RETURNING) keeps the whole text.
        """
        toks = self.tokens_of(text)
        depth = 0
        start = None
        for i, tok in enumerate(toks):
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif depth == 0 and tok.upper in ("VALUES", "VALUE"):
                start = i + 1
                break
        if start is None:
            return text
        constants = {"NULL", "TRUE", "FALSE", "DEFAULT"}
        i, rows, first_end = start, 0, -1
        while i < len(toks):
            if toks[i].text != "(":
                return text
            i += 1
            while True:
                if i < len(toks) and toks[i].text in ("-", "+"):
                    i += 1
                if i >= len(toks):
                    return text
                tok = toks[i]
                if not (tok.kind in ("string", "number") or tok.upper in constants or tok.text == "?"):
                    if not (tok.text == "$" and i + 1 < len(toks) and toks[i + 1].kind == "number"):
                        return text
                    i += 1
                i += 1
                if i < len(toks) and toks[i].text == ",":
                    i += 1
                    continue
                if i < len(toks) and toks[i].text == ")":
                    i += 1
                    break
                return text
            rows += 1
            if rows == 1:
                first_end = toks[i - 1].end
            if i < len(toks) and toks[i].text == ",":
                i += 1
                continue
            if i < len(toks):
                return text
        return text[:first_end] if rows > 1 and first_end > 0 else text

    def _trailing_into(self, text: str) -> StatementFacts | None:
        """MySQL ``SELECT … FROM … INTO @a, @b`` (INTO last, which sqlglot does not read)."""
        toks = self.tokens_of(text)
        depth = 0
        for i, tok in enumerate(toks):
            if tok.text == "(":
                depth += 1
            elif tok.text == ")":
                depth -= 1
            elif depth == 0 and tok.upper == "INTO" and i > 0:
                rest = toks[i + 1 :]
                if rest and all(t.text in ("@", ",") or t.kind in ("word", "ident") for t in rest):
                    facts = self._parsed(text[: tok.start])
                    if facts.kind != "select":
                        return None
                    copies = set(facts.copies)
                    for o in facts.outputs:
                        copies |= o.sources
                    feats = (*facts.features, ("user_variable", "SELECT ... INTO stores values in variables"))
                    return replace(
                        facts,
                        kind="select_into",
                        outputs=(),
                        produces_rows=False,
                        copies=frozenset(copies),
                        features=feats,
                    )
                return None
        return None

    def _declare(self, st: LexedStatement) -> StatementFacts:
        toks = self.tokens_of(st.text)
        for i, tok in enumerate(toks):
            if tok.upper == "FOR":
                facts = self._parsed(st.text[tok.end :])
                if facts.kind != "select":
                    raise Unprovable("type", "DECLARE ... CURSOR FOR something other than a query")
                binary = any(t.upper == "BINARY" for t in toks[:i])
                feats = (*facts.features, ("cursor", "declares a cursor" + (" (binary)" if binary else "")))
                return replace(facts, kind="declare_cursor", produces_rows=False, features=feats)
        raise Unprovable("parse", "DECLARE without FOR <query>")

    def _explain(self, st: LexedStatement) -> StatementFacts:
        toks = self.tokens_of(st.text)
        analyze_run = False
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.text == "(" and i == 1 and not self.mysql:
                # PostgreSQL: EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) statement
                depth = 0
                while i < len(toks):
                    if toks[i].text == "(":
                        depth += 1
                    elif toks[i].text == ")":
                        depth -= 1
                    if toks[i].upper in ("ANALYZE", "ANALYSE"):
                        analyze_run = True
                    i += 1
                    if depth == 0:
                        break
                continue
            if (t.kind == "word" and t.upper in _EXPLAIN_OPTIONS) or t.text == "=":
                analyze_run = analyze_run or t.upper in ("ANALYZE", "ANALYSE")
                i += 1
                continue
            break
        if i >= len(toks):
            raise Unprovable("parse", "EXPLAIN without a statement")
        first = toks[i].upper
        if first == "FOR":
            return self.feature("other_sessions", "EXPLAIN FOR CONNECTION inspects another session", kind="explain")
        inner_text = st.text[toks[i].start :]
        if first not in (*_QUERY_HEADS, "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "(", "CREATE", "EXECUTE"):
            # MySQL DESCRIBE t [column]: table metadata.
            j = i
            while j < len(toks) and (toks[j].kind in ("word", "ident") or toks[j].text == "."):
                if j > i and toks[j].text != "." and toks[j - 1].text != ".":
                    break
                j += 1
            if j == i:
                raise Unprovable("parse", "EXPLAIN/DESCRIBE of something that is neither a table nor a statement")
            acc = Acc()
            r = self.resolver(acc)
            table_ref = st.text[toks[i].start : toks[j - 1].end]  # identifiers only (checked above)
            r.query(self._parse(f"SELECT * FROM {table_ref}"), None)  # noqa: S608  # parsed, never executed
            return StatementFacts(
                kind="describe", reads=frozenset(acc.reads), needs=frozenset(("select", p) for p in acc.reads)
            )
        inner_words = [w.upper for w in toks[i:] if w.kind == "word"]
        lexed = LexedStatement(text=inner_text, head=tuple(inner_words[:6]), words=frozenset(inner_words))
        inner = self.statement(lexed)
        feats = list(inner.features)
        predicates = inner.predicates
        if analyze_run and inner.kind in _WRITE_KINDS:
            feats.append(("explain_analyze_write", f"EXPLAIN ANALYZE runs the {inner.kind.upper()}"))
        if analyze_run:
            # The plan hides the rows, but running the statement evaluates every output
            # expression: a cast or an XML/JSON function over a masked column echoes its
            # value in the error. Computed outputs count as uses of their sources (the
            # inference guard judges them); plain columns are never evaluated into text.
            predicates += _evaluated_outputs(inner)
        return replace(
            inner,
            kind="explain",
            outputs=(),
            produces_rows=True,
            features=tuple(feats),
            predicates=predicates,
            copies=inner.copies if analyze_run else frozenset(),
            writes=inner.writes if analyze_run else frozenset(),
            needs=inner.needs if analyze_run else frozenset(n for n in inner.needs if n[0] == "select"),
            transformed=frozenset(),
        )

    def _show(self, head: tuple[str, ...], text: str = "") -> StatementFacts:
        words = head[1:3]
        if self.mysql and text:
            table = self._shown_table(text)
            if table is not None:
                return table
        if words[:2] == ("CREATE", "USER"):
            return self.feature("user_admin", "SHOW CREATE USER shows account credentials", kind="show", admin=True)
        if any(w in _SHOW_OTHER_SESSIONS for w in words):
            return self.feature("other_sessions", f"SHOW {' '.join(words)} shows other sessions", kind="show")
        if any(w in _SHOW_ADMIN for w in words):
            return self.feature(
                "server_settings", f"SHOW {' '.join(words)} is server administration", kind="show", admin=True
            )
        if words and words[0] in ("WARNINGS", "ERRORS"):
            return self.feature("diagnostics", "SHOW WARNINGS/ERRORS can echo values", kind="show")
        if not self.mysql or (words and words[0] in _SHOW_SAFE) or (words and words[0] == "GLOBAL"):
            return StatementFacts(kind="show")
        return _unprovable("show", "type", f"SHOW {' '.join(words)} is not analysed")

    def _shown_table(self, text: str) -> StatementFacts | None:
        """MySQL SHOW COLUMNS / INDEX / CREATE TABLE of one table: needs some grant on that table."""
        toks = self.tokens_of(text)
        kinds = [t.upper for t in toks[1:4]]
        if kinds[:1] == ["FULL"]:
            kinds = kinds[1:]
        start: int | None = None
        if kinds[:1] and kinds[0] in ("COLUMNS", "FIELDS", "INDEX", "INDEXES", "KEYS"):
            start = next((i + 1 for i, t in enumerate(toks) if t.upper in ("FROM", "IN")), None)
        elif kinds[:2] in (["CREATE", "TABLE"], ["CREATE", "VIEW"]):
            start = next((i + 1 for i, t in enumerate(toks) if t.upper in ("TABLE", "VIEW")), None)
        if start is None or start >= len(toks):
            return None
        parts = [toks[start]]
        if start + 2 < len(toks) and toks[start + 1].text == ".":
            parts.append(toks[start + 2])
        if any(p.kind not in ("word", "ident") for p in parts):
            return None
        names = [p.text.lower() for p in parts]
        # SHOW COLUMNS FROM t FROM db / IN db names the database after the table.
        after = start + (3 if len(parts) == 2 else 1)
        if len(parts) == 1 and after + 1 < len(toks) and toks[after].upper in ("FROM", "IN"):
            names = [toks[after + 1].text.lower(), names[0]]
        path = (names[0], names[1]) if len(names) == 2 else ((self.ctx.database or "").lower(), names[0])
        return StatementFacts(kind="show", reads=frozenset({path}), needs=frozenset({("select", path)}))

    def _pg_reset(self, head: tuple[str, ...]) -> StatementFacts:
        what = head[1] if len(head) > 1 else ""
        if what in ("ROLE", "SESSION"):
            return self.feature("set_role", "RESET ROLE/SESSION AUTHORIZATION changes the acting role", kind="set_role")
        return StatementFacts(kind="set", effects=(("reset", what.lower() or "all"),), lexer_change=True)

    def _set(self, st: LexedStatement) -> StatementFacts:
        return session_setting(self, st)


def lex_message(sql: str, ctx: StatementContext, limits: AnalysisLimits) -> list[LexedStatement] | Analysis:
    """Lex a client message under the session's lexer state; an ``Analysis`` when it is refused already."""
    if len(sql) > limits.max_statement_bytes or len(sql.encode("utf-8", "surrogatepass")) > limits.max_statement_bytes:
        return Analysis(
            statements=(), unprovable=("size", f"the message is larger than {limits.max_statement_bytes} bytes")
        )
    if not encoding_is_safe(ctx.dialect, ctx.client_encoding):
        return Analysis(
            statements=(),
            unprovable=("charset", f"the session's client encoding {ctx.client_encoding} can hide a backslash"),
        )
    state = LexerState(
        dialect=ctx.dialect,
        ansi_quotes=ctx.ansi_quotes,
        no_backslash_escapes=ctx.no_backslash_escapes,
        standard_conforming_strings=ctx.standard_conforming_strings,
    )
    try:
        lexed = lex(sql, state)
    except LexError as exc:
        return Analysis(statements=(), unprovable=(exc.code, exc.why))
    except RecursionError:
        return Analysis(statements=(), unprovable=("depth", "the message is nested too deeply"))
    if len(lexed) > limits.max_statements:
        return Analysis(
            statements=(), unprovable=("count", f"more than {limits.max_statements} statements in one message")
        )
    return lexed


_UNPROVEN_COLUMN = ColumnRef(database=None, schema=None, table="?", column="?")


def _evaluated_outputs(inner: StatementFacts) -> tuple[PredicateUse, ...]:
    """The output expressions an executing EXPLAIN evaluates, as predicate uses of their sources."""
    uses: list[PredicateUse] = []
    for o in inner.outputs:
        if o.direct and not o.whole_row_of and not o.opaque:
            continue
        if o.opaque:
            uses.append(PredicateUse(column=_UNPROVEN_COLUMN, lookup=False, clause="EXPLAIN ANALYZE output"))
        uses.extend(
            PredicateUse(column=c, lookup=False, clause="EXPLAIN ANALYZE output")
            for c in sorted({*o.sources, *o.whole_row_of}, key=str)
        )
    return tuple(uses)


def _meaning(f: StatementFacts) -> tuple[object, ...]:
    """What a statement reads, writes, shows and changes: the facts both readings must share."""
    return (
        f.kind,
        f.needs,
        f.reads,
        f.writes,
        f.columns_read,
        f.predicates,
        f.outputs,
        f.transformed,
        f.counted,
        f.copies,
        f.unknown_functions,
        f.unknown_function_columns,
        f.unknown_objects,
        f.where_tautology,
        f.features,
        f.effects,
        f.lexer_change,
    )


def _versioned_reading(
    st: LexedStatement, ran: StatementFacts, ctx: StatementContext, catalog: Catalog | None
) -> StatementFacts:
    """``ran`` if the statement means the same whether or not its versioned comments run.

    The server's version decides whether ``/*!NNNNN … */`` and ``/*M! … */`` run; the
    analysis reads them as running. A server that skips them reads what is left, which
    can be a different statement (``FROM /*!99999 (SELECT 'x' AS mobile) AS */ customers``
    hides the real table from the first reading), so that reading is analysed too and
    any difference refuses the statement. A statement wholly inside such a comment
    is empty for a server that skips it: nothing runs, the first reading stands.
    """
    state = LexerState(
        dialect=ctx.dialect,
        ansi_quotes=ctx.ansi_quotes,
        no_backslash_escapes=ctx.no_backslash_escapes,
        standard_conforming_strings=ctx.standard_conforming_strings,
        skip_versioned=True,
    )
    why = "a versioned executable comment changes what the statement does, and the server's version decides if it runs"
    try:
        skipped = lex(st.source, state)
    except (LexError, RecursionError):
        return _unprovable(ran.kind, "lexer", why)
    if not skipped:
        return ran
    if len(skipped) != 1:
        return _unprovable(ran.kind, "lexer", why)
    try:
        other = _Analyzer(ctx, catalog, 1).statement(skipped[0])
    except Exception:  # any failure of the second reading is a refusal, never an allow
        return _unprovable(ran.kind, "lexer", why)
    if _meaning(other) != _meaning(ran):
        return _unprovable(ran.kind, "lexer", why)
    return ran


def analyze_lexed(
    lexed: list[LexedStatement], ctx: StatementContext, catalog: Catalog | None, limits: AnalysisLimits
) -> Analysis:
    """Facts for each lexed statement. Never raises for bad SQL."""
    if not lexed:
        return Analysis(statements=(StatementFacts(kind="empty"),))
    analyzer = _Analyzer(ctx, catalog, len(lexed))
    facts: list[StatementFacts] = []
    for st in lexed:
        kind = st.head[0].lower() if st.head else "unknown"
        try:
            f = analyzer.statement(st)
        except Unprovable as exc:
            f = _unprovable(kind, exc.code, exc.why)
        except RecursionError:
            f = _unprovable(kind, "depth", "the statement is nested too deeply")
        except Exception as exc:  # an analyser or parser bug is a block, never a crash or an allow
            log.warning("analysis failed", error=type(exc).__name__, dialect=ctx.dialect)
            f = _unprovable(kind, "internal", f"the analyser could not process the statement ({type(exc).__name__})")
        if st.had_versioned_comment and f.unprovable is None:
            f = _versioned_reading(st, f, ctx, catalog)
        facts.append(f)
    if len(facts) > 1 and any(f.lexer_change for f in facts):
        return Analysis(
            statements=tuple(facts),
            unprovable=("lexer", "a statement that changes how later SQL is read or resolved must be sent on its own"),
        )
    return Analysis(statements=tuple(facts))


def analyze(sql: str, ctx: StatementContext, catalog: Catalog | None, limits: AnalysisLimits | None = None) -> Analysis:
    """Analyse one client message (one or more statements). Never raises for bad SQL."""
    limits = limits or AnalysisLimits()
    prepared = lex_message(sql, ctx, limits)
    if isinstance(prepared, Analysis):
        return prepared
    return analyze_lexed(prepared, ctx, catalog, limits)
