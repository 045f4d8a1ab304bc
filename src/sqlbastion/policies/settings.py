"""SET statements: which session settings change, and whether analysis can follow.

Strategy (DESIGN.md decision 4): a setting that changes how the server reads
SQL text — MySQL ``sql_mode`` (ANSI_QUOTES, NO_BACKSLASH_ESCAPES) and the
connection character set, PostgreSQL ``standard_conforming_strings`` and
``client_encoding`` — is allowed only when its new value is a constant the
lexer understands; the statement then carries the change as an effect that the
proxy applies to the session once the backend accepts it. Computed values,
multibyte character sets whose trailing bytes can be a backslash (GBK, Big5,
SJIS, …), transaction-scoped changes (``SET LOCAL``, or any change inside a
PostgreSQL transaction, which a ROLLBACK would undo behind our back) are
refused as unprovable.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from sqlbastion.policies.facts import StatementFacts
from sqlbastion.policies.lexer import LexedStatement
from sqlbastion.policies.lineage import Acc, Scope, Unprovable

if TYPE_CHECKING:
    from sqlbastion.policies.analyze import _Analyzer

# Character sets where every byte of a multibyte character is >= 0x80, so a
# 0x5C byte is always a backslash (or that have no multibyte characters).
MYSQL_SAFE_CHARSETS = frozenset({"utf8", "utf8mb3", "utf8mb4", "latin1", "ascii", "binary", "latin2", "default"})
PG_UNSAFE_ENCODINGS = frozenset(
    {
        "sjis",
        "shift_jis_2004",
        "big5",
        "gbk",
        "uhc",
        "gb18030",
        "johab",
        "win936",
        "win950",
        "win949",
        "mskanji",
        "shiftjis",
        "tcvn",
        "abc",
    }
)

# MySQL/MariaDB sql_mode names that switch ANSI_QUOTES on (combination modes included).
_MODE_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_ANSI_QUOTE_MODES = frozenset({"ANSI_QUOTES", "ANSI", "DB2", "MAXDB", "MSSQL", "ORACLE", "POSTGRESQL"})
_MYSQL_CHARSET_VARS = frozenset(
    {"character_set_client", "character_set_connection", "character_set_results", "collation_connection"}
)
_PG_LEXER_VARS = frozenset({"standard_conforming_strings", "client_encoding", "names"})

# Session variables that switch off logging, replication safety or triggers: server
# administration even when set for one session.
MYSQL_ADMIN_VARS = frozenset({"sql_log_bin", "sql_log_off", "pseudo_thread_id", "pseudo_slave_mode", "gtid_next"})
PG_ADMIN_VARS = frozenset({"session_replication_role", "log_statement", "log_min_duration_statement", "role"})


def encoding_is_safe(dialect: str, encoding: str) -> bool:
    """Whether the session's client encoding keeps every 0x5C byte a backslash (so the lexer is right)."""
    name = encoding.strip().lower().replace("-", "_")
    if not name:
        return True
    if dialect == "mysql":
        base = name.split("_")[0] if name not in MYSQL_SAFE_CHARSETS else name
        return base in MYSQL_SAFE_CHARSETS or base in ("utf8mb3", "utf8mb4", "utf8")
    return name not in PG_UNSAFE_ENCODINGS


def _literal_text(e: exp.Expr | None) -> str | None:
    if isinstance(e, exp.Literal):
        return str(e.this)
    if isinstance(e, (exp.Var, exp.Identifier)):
        return str(e.this)
    if isinstance(e, exp.Column) and not e.args.get("table"):
        return str(e.name)
    if isinstance(e, exp.Boolean):
        return "on" if e.this else "off"
    return None


def _onoff(value: str) -> str | None:
    v = value.strip().lower()
    if v in ("on", "true", "yes", "1", "t", "y"):
        return "on"
    if v in ("off", "false", "no", "0", "f", "n"):
        return "off"
    return None


def session_setting(an: _Analyzer, st: LexedStatement) -> StatementFacts:
    if an.mysql:
        return _mysql_set(an, st)
    return _pg_set(an, st)


# -- MySQL ----------------------------------------------------------------------


def _mysql_set(an: _Analyzer, st: LexedStatement) -> StatementFacts:
    h1 = st.head[1] if len(st.head) > 1 else ""
    if h1 in ("PASSWORD", "DEFAULT"):
        return an.feature("user_admin", f"SET {h1} changes accounts", kind="set_user", admin=True)
    if h1 == "ROLE":
        return an.feature("set_role", "SET ROLE changes the acting role", kind="set_role")
    if h1 in ("TRANSACTION",) or st.head[1:3] in (("SESSION", "TRANSACTION"), ("LOCAL", "TRANSACTION")):
        return StatementFacts(kind="set")
    if h1 in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
        return an.feature("server_settings", f"SET {h1} changes server settings", kind="set_global", admin=True)
    if h1 == "STATEMENT":
        raise Unprovable("lexer", "SET STATEMENT ... FOR is not analysed")
    try:
        tree = sqlglot.parse_one(st.text, read="mysql")
    except (SqlglotError, RecursionError):
        raise Unprovable("parse", "the SET statement cannot be parsed") from None
    if not isinstance(tree, exp.Set):
        raise Unprovable("command", "the SET statement is not understood")
    acc = Acc()
    r = an.resolver(acc)
    effects: list[tuple[str, str]] = []
    lexer_change = False
    for item in tree.expressions:
        kind = str(item.args.get("kind") or "").upper()
        target = item.this
        if kind in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            acc.feature("server_settings", f"SET {kind} changes server settings")
            continue
        if kind in ("NAMES", "CHARACTER SET", "CHARSET"):
            name = (_literal_text(target) or "").lower()
            if name not in MYSQL_SAFE_CHARSETS:
                raise Unprovable("charset", f"character set {name or '?'} can hide a backslash inside a character")
            effects.append(("client_encoding", name))
            lexer_change = True
            continue
        if not isinstance(target, exp.EQ):
            raise Unprovable("command", "a SET item that is not an assignment")
        var, value = target.this, target.expression
        if isinstance(var, exp.Parameter):  # @user_variable
            col = r.expr(value, Scope(None, {}))
            acc.copies |= col.sources
            acc.feature("user_variable", "assigns a user variable")
            continue
        if isinstance(var, exp.SessionParameter):
            scope = str(var.args.get("kind") or "session").lower()
            name = str(var.name).lower()
            if scope == "global":
                acc.feature("server_settings", f"SET @@global.{name} changes server settings")
                continue
        else:
            name = str(var.name).lower()
        if name in MYSQL_ADMIN_VARS:
            acc.feature("server_settings", f"SET {name} changes logging or replication behaviour")
            continue
        if name == "sql_mode":
            text = _literal_text(value)
            if text is None:
                raise Unprovable("lexer", "sql_mode is set to a computed value")
            modes = {m.strip().upper() for m in text.split(",") if m.strip()}
            if text.upper() == "DEFAULT":
                modes = set()
            if any(not _MODE_NAME.fullmatch(m) for m in modes):
                # The servers also take sql_mode as a number, a bit set (4 is ANSI_QUOTES):
                # only names say which modes are on.
                raise Unprovable("lexer", f"sql_mode = {text[:40]!r} is not a list of mode names")
            effects.append(("ansi_quotes", "on" if modes & _ANSI_QUOTE_MODES else "off"))
            effects.append(("no_backslash_escapes", "on" if "NO_BACKSLASH_ESCAPES" in modes else "off"))
            lexer_change = True
        elif name == "character_set_results" and isinstance(value, exp.Null):
            continue  # results sent in each column's own character set; client input is unaffected
        elif name in _MYSQL_CHARSET_VARS or name.startswith("character_set_"):
            cs = (_literal_text(value) or "").lower()
            cs_base = cs.split("_")[0] if name == "collation_connection" else cs
            if cs_base not in MYSQL_SAFE_CHARSETS:
                raise Unprovable("charset", f"character set {cs or '?'} can hide a backslash inside a character")
            effects.append(("client_encoding", cs_base))
            lexer_change = True
        else:
            r.expr(value, Scope(None, {}))
    facts = an.finish("set", acc)
    return _with(facts, effects, lexer_change)


def _with(facts: StatementFacts, effects: list[tuple[str, str]], lexer_change: bool) -> StatementFacts:
    from dataclasses import replace

    return replace(facts, effects=tuple(effects), lexer_change=lexer_change)


# -- PostgreSQL -------------------------------------------------------------------


def _pg_set(an: _Analyzer, st: LexedStatement) -> StatementFacts:
    toks = an.tokens_of(st.text)
    upper = [tok.upper for tok in toks]
    i = 1
    local = False
    if (
        i < len(upper)
        and upper[i] in ("SESSION", "LOCAL")
        and upper[i + 1 : i + 2]
        not in (
            ["AUTHORIZATION"],
            ["CHARACTERISTICS"],
        )
    ):
        local = upper[i] == "LOCAL"
        i += 1
    if i >= len(upper):
        raise Unprovable("parse", "SET without a setting")
    name = upper[i]
    if name == "ROLE" or (name == "SESSION" and upper[i + 1 : i + 2] == ["AUTHORIZATION"]):
        return an.feature("set_role", "SET ROLE / SESSION AUTHORIZATION changes the acting role", kind="set_role")
    if name in ("TRANSACTION", "CONSTRAINTS") or (name == "SESSION" and upper[i + 1 : i + 2] == ["CHARACTERISTICS"]):
        return StatementFacts(kind="set")
    if name == "TIME" and upper[i + 1 : i + 2] == ["ZONE"]:
        return StatementFacts(kind="set")
    setting = toks[i].text if toks[i].kind == "ident" else toks[i].text.lower()
    # Dotted custom settings (myapp.tenant) are plain values.
    while i + 2 < len(toks) and toks[i + 1].text == ".":
        setting += "." + toks[i + 2].text.lower()
        i += 2
    if setting == "schema":
        setting = "search_path"
    if setting == "names":
        setting = "client_encoding"
    j = i + 1
    if j < len(toks) and (upper[j] == "TO" or toks[j].text == "="):
        j += 1
    elif setting not in ("search_path", "client_encoding"):
        raise Unprovable("parse", f"SET {setting} without TO or =")
    values: list[str] = []
    for tok in toks[j:]:
        if tok.text == ",":
            continue
        if tok.kind in ("string", "ident"):
            values.append(tok.text)
        elif tok.kind in ("word", "number"):
            values.append(tok.text.lower())
        elif tok.text in "-+." and tok.kind == "punct":
            values.append(tok.text)
        else:
            raise Unprovable("lexer", f"SET {setting} to a value that is not a constant")
    if not values:
        raise Unprovable("parse", f"SET {setting} without a value")
    lexer_setting = setting in _PG_LEXER_VARS or setting in ("search_path",)
    if lexer_setting and (local or an.ctx.in_transaction):
        raise Unprovable(
            "lexer", f"changing {setting} inside a transaction (or with SET LOCAL) can be undone by ROLLBACK unseen"
        )
    if setting == "standard_conforming_strings":
        value = "on" if values[0].lower() == "default" else _onoff(values[0])
        if value is None:
            raise Unprovable("lexer", f"standard_conforming_strings = {values[0]!r} is not understood")
        return StatementFacts(kind="set", effects=(("standard_conforming_strings", value),), lexer_change=True)
    if setting == "client_encoding":
        enc = values[0].lower().replace("-", "_")
        if enc in PG_UNSAFE_ENCODINGS:
            raise Unprovable("charset", f"client encoding {enc} can hide a backslash inside a character")
        return StatementFacts(kind="set", effects=(("client_encoding", enc),), lexer_change=True)
    if setting == "search_path":
        if values[0].lower() == "default":
            return StatementFacts(kind="set", effects=(("reset", "search_path"),), lexer_change=True)
        return StatementFacts(kind="set", effects=(("search_path", ",".join(values)),), lexer_change=True)
    if setting in ("role", "session_authorization"):
        return an.feature("set_role", f"SET {setting} changes the acting role", kind="set_role")
    if setting in PG_ADMIN_VARS:
        return an.feature("server_settings", f"SET {setting} changes logging or trigger behaviour", kind="set")
    return StatementFacts(kind="set")
