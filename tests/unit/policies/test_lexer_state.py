"""Session state that changes lexing: the analysis follows it, or the change is refused."""

from __future__ import annotations

import pytest

from sqlbastion.policies.analyze import AnalysisLimits
from sqlbastion.policies.lexer import LexError, LexerState, lex, tokens
from tests.unit.policies.support import decide, new_engine

MY = LexerState(dialect="mysql")
PG = LexerState(dialect="postgres")


def texts(sql: str, state: LexerState) -> list[str]:
    return [s.text for s in lex(sql, state)]


# -- the lexer itself -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1 /*! ,mobile */ FROM t", ["SELECT 1   ,mobile   FROM t"]),
        ("SELECT 1 /*!50000 ,mobile */ FROM t", ["SELECT 1   ,mobile   FROM t"]),
        ("SELECT 1 /*!500001 ,mobile */ FROM t", ["SELECT 1   ,mobile   FROM t"]),
        ("SELECT 1 /*M!100100 ,mobile */ FROM t", ["SELECT 1   ,mobile   FROM t"]),
        ("SELECT 1 /*M! ,mobile */ FROM t", ["SELECT 1   ,mobile   FROM t"]),
        ("SELECT a--1\nFROM t", ["SELECT a- -1\nFROM t"]),
        ("SELECT a -- c\nFROM t", ["SELECT a  FROM t"]),
        ("SELECT a --\tc\nFROM t", ["SELECT a  FROM t"]),
        ("SELECT a # c\nFROM t", ["SELECT a  FROM t"]),
        ("SELECT 'a''b'", ["SELECT 'a''b'"]),
        ("SELECT 'a\\'b'", ["SELECT 'a''b'"]),
        ('SELECT "a"', ["SELECT 'a'"]),
        ("SELECT 'a' 'b'", ["SELECT 'ab'"]),
        ("SELECT 'a' /*! 'b' */", ["SELECT 'ab'"]),
        ("SELECT 'a' /* c */ \"b\" -- d\n 'c'", ["SELECT 'abc'"]),
        ("SELECT _utf8mb4'a' 'b'", ["SELECT _utf8mb4'ab'"]),
        ("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"]),
        ("SELECT ';'", ["SELECT ';'"]),
        ("SELECT `a;b`", ["SELECT `a;b`"]),
        ("SELECT id\u00a0FROM customers", ["SELECT `id\u00a0FROM` customers"]),
        ("SELECT 客户 FROM t", ["SELECT 客户 FROM t"]),
    ],
)
def test_mysql_lexing(sql: str, expected: list[str]) -> None:
    assert texts(sql, MY) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 'a\\' , b --'", ["SELECT 'a\\' , b"]),
        ("SELECT E'a\\'b'", ["SELECT 'a''b'"]),
        ("SELECT E'\\x41\\101\\u0041'", ["SELECT 'AAA'"]),
        ("SELECT $$a;'b$$", ["SELECT 'a;''b'"]),
        ("SELECT $t$a$$b$t$", ["SELECT 'a$$b'"]),
        ('SELECT U&"\\0070hone"', ['SELECT "phone"']),
        ("SELECT U&'\\0041'", ["SELECT 'A'"]),
        ("SELECT U&'!0041' UESCAPE '!'", ["SELECT 'A'"]),
        ("SELECT U&\"d!0061t!+000061\" UESCAPE '!'", ['SELECT "data"']),
        ("SELECT 1 /* a /* nested */ still */ , 2", ["SELECT 1   , 2"]),
        ("SELECT 'a'\n'b'", ["SELECT 'ab'"]),
        ("SELECT 'a' 'b'", ["SELECT 'a' 'b'"]),
        ("SELECT $1, a$b", ["SELECT $1, a$b"]),
        ("SELECT Id\u200bX FROM t", ['SELECT "id\u200bx" FROM t']),
        ("SELECT 1 -- c ; DROP\n", ["SELECT 1"]),
    ],
)
def test_postgres_lexing(sql: str, expected: list[str]) -> None:
    assert texts(sql, PG) == expected


def test_postgres_without_standard_conforming_strings_reads_backslash_escapes() -> None:
    state = LexerState(dialect="postgres", standard_conforming_strings=False)
    assert texts("SELECT 'a\\' , b --'", state) == ["SELECT 'a'' , b --'"]


def test_mysql_no_backslash_escapes() -> None:
    state = LexerState(dialect="mysql", no_backslash_escapes=True)
    assert texts("SELECT 'a\\' , b -- '", state) == ["SELECT 'a\\\\' , b"]


def test_mysql_ansi_quotes_makes_double_quotes_identifiers() -> None:
    state = LexerState(dialect="mysql", ansi_quotes=True)
    assert texts('SELECT "mobile" FROM t', state) == ["SELECT `mobile` FROM t"]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'x",
        "SELECT `x",
        'SELECT "x',
        "SELECT 1 /* x",
        "SELECT 1 /*! x",
        "SELECT 1 /*! /*! x */ */",
        "SELECT 1 /*! ; */",
        "SELECT 1 /*! -- x */\n */",
        "SELECT 1 /*!99999 '*/ ; DROP TABLE customers; /* ' */",
        "SELECT 1 /*!50000 `*/ , mobile FROM customers /*` */",
        "SELECT 1 /*M! '*/ , mobile FROM customers /* ' */",
        "SELECT 1 /*!1234 ,mobile */",
        "SELECT 1 /*!1234567 ,mobile */",
        "SELECT 1 /*! a /* b */ , mobile */",
        "SELECT \0 1",
        "SELECT " + "(" * 200 + "1" + ")" * 200,
    ],
)
def test_mysql_lexer_refuses(sql: str) -> None:
    with pytest.raises(LexError):
        lex(sql, MY)


@pytest.mark.parametrize(
    "sql",
    ["SELECT 'x", "SELECT $$x", "SELECT $a$x$b$", "SELECT /* /* */", 'SELECT U&"\\zz"', "SELECT E'\\u12'"],
)
def test_postgres_lexer_refuses(sql: str) -> None:
    with pytest.raises(LexError):
        lex(sql, PG)


def test_fingerprint_replaces_literals_only() -> None:
    [a] = lex("SELECT id FROM t WHERE x = 'abc' AND y = 12", MY)
    [b] = lex("SELECT id FROM t WHERE x = 'zz' AND y = 9", MY)
    [c] = lex("SELECT id FROM t WHERE x = `abc` AND y = 12", MY)
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint  # an identifier is not a literal


def test_tokens_of_canonical_text() -> None:
    toks = tokens("SELECT 'a''b', `x``y` FROM t", mysql=True)
    assert [(t.kind, t.text) for t in toks] == [
        ("word", "SELECT"),
        ("string", "a'b"),
        ("punct", ","),
        ("ident", "x`y"),
        ("word", "FROM"),
        ("word", "t"),
    ]


# -- decisions under session state -------------------------------------------------


def test_ansi_quotes_state_reads_identifiers() -> None:
    # Without ANSI_QUOTES "mobile" is a string: a constant comparison, no masked column.
    assert decide("dev", "SELECT id FROM customers WHERE \"mobile\" LIKE '1%'").allowed
    d = decide("dev", "SELECT id FROM customers WHERE \"mobile\" LIKE '1%'", ansi_quotes=True)
    assert d.rule_ids == ("MASK-INFERENCE",)
    d = decide("dev", 'SELECT "mobile" FROM customers', ansi_quotes=True)
    assert d.allowed
    assert [str(s) for s in d.output_columns[0][0].sources] == ["bank.customers.mobile"]


def test_no_backslash_escapes_state() -> None:
    sql = "SELECT 'a\\' , mobile FROM customers WHERE mobile LIKE '1%' -- '"
    # With escapes on, everything after the first quote up to the last is one string.
    assert decide("dev", sql).rule_ids == ("SB-UNPROVABLE-PARSE",) or decide("dev", sql).allowed
    d = decide("dev", sql, no_backslash_escapes=True)
    assert d.rule_ids == ("MASK-INFERENCE",)


def test_standard_conforming_strings_state() -> None:
    sql = "SELECT 'a\\' , mobile FROM customers --'"
    d = decide("dev", sql, "postgres")
    assert d.allowed
    assert [str(c) for c in d.sensitive_columns] == ["bank.public.customers.mobile"]
    d = decide("dev", sql, "postgres", standard_conforming_strings=False)
    assert d.allowed
    assert d.columns_read == ()
    assert d.sensitive_columns == ()
    inference = "SELECT 'a\\' , id FROM customers WHERE mobile LIKE '1%' --'"
    assert decide("dev", inference, "postgres").rule_ids == ("MASK-INFERENCE",)


def test_lexer_changes_carry_session_effects() -> None:
    d = decide("dev", "SET sql_mode = 'ANSI,NO_BACKSLASH_ESCAPES'")
    assert d.allowed
    assert d.session_effects == (("ansi_quotes", "on"), ("no_backslash_escapes", "on"))
    d = decide("dev", "SET SESSION sql_mode = DEFAULT")
    assert d.session_effects == (("ansi_quotes", "off"), ("no_backslash_escapes", "off"))
    d = decide("dev", "SET @@session.sql_mode = 'TRADITIONAL'")
    assert d.session_effects == (("ansi_quotes", "off"), ("no_backslash_escapes", "off"))
    d = decide("dev", "SET NAMES 'latin1'")
    assert d.session_effects == (("client_encoding", "latin1"),)
    d = decide("dev", "USE other")
    assert d.session_effects == (("database", "other"),)
    d = decide("dev", "SET standard_conforming_strings TO off", "postgres")
    assert d.session_effects == (("standard_conforming_strings", "off"),)
    d = decide("dev", "SET search_path = bank_a, public", "postgres")
    assert d.session_effects == (("search_path", "bank_a,public"),)
    d = decide("dev", "DISCARD ALL", "postgres")
    assert d.session_effects == (("reset", "all"),)


def test_postgres_lexer_changes_inside_a_transaction_are_refused() -> None:
    d = decide("dev", "SET standard_conforming_strings = off", "postgres", in_transaction=True)
    assert d.rule_ids == ("SB-UNPROVABLE-LEXER",)
    d = decide("dev", "SET client_encoding = 'LATIN1'", "postgres", in_transaction=True)
    assert d.rule_ids == ("SB-UNPROVABLE-LEXER",)


def test_database_and_search_path_resolve_objects() -> None:
    d = decide("dev", "SELECT id FROM customers", database="other")
    assert d.objects_read == ("other.customers",)
    assert d.rule_ids == ("SB-GRANT-DENIED", "MASK-UNPROVABLE")
    d = decide("dev", "SELECT id FROM customers", "postgres", search_path=("elsewhere",))
    assert d.objects_read == ("bank.elsewhere.customers",)


def test_limits() -> None:
    engine = new_engine(limits=AnalysisLimits(max_statement_bytes=1000, max_statements=3))
    assert decide("dev", "SELECT 1;" * 4, engine=engine).rule_ids == ("SB-LIMIT-STATEMENTS",)
    assert decide("dev", "SELECT 1;" * 3, engine=engine).allowed
    assert decide("dev", "SELECT '" + "x" * 1000 + "'", engine=engine).rule_ids == ("SB-LIMIT-SIZE",)
    assert decide("dev", "SELECT '" + "é" * 600 + "'", engine=engine).rule_ids == ("SB-LIMIT-SIZE",)
    long_chain = "SELECT " + " + ".join(["1"] * 150)
    assert decide("dev", long_chain, engine=engine).rule_ids in ((), ("SB-LIMIT-SIZE",))


def test_deep_expression_chains_never_crash() -> None:
    engine = new_engine()
    sql = "SELECT id FROM customers WHERE " + " OR ".join(f"id = {i}" for i in range(3000))
    d = decide("dev", sql, engine=engine)
    assert d.action.value in ("allow", "block")
    nested = "SELECT " + "coalesce(" * 120 + "1" + ")" * 120
    assert decide("dev", nested, engine=engine).action.value in ("allow", "block")


def test_unsafe_session_encoding_refuses_everything() -> None:
    for dialect, encoding in (
        ("mysql", "gbk"),
        ("mysql", "big5"),
        ("mysql", "sjis"),
        ("postgres", "SJIS"),
        ("postgres", "gbk"),
    ):
        d = decide("dev", "SELECT 1", dialect, client_encoding=encoding)  # type: ignore[arg-type]  # literal dialects
        assert d.rule_ids == ("SB-UNPROVABLE-CHARSET",), (dialect, encoding)
    for dialect, encoding in (
        ("mysql", "utf8mb4"),
        ("mysql", "latin1"),
        ("mysql", "utf8mb4_general_ci"),
        ("postgres", "UTF8"),
    ):
        assert decide("dev", "SELECT 1", dialect, client_encoding=encoding).allowed  # type: ignore[arg-type]  # as above


def test_long_in_lists_are_enumeration_not_lookups() -> None:
    few = ", ".join(f"'1380000{i:04d}'" for i in range(100))
    many = ", ".join(f"'1380000{i:04d}'" for i in range(101))
    assert decide("dev", f"SELECT id FROM customers WHERE mobile IN ({few})").allowed
    assert decide("dev", f"SELECT id FROM customers WHERE mobile IN ({many})").rule_ids == ("MASK-INFERENCE",)


def test_bulk_inserts_of_constants_are_analysed_by_their_first_row() -> None:
    rows = ",".join(f"({i}, 'branch {i}', -{i}.5, NULL)" for i in range(3000))
    d = decide("dev", f"INSERT INTO accounts (id, branch, balance, status) VALUES {rows}")
    assert d.allowed
    assert d.objects_written == ("bank.accounts",)
    tail = "(2, (SELECT mobile FROM customers LIMIT 1))"
    d = decide("dev", f"INSERT INTO accounts (id, branch) VALUES (1, 'a'), {tail}")
    assert d.rule_ids == ("MASK-COPY",)
    d = decide("dev", "INSERT INTO accounts (id) VALUES (1), (sleep(5))")
    assert d.rule_ids == ("HR-TIMING-LOCK",)
