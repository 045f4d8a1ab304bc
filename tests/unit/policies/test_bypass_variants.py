"""Bypass variants: the refusals of bypass_variants.py, and the classes closed with them.

* MySQL compares a string column with a number as DOUBLE, so ``mobile = 138`` is a
  prefix probe, not a lookup;
* a parameter marker and a number must not share a decision cache entry;
* a bare word as a value (``_binary mobile``) is not a resolved column;
* an executing EXPLAIN evaluates its output expressions (error echo);
* ``sql_mode`` given as a number is a bit set whose modes the lexer cannot know.
"""

from __future__ import annotations

import pytest

from sqlbastion.policies.model import Action
from tests.unit.policies.bypass_variants import BLOCKED
from tests.unit.policies.support import context, decide, new_engine


@pytest.mark.parametrize(("dialect", "sql"), BLOCKED, ids=[f"{i}-{d[:2]}" for i, (d, _) in enumerate(BLOCKED)])
def test_variant_is_refused(dialect: str, sql: str) -> None:
    d = decide("dev", sql, dialect)  # type: ignore[arg-type]  # "mysql" / "postgres" from the list
    assert d.action is not Action.ALLOW, f"{sql!r} allowed"
    assert d.reason


def test_variants_cover_both_dialects() -> None:
    assert len(BLOCKED) >= 300
    assert {d for d, _ in BLOCKED} == {"mysql", "postgres"}


@pytest.mark.parametrize(
    "operand",
    ["138", "-1", "0", "1e10", "13800001111", "TRUE", "@v", "1.5"],
)
def test_mysql_number_against_masked_string_is_not_a_lookup(operand: str) -> None:
    for sql in (
        f"SELECT id FROM customers WHERE mobile = {operand}",
        f"SELECT id FROM customers WHERE {operand} = mobile",
        f"SELECT id FROM customers WHERE mobile IN ('13800001111', {operand})",
    ):
        d = decide("dev", sql)
        assert d.action is Action.BLOCK, sql
        assert "MASK-INFERENCE" in d.rule_ids


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM customers WHERE mobile = '13800001111'",
        "SELECT id FROM customers WHERE mobile = ?",
        "SELECT id FROM customers WHERE mobile IN (?, '1', NULL)",
    ],
)
def test_mysql_string_lookups_stay_allowed(sql: str) -> None:
    assert decide("dev", sql).action is Action.ALLOW


def test_postgres_number_lookup_stays_allowed() -> None:
    # PostgreSQL refuses text = integer itself; a number there is no looser match.
    assert decide("dev", "SELECT id FROM customers WHERE mobile = $1", "postgres").action is Action.ALLOW


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT id FROM customers WHERE mobile = ?", "SELECT id FROM customers WHERE mobile = 138"),
        ("SELECT id FROM customers WHERE mobile IN (?, ?)", "SELECT id FROM customers WHERE mobile IN (1, 2)"),
        ("SELECT id FROM customers WHERE mobile = ? LIMIT 1", "SELECT id FROM customers WHERE mobile = 0 LIMIT 1"),
    ],
)
def test_parameter_marker_and_number_do_not_share_a_decision(first: str, second: str) -> None:
    engine = new_engine()
    ctx = context("dev")
    assert engine.decide(first, ctx).action is Action.ALLOW
    assert engine.decide(first, ctx).cached
    late = engine.decide(second, ctx)
    assert late.action is Action.BLOCK, late.reason
    # and the other order
    engine = new_engine()
    assert engine.decide(second, ctx).action is Action.BLOCK
    assert engine.decide(first, ctx).action is Action.ALLOW


def test_parameter_marker_fingerprint_differs_from_number() -> None:
    from sqlbastion.policies.fingerprint import fast_fingerprint
    from sqlbastion.policies.lexer import LexerState, lex

    state = LexerState(dialect="mysql")
    a = lex("SELECT id FROM t WHERE c = ?", state)[0].fingerprint
    b = lex("SELECT id FROM t WHERE c = 138", state)[0].fingerprint
    assert a != b
    assert fast_fingerprint("SELECT id FROM t WHERE c = ?") is None
    assert fast_fingerprint("SELECT id FROM t WHERE c = 138") == b


@pytest.mark.parametrize("charset", ["_binary", "_utf8mb4", "_latin1", "_gbk", "_ascii"])
def test_bare_word_before_masked_column_is_unprovable(charset: str) -> None:
    d = decide("dev", f"SELECT {charset} mobile FROM customers")
    assert d.action is Action.BLOCK
    assert "MASK-UNPROVABLE" in d.rule_ids


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "EXPLAIN ANALYZE SELECT CAST(name AS int) FROM customers"),
        ("postgres", "EXPLAIN (ANALYZE) SELECT name::json FROM customers"),
        ("postgres", "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT id, name::regclass FROM customers"),
        ("postgres", "EXPLAIN (ANALYSE true, BUFFERS) SELECT to_number(address, '9') FROM customers"),
        ("postgres", "EXPLAIN ANALYZE SELECT c::text::int FROM customers c"),
        ("postgres", "EXPLAIN ANALYZE SELECT (SELECT email::date FROM customers LIMIT 1)"),
        ("postgres", "EXPLAIN ANALYZE SELECT mobile::int + id_card::int FROM customers"),
        ("postgres", "EXPLAIN ANALYZE WITH x AS (SELECT mobile AS m FROM customers) SELECT m::uuid FROM x"),
        ("mysql", "EXPLAIN ANALYZE SELECT CAST(name AS SIGNED) FROM customers"),
        ("mysql", "EXPLAIN ANALYZE SELECT EXTRACTVALUE(1, CONCAT(0x7e, name)) FROM customers"),
        ("mysql", "EXPLAIN ANALYZE SELECT CAST(mobile AS JSON) FROM customers"),
        ("mysql", "EXPLAIN ANALYZE SELECT name + 0 FROM customers"),
    ],
)
def test_executing_explain_judges_its_output_expressions(dialect: str, sql: str) -> None:
    d = decide("dev", sql, dialect)  # type: ignore[arg-type]  # literal dialects above
    assert d.action is Action.BLOCK, sql


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("postgres", "EXPLAIN ANALYZE SELECT id, mobile FROM customers"),
        ("postgres", "EXPLAIN SELECT CAST(name AS int) FROM customers"),
        ("postgres", "EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM customers"),
        ("mysql", "EXPLAIN SELECT CAST(name AS SIGNED) FROM customers"),
        ("mysql", "EXPLAIN ANALYZE SELECT id, mobile FROM customers"),
    ],
)
def test_plain_explain_and_explain_of_plain_columns_stay_allowed(dialect: str, sql: str) -> None:
    d = decide("dev", sql, dialect)  # type: ignore[arg-type]  # literal dialects above
    assert d.action is Action.ALLOW, d.reason


@pytest.mark.parametrize("value", ["4", "'4'", "'6'", "'ANSI_QUOTES,4'", "'1,ANSI_QUOTES'", "'ANSI-QUOTES'", "64"])
def test_sql_mode_as_a_number_is_refused(value: str) -> None:
    d = decide("dev", f"SET sql_mode = {value}")
    assert d.action is Action.BLOCK
    assert "SB-UNPROVABLE-LEXER" in d.rule_ids


@pytest.mark.parametrize("value", ["'ANSI_QUOTES'", "''", "DEFAULT", "'STRICT_TRANS_TABLES,NO_ZERO_DATE'"])
def test_sql_mode_names_stay_allowed(value: str) -> None:
    d = decide("dev", f"SET SESSION sql_mode = {value}")
    assert d.action is Action.ALLOW, d.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM /*!99999 (SELECT 'a' AS mobile, 1 AS id) AS */ customers WHERE mobile > '138'",
        "SELECT /*!99999 'x' AS */ mobile FROM customers",
        "SELECT id FROM /*M!999999 (SELECT 'a' AS mobile, 1 AS id) AS */ customers WHERE mobile LIKE '1%'",
        "WITH /*!99999 customers AS (SELECT 'a' AS mobile, 1 AS id), */ x AS (SELECT 1) "
        "SELECT id FROM customers WHERE mobile > '138'",
        "SELECT id /*!80099 , city */ FROM customers",
        "SELECT id /*M!100000 , name */ FROM customers",
        "SELECT id FROM branches /*!99999 WHERE 1 = 0 UNION SELECT mobile FROM customers */",
        "SELECT /*!999999 md5(*/ id /*!999999 )*/ FROM customers WHERE id = 1",
        "UPDATE branches SET city = 'x' /*!99999 WHERE id = 1 */",
        "SELECT manager /*!99999 AS m FROM branches UNION SELECT mobile AS m */ FROM customers",
    ],
)
def test_conditional_executable_comment_with_two_readings_is_refused(sql: str) -> None:
    d = decide("dev", sql)
    assert d.action is Action.BLOCK, sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT /*!40001 SQL_NO_CACHE */ * FROM customers",
        "/*!40101 SET NAMES utf8mb4 */",
        "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */",
        "SELECT /*!50000 STRAIGHT_JOIN */ id FROM customers",
        "SELECT /*!80000 SQL_NO_CACHE */ id, city FROM customers",
        "SELECT id /*!, city */ FROM customers",
    ],
)
def test_executable_comments_with_one_meaning_stay_allowed(sql: str) -> None:
    d = decide("dev", sql)
    assert d.action is Action.ALLOW, d.reason


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "SELECT count(NULLIF(mobile > '138', false)) FROM customers"),
        ("postgres", "SELECT count(NULLIF(mobile > '138', false)) FROM customers"),
        ("mysql", "SELECT count(DISTINCT mobile > '138') FROM customers"),
        ("postgres", "SELECT count(DISTINCT mobile LIKE '138%') FROM customers"),
        ("mysql", "SELECT count(CASE WHEN id_card > '3' THEN 1 END) FROM customers"),
        ("postgres", "SELECT count(CASE WHEN name LIKE '王%' THEN 1 END) FROM customers"),
        ("mysql", "SELECT count(IF(mobile > '138', 1, NULL)) FROM customers"),
        ("mysql", "SELECT count(DISTINCT substr(mobile, 1, 3)) FROM customers"),
        ("postgres", "SELECT count(*) FROM customers HAVING count(mobile > '1') > 0"),
        ("mysql", "SELECT city, count(mobile REGEXP '^138') FROM customers GROUP BY city"),
    ],
)
def test_count_of_a_predicate_on_a_masked_column_is_refused(dialect: str, sql: str) -> None:
    d = decide("dev", sql, dialect)  # type: ignore[arg-type]  # literal dialects above
    assert d.action is Action.BLOCK, sql
    assert "MASK-INFERENCE" in d.rule_ids


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT count(*), count(mobile), count(DISTINCT mobile), count(1) FROM customers",
        "SELECT count(DISTINCT city, gender) FROM customers",
        "SELECT count((id)) FROM customers",
    ],
)
def test_counting_values_stays_allowed(sql: str) -> None:
    for dialect in ("mysql", "postgres"):
        if "DISTINCT city, gender" in sql and dialect == "postgres":
            continue  # MySQL syntax
        d = decide("dev", sql, dialect)
        assert d.action is Action.ALLOW, d.reason


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id, mobile AS city FROM customers HAVING city > '138'",
        "SELECT id, id_card AS gender FROM customers HAVING gender LIKE '11%'",
        "SELECT id, mobile AS city FROM customers ORDER BY city",
        "SELECT id, name AS city FROM customers GROUP BY id, city HAVING city < 'M'",
    ],
)
def test_alias_named_like_a_clear_column_counts_as_the_masked_one(sql: str) -> None:
    d = decide("dev", sql)
    assert d.action is Action.BLOCK, sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM customers c ORDER BY c.*",
        "SELECT id FROM customers c GROUP BY c.*, id",
        "SELECT DISTINCT ON (c.*) id FROM customers c",
        "SELECT id, rank() OVER (ORDER BY c.*) FROM customers c",
    ],
)
def test_whole_row_star_in_a_filtering_clause_uses_every_column(sql: str) -> None:
    d = decide("dev", sql, "postgres")
    assert d.action is Action.BLOCK, sql
    assert "MASK-INFERENCE" in d.rule_ids


def test_a_conditional_comment_anywhere_never_allows_what_a_reading_refuses() -> None:
    """Hide a random span of a corpus statement in /*!99999 … */: both readings must be allowed to allow it."""
    import random

    from tests.unit.policies.corpus import cases

    rng = random.Random(20261125)
    statements = [c[4] for c in cases() if c[1] == "mysql" and "/*" not in c[4] and "'" not in c[4]]
    tried = 0
    for _ in range(300):
        words = rng.choice(statements).split(" ")
        if len(words) < 3:
            continue
        i = rng.randrange(1, len(words))
        j = rng.randrange(i, min(len(words), i + 4)) + 1
        hidden = " ".join(words[:i]) + " /*!99999 " + " ".join(words[i:j]) + " */ " + " ".join(words[j:])
        tried += 1
        if decide("dev", hidden).action is not Action.ALLOW:
            continue
        ran = decide("dev", " ".join(words))
        skipped = decide("dev", " ".join(words[:i] + words[j:]))
        assert ran.action is Action.ALLOW, hidden
        assert skipped.action is Action.ALLOW, hidden
    assert tried > 200
