"""Fuzzing: the analyser never raises, never crashes on odd input, and never allows what it cannot read."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlbastion.policies.lexer import LexError, LexerState, lex
from sqlbastion.policies.model import Action
from tests.unit.policies.support import decide, new_engine

ENGINE = new_engine(cache_entries=0)

FRAGMENTS = [
    "SELECT",
    "mobile",
    "id",
    "FROM",
    "customers",
    "accounts",
    "WHERE",
    "=",
    "LIKE",
    "'1%'",
    "1",
    "OR",
    "AND",
    "(",
    ")",
    ",",
    ";",
    "/*",
    "*/",
    "/*!",
    "/*M!50000",
    "--",
    "-- ",
    "#",
    "\n",
    "'",
    '"',
    "`",
    "$$",
    "E'",
    "U&",
    "\\",
    "UNION",
    "SELECT *",
    "DROP TABLE",
    "DELETE FROM",
    "UPDATE",
    "SET",
    "INTO",
    "@v",
    ":=",
    "sleep(1)",
    "row_to_json(c)",
    "c",
    "AS",
    "JOIN",
    "ON",
    "ORDER BY",
    "GROUP BY",
    "HAVING",
    "LIMIT",
    "TABLE",
    "WITH",
    "x AS (",
    "RETURNING",
    "COPY",
    "TO",
    "STDOUT",
    "PROGRAM",
    "::text",
    "||",
    "NULL",
    "TRUE",
    "NOT",
    " ",
]

sql_text = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=30).map(" ".join)
any_text = st.text(max_size=300)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FAST_FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(sql=st.one_of(sql_text, any_text), dialect=st.sampled_from(["mysql", "postgres"]))
def test_decide_never_raises(sql: str, dialect: str) -> None:
    d = ENGINE.decide(sql, __import__("tests.unit.policies.support", fromlist=["context"]).context("dev", dialect))
    assert d.action in (Action.ALLOW, Action.ALERT, Action.REVIEW, Action.BLOCK)
    if d.allowed:
        # Anything allowed for a masked role reads no masked column except plainly (masking applies)
        # or through an allowed equality lookup.
        assert "MASK-" not in "".join(d.rule_ids)


@FUZZ
@given(sql=any_text, dialect=st.sampled_from(["mysql", "postgres"]), flags=st.tuples(st.booleans(), st.booleans()))
def test_lexer_only_raises_lex_errors(sql: str, dialect: str, flags: tuple[bool, bool]) -> None:
    state = LexerState(
        dialect=dialect,  # type: ignore[arg-type]  # sampled from the two dialects
        ansi_quotes=flags[0],
        no_backslash_escapes=flags[1],
        standard_conforming_strings=not flags[1],
    )
    try:
        statements = lex(sql, state)
    except LexError:
        return
    for s in statements:
        assert s.text == s.text.strip()
        assert ";" not in s.fingerprint.replace("';'", "").replace("'?'", "") or "`" in s.text or '"' in s.text


@FUZZ
@given(sql=sql_text)
def test_masked_column_never_allowed_through_a_function(sql: str) -> None:
    wrapped = f"SELECT hex({sql.split(maxsplit=1)[0] if sql.split() else 'x'}(mobile)) FROM customers"
    d = decide("dev", wrapped)
    assert not d.allowed


def test_pathological_inputs_are_refused_quickly() -> None:
    cases = [
        "SELECT " + "(" * 100_000,
        "SELECT '" + "\\'" * 100_000,
        "/*" * 50_000,
        "SELECT 1" + ";" * 100_000,
        "SELECT " + "1+" * 20_000 + "1",
        "SELECT " + ", ".join(f"c{i}" for i in range(20_000)) + " FROM customers",
        "SELECT id FROM customers WHERE " + " AND ".join(f"id <> {i}" for i in range(10_000)),
    ]
    for sql in cases:
        start = time.perf_counter()
        d = decide("dev", sql, engine=ENGINE)
        assert time.perf_counter() - start < 10, sql[:40]
        assert d.action in (Action.ALLOW, Action.BLOCK)


def test_byte_by_byte_prefixes_never_crash() -> None:
    sql = (
        "SELECT c.id, /*! c.mobile, */ a.card_no FROM customers c JOIN accounts a ON a.customer_id = c.id "
        "WHERE c.name = 'o''brien\\'s' -- tail\n AND c.id IN (1, 2) # more\n;"
    )
    for i in range(len(sql) + 1):
        for dialect in ("mysql", "postgres"):
            decide("dev", sql[:i], dialect, engine=ENGINE)


def test_an_engine_failure_is_a_block() -> None:
    engine = new_engine()

    class Broken:
        def decide(self, *args: object) -> object:
            raise KeyError("boom")

    engine.judge = Broken()  # type: ignore[assignment]  # a deliberately broken judge
    d = decide("dev", "SELECT 1", engine=engine)
    assert d.action is Action.BLOCK
    assert d.rule_ids == ("SB-UNPROVABLE-ANALYSIS",)


FAST_ALPHABET = [
    "SELECT",
    "id",
    "FROM",
    "t",
    "WHERE",
    "a",
    "=",
    "'x'",
    "'it''s'",
    "'",
    "12",
    "3.5",
    "1e5",
    "x1",
    "$1",
    "$",
    "(",
    ")",
    ",",
    " ",
    "\n",
    "E",
    "N",
    "X",
    "U",
    "&",
    "U&",
    "_utf8",
    "''",
    "-",
    "*",
    "/",
    ";",
    "+",
    "::",
    "int",
    "ARRAY",
    "[",
    "]",
    ".5",
    "1.",
    "a.b",
    "1.2.3",
    "t1.c2",
    "a$1",
    "$12",
    "0x1F",
    "'a b'",
    "@v",
    "?",
    "<>",
    "\t",
    "UESCAPE",
]


@FAST_FUZZ
@given(
    parts=st.lists(st.sampled_from(FAST_ALPHABET), min_size=1, max_size=25),
    dialect=st.sampled_from(["mysql", "postgres"]),
    joiner=st.sampled_from(["", " "]),
)
def test_fast_path_agrees_with_the_full_lexer(parts: list[str], dialect: str, joiner: str) -> None:
    from sqlbastion.policies.lexer import _Lexer, _plain_statement

    sql = joiner.join(parts)
    state = LexerState(dialect=dialect)  # type: ignore[arg-type]  # sampled from the two dialects
    fast = _plain_statement(sql, state)
    try:
        slow = _Lexer(sql, state).run()
    except LexError:
        assert fast is None
        return
    if fast is not None:
        assert fast == slow
