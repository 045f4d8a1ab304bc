"""The fast fingerprint: whenever it gives a key, the full lexer gives the same one.

The decision cache keys its second level by fingerprint; a fast key that differed
from the full path's would let one statement hit another's decision. So every
test here is differential: ``fast_fingerprint(sql)`` is None or equals the
fingerprint ``lex`` gives under every lexer state, and the engine built on it
decides exactly as an engine that lexes every statement.
"""

from __future__ import annotations

import random
import string
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlbastion.policies.analyze import AnalysisLimits
from sqlbastion.policies.fingerprint import MAX_FAST_CHARS, fast_fingerprint
from sqlbastion.policies.lexer import LexError, LexerState, lex
from sqlbastion.policies.model import Decision, StatementContext
from tests.unit.policies.corpus import cases
from tests.unit.policies.support import context, new_engine
from tests.unit.policies.test_fuzz import FAST_ALPHABET

STATES = [
    LexerState(dialect="mysql"),
    LexerState(dialect="mysql", ansi_quotes=True),
    LexerState(dialect="mysql", no_backslash_escapes=True),
    LexerState(dialect="mysql", ansi_quotes=True, no_backslash_escapes=True),
    LexerState(dialect="postgres"),
    LexerState(dialect="postgres", standard_conforming_strings=False),
]


def full_fingerprint(sql: str, state: LexerState) -> str | None:
    """The engine's fingerprint from the full path (None when the lexer refuses)."""
    try:
        return "\x00;".join(s.fingerprint for s in lex(sql, state))
    except LexError:
        return None


def assert_agrees(sql: str) -> str | None:
    fast = fast_fingerprint(sql)
    if fast is not None:
        for state in STATES:
            assert full_fingerprint(sql, state) == fast, (sql, state)
    return fast


def test_corpus_agrees_and_most_plain_statements_take_the_fast_path() -> None:
    taken = 0
    for _person, _dialect, _action, _rule, sql in cases():
        if assert_agrees(sql) is not None:
            taken += 1
    assert taken > 200  # the fast path is not vacuous on the corpus


BENCH_SHAPES = [
    "SELECT c FROM sbtest1 WHERE id=5012",
    "SELECT c FROM sbtest1 WHERE id BETWEEN 4 AND 103 ORDER BY c",
    "SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 4 AND 103",
    "UPDATE sbtest1 SET k=k+1 WHERE id=77",
    "UPDATE sbtest1 SET c='68487932199-96439406143-93774651418-41631865787' WHERE id=12",
    "INSERT INTO sbtest1 (id, k, c, pad) VALUES (5, 6, '1-2', '3-4')",
    "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 77;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, -4, CURRENT_TIMESTAMP);",
    "SELECT * FROM t WHERE amount > 12.50 AND rate < 0.5 AND x = 1. AND name = 'O''Brien'",
    "  select id from customers where id = 1  ;  ",
    "SELECT id FROM t WHERE id = 5 /*traceparent='00-4bf92f-00f067aa-01',route='/api'*/",
    "/* app: billing; user \"x\" -- # $ \\ */ SELECT id FROM t WHERE name = 'a'",
    "SELECT/**/1/* c */,2",
]


@pytest.mark.parametrize("sql", BENCH_SHAPES)
def test_benchmark_shapes_take_the_fast_path(sql: str) -> None:
    fast = assert_agrees(sql)
    assert fast is not None
    assert "'?'" in fast or "?" in fast


DECLINED = [
    "SELECT 1 -- c",
    "SELECT /*!50000 1 */",
    "SELECT /*! 1 */",
    "SELECT /*M!100000 1 */",
    "SELECT /*!*/ 1",
    "SELECT 1 /* a /* b */ c */",
    "SELECT 1 /* unterminated",
    "SELECT 1 /* x */ -- y",
    "SELECT 'a' /* x */ 'b'",
    'SELECT "/*" FROM t /* x */',
    "SELECT 'a\\' /* ', x, ' */ '",
    "SELECT 1 /* é */",
    "SELECT 1 " + "/* c */ " * 9,
    "*/" + "/* " * 2700,
    "SELECT 1 # c",
    "SELECT 'a\\'b'",
    'SELECT "a"',
    "SELECT `a`",
    "SELECT $1",
    "SELECT $$a$$",
    "SELECT E'a'",
    "SELECT N'a'",
    "SELECT X'0A'",
    "SELECT _utf8mb4'a'",
    "SELECT U&'a'",
    "SELECT 'a' 'b'",
    "SELECT 'a'\n'b'",
    "SELECT 'a'",
    "SELECT 'a",
    "SELECT 1; SELECT 2",
    "SELECT a[1]",
    "SELECT .5",
    "SELECT t.5",
    "SELECT a1.5",
    "SELECT 1.5.6",
    "SELECT 'é'",
    "SELECT 1\x0b+2",
    "SELECT 1\x1c+2",
    "SELECT\x00 1",
    "SELECT " + "(" * 200 + "1" + ")" * 200,
    "SELECT '" + "x" * MAX_FAST_CHARS + "'",
    "",
    " ; ",
]


@pytest.mark.parametrize("sql", DECLINED)
def test_unusual_text_takes_the_full_lexer(sql: str) -> None:
    if sql == "SELECT 'a'":
        assert fast_fingerprint(sql) == "SELECT '?'"  # the control case: plain text is accepted
        return
    assert fast_fingerprint(sql) is None


FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTRA = ["1e5", "0.", "12.50", "a.b", ".", "'", "''", "'x''y'", "&", "\n", "\r\n", "x1", "_a", "-1", "k+1", "?", ":"]


@FUZZ
@given(
    parts=st.lists(st.sampled_from(FAST_ALPHABET + EXTRA), min_size=1, max_size=25), joiner=st.sampled_from(["", " "])
)
def test_generated_statements_agree(parts: list[str], joiner: str) -> None:
    assert_agrees(joiner.join(parts))


@FUZZ
@given(text=st.text(alphabet=string.printable, max_size=60))
def test_printable_noise_agrees(text: str) -> None:
    assert_agrees(text)


COMMENT_PARTS = ["/*", "*/", "/* c */", "/*'*/", "'/*'", "/*!*/", "/*M!*/", "/**/", "*", "/", "'", "-", "\n", "!"]


@FUZZ
@given(
    parts=st.lists(st.sampled_from(FAST_ALPHABET + EXTRA + COMMENT_PARTS), min_size=1, max_size=25),
    joiner=st.sampled_from(["", " "]),
)
def test_generated_statements_with_comments_agree(parts: list[str], joiner: str) -> None:
    assert_agrees(joiner.join(parts))


def test_random_literals_in_plain_shapes_agree() -> None:
    rng = random.Random(20261125)
    alphabet = string.ascii_letters + string.digits + " .,-+*/=<>()&?'%_"
    for _ in range(2000):
        shape = rng.choice(BENCH_SHAPES)
        literal = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))).replace("'", "''")
        assert_agrees(shape.replace("5", str(rng.randrange(10**9))).replace("'1-2'", "'" + literal + "'"))


# -- the engine on top of it ------------------------------------------------------------


def undo_cached(d: Decision) -> Decision:
    return replace(d, cached=False)


def test_engine_with_the_fast_path_decides_like_a_fresh_engine() -> None:
    """Every corpus statement, asked after a same-shape sibling, gets the decision it gets alone."""
    warm = new_engine()
    for person, dialect, _action, _rule, sql in cases():
        ctx = context(person, dialect)  # type: ignore[arg-type]  # the corpus names the two dialects
        sibling = sql.replace("1", "7").replace("'a'", "'b'")
        warm.decide(sibling, ctx)
        got = warm.decide(sql, ctx)
        alone = new_engine().decide(sql, ctx)
        assert (got.action, got.reason, got.rule_hits) == (alone.action, alone.reason, alone.rule_hits), sql


def test_fast_hit_respects_the_size_limit() -> None:
    engine = new_engine(limits=AnalysisLimits(max_statement_bytes=60))
    ctx = context("dev")
    short = "SELECT id FROM customers WHERE city = 'a'"
    assert engine.decide(short, ctx).allowed
    long = "SELECT id FROM customers WHERE city = '" + "a" * 40 + "'"
    d = engine.decide(long, ctx)
    assert not d.allowed
    assert not d.cached


def test_fast_hit_respects_an_unsafe_client_encoding() -> None:
    engine = new_engine()
    sql = "SELECT id FROM customers WHERE city = 'a'"
    safe: StatementContext = context("dev")
    assert engine.decide(sql, safe).allowed
    gbk = replace(safe, client_encoding="gbk")
    d = engine.decide("SELECT id FROM customers WHERE city = 'b'", gbk)
    assert not d.allowed


def test_fast_hit_stores_no_exact_entry() -> None:
    engine = new_engine()
    ctx = context("dev")
    engine.decide("SELECT id FROM customers WHERE id = 1", ctx)
    size = len(engine.cache)
    for n in range(2, 50):
        assert engine.decide(f"SELECT id FROM customers WHERE id = {n}", ctx).cached
    assert len(engine.cache) == size


def test_literal_sensitive_shapes_stay_exact_only_on_the_fast_path() -> None:
    engine = new_engine()
    ctx = context("dev")
    assert engine.decide("DELETE FROM accounts WHERE 1 = 2", ctx).allowed
    d = engine.decide("DELETE FROM accounts WHERE 1 = 1", ctx)
    assert not d.allowed
    assert not d.cached


HIDDEN_AFTER_A_PLAIN_SIBLING = [
    ("mysql", "SELECT id FROM customers WHERE id = 1 /* x */", "SELECT id FROM customers WHERE id = 1 /*! , mobile */"),
    ("mysql", "SELECT id FROM customers WHERE id = 1 /* x */", "SELECT id /*!50000 , mobile */ FROM customers"),
    ("mysql", "SELECT id FROM customers /* x */", "SELECT id /*M!100000 , mobile */ FROM customers"),
    ("mysql", "SELECT id FROM customers /* a */", "SELECT id /* a */, mobile /* b */ FROM customers"),
    ("postgres", "SELECT id FROM customers /* a */", "SELECT id /* a /* b */ , mobile */ FROM customers"),
    ("postgres", "SELECT id FROM customers /* x */", "SELECT id /*/*/ , mobile /**/ FROM customers"),
    ("mysql", "SELECT id FROM customers WHERE city = 'a' /* ' */", "SELECT id FROM customers WHERE city = 'a' -- ' */"),
]


@pytest.mark.parametrize(("dialect", "plain", "hidden"), HIDDEN_AFTER_A_PLAIN_SIBLING)
def test_comments_never_let_a_sibling_decide(dialect: str, plain: str, hidden: str) -> None:
    """What a comment hides or runs is decided on its own, whatever a plain sibling left in the cache."""
    engine = new_engine()
    ctx = context("dev", dialect)  # type: ignore[arg-type]  # one of the two dialects
    engine.decide(plain, ctx)
    got = engine.decide(hidden, ctx)
    alone = new_engine().decide(hidden, ctx)
    assert (got.action, got.rule_hits) == (alone.action, alone.rule_hits)


PATHOLOGICAL = [
    "'" * (MAX_FAST_CHARS - 1),
    "SELECT " + "1" * (MAX_FAST_CHARS - 8) + "x",
    "*/ " + "'/* " * 2000,
    "*/" + "/*" * 4000,
    "*/" + "/* " * 2700,
    "SELECT " + "/* a */" * 7 + "'" + "/* " + "x" * 7000,
    "SELECT " + "a1" * 4000 + ".5",
]


@pytest.mark.parametrize("sql", PATHOLOGICAL)
def test_the_scan_stays_linear_on_pathological_text(sql: str) -> None:
    """Each regular expression pass is linear in the text (a few ms at the length bound, never seconds)."""
    import time

    assert_agrees(sql)
    start = time.perf_counter()
    for _ in range(5):
        fast_fingerprint(sql)
    assert time.perf_counter() - start < 0.5  # 5 scans; ≈ 40 ms on the shared development machine


def test_corpus_statements_with_comments_and_quotes_inserted_agree() -> None:
    """Comment and quote pieces dropped at random places (inside literals too) into corpus statements."""
    rng = random.Random(7)
    statements = [c[4] for c in cases()]
    pieces = ["/* x */", "/**/", "/*'*/", "'", " ", "\n", "/*", "*/", "1", ".", "'a'", "/*/", "-", "*"]
    accepted = 0
    for _ in range(4000):
        sql = rng.choice(statements)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(sql) + 1)
            sql = sql[:at] + rng.choice(pieces) + sql[at:]
        if assert_agrees(sql) is not None:
            accepted += 1
    assert accepted > 1000
