"""The analyser's lexer reads literals exactly as the real servers do, under each session mode.

For each literal form, the server's own value (``SELECT <literal>``) is compared
with the value the lexer decoded; a mismatch would let a statement mean one
thing to the analyser and another to the database.
"""

from __future__ import annotations

import psycopg
import pymysql
import pytest

from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.policies.lexer import LexError, LexerState, lex, tokens

pytestmark = pytest.mark.integration

MYSQL_LITERALS = [
    "'plain'",
    "'it''s'",
    "'it\\'s'",
    "'tab\\there'",
    "'nul\\0byte'",
    "'percent\\%and\\_'",
    "'back\\\\slash'",
    "'unknown\\qescape'",
    "'ctrl\\Zz'",
    '"double"',
    "'a' 'b'",
    "'a'\n'b'",
    "_utf8mb4'intro'",
    "N'national'",
    "'a' /*! 'exec' */",
    "'semi;colon'",
    "'dash -- dash'",
    "'hash # hash'",
    "'star */ end'",
]
PG_LITERALS = [
    "'plain'",
    "'it''s'",
    "'back\\slash'",
    "E'esc\\'aped'",
    "E'\\x41\\101\\u0041'",
    "E'tab\\tnewline\\n'",
    "U&'\\0041\\+000042'",
    "U&'!0041' UESCAPE '!'",
    "$$dollar 'quoted'$$",
    "$t$tagged $$ inside$t$",
    "'a'\n'b'",
    "'semi;colon'",
    "'dash -- dash'",
    "'/* not a comment */'",
    "'a'\n-- a comment\n'b'",
    "'a' /* c */\n'b'",
    "'a'\n/* c */ 'b'",
]


def _mysql_value(text: str) -> str:
    [tok] = [t for t in tokens(text, mysql=True) if t.kind == "string"][-1:]
    return tok.text.replace("\\\\", "\\")


def _pg_value(text: str) -> str:
    [tok] = [t for t in tokens(text, mysql=False) if t.kind == "string"][-1:]
    return tok.text


@pytest.mark.parametrize("sql_mode", ["", "NO_BACKSLASH_ESCAPES", "ANSI_QUOTES"])
def test_mysql_literals_match_the_server(mariadb_server: ServerInfo, sql_mode: str) -> None:
    s = mariadb_server
    conn = pymysql.connect(host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, charset="utf8mb4")
    state = LexerState(
        dialect="mysql", ansi_quotes="ANSI_QUOTES" in sql_mode, no_backslash_escapes="NO_BACKSLASH" in sql_mode
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_mode = %s", (sql_mode,))
            for literal in MYSQL_LITERALS:
                if state.ansi_quotes and literal.startswith('"'):
                    continue  # an identifier in this mode, not a literal
                sql = f"SELECT {literal}"
                try:
                    [stmt] = lex(sql, state)
                except LexError:
                    # The lexer refuses it: the server must not run it either.
                    with pytest.raises(pymysql.err.MySQLError):
                        cur.execute(sql)
                    continue
                try:
                    cur.execute(sql)
                except pymysql.err.MySQLError:
                    continue  # the server refuses it; so does nothing else here
                row = cur.fetchone()
                assert row is not None
                value = row[0]
                if isinstance(value, bytes):
                    value = value.decode("utf-8")
                assert _mysql_value(stmt.text) == str(value), (sql_mode, literal)
    finally:
        conn.close()


@pytest.mark.parametrize("scs", ["on", "off"])
def test_postgres_literals_match_the_server(postgres_server: ServerInfo, scs: str) -> None:
    s = postgres_server
    state = LexerState(dialect="postgres", standard_conforming_strings=scs == "on")
    with psycopg.connect(
        host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f"SET standard_conforming_strings = {scs}")
        conn.execute("SET escape_string_warning = off")
        for literal in PG_LITERALS:
            sql = f"SELECT {literal}"
            [stmt] = lex(sql, state)
            try:
                row = conn.execute(sql, prepare=False).fetchone()
            except psycopg.Error:
                continue
            assert row is not None
            assert _pg_value(stmt.text) == row[0], (scs, literal)


def test_statement_splitting_matches_the_server(mariadb_server: ServerInfo) -> None:
    s = mariadb_server
    from pymysql.constants import CLIENT

    conn = pymysql.connect(
        host=s.host,
        port=s.port,
        user=s.admin_user,
        password=s.admin_password,
        client_flag=CLIENT.MULTI_STATEMENTS,
    )
    messages = [
        "SELECT 1; SELECT 2",
        "SELECT ';'; SELECT 2",
        "SELECT 1 -- ; SELECT 2\n; SELECT 3",
        "SELECT 1 # ;\n; SELECT 2",
        "SELECT 1 /* ; */; SELECT 2",
        "SELECT 1 /*! ,2 */; SELECT 3",
        "SELECT `a;b` FROM (SELECT 1 AS `a;b`) t; SELECT 2",
    ]
    try:
        with conn.cursor() as cur:
            for message in messages:
                cur.execute(message)
                results = 1
                while cur.nextset():
                    results += 1
                assert len(lex(message, LexerState(dialect="mysql"))) == results, message
    finally:
        conn.close()
