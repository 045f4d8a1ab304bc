"""Redaction by statement shape: statements that differ only in literals are tokenized once, and the
shared result is exactly what the tokenizer gives each of them (no literal of any of them survives)."""

from __future__ import annotations

import random

import pytest

from sqlbastion.audit import redact
from sqlbastion.audit.redact import _shape, redact_literals, statement_text

TEMPLATES = [
    "SELECT id, name FROM customers WHERE id = {n} AND city = {s}",
    "UPDATE accounts SET balance = balance - {d} WHERE id = {n}",
    "INSERT INTO t (a, b, c) VALUES ({n}, {s}, {d})",
    "SELECT * FROM t1 WHERE x IN ({n}, {n}, {n}) LIMIT {n}",
    "SELECT c FROM t WHERE a BETWEEN {n} AND {n} OR b LIKE {s}",
    "DELETE FROM logs WHERE ts < {s} AND level >= {n}",
    "SELECT {n}+{n}, -{d}, {s}||{s} FROM dual",
    "SELECT a FROM t WHERE b = {s}{s}",
    "select x1, t2.y3 from t2 where z = {n}",
]


def _string(rng: random.Random) -> str:
    alphabet = "abcXYZ 0123456789,.;:()=<>%_-+*/@?!é中\t"
    body = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
    if rng.random() < 0.2:
        body += "''" + body  # a doubled quote inside the literal
    return f"'{body}'"


def _fill(template: str, rng: random.Random) -> tuple[str, list[str]]:
    literals: list[str] = []

    def n() -> str:
        v = str(rng.randrange(0, 10 ** rng.randrange(1, 12)))
        literals.append(v)
        return v

    def d() -> str:
        v = f"{rng.randrange(0, 100000)}.{rng.randrange(0, 1000):03d}"
        literals.append(v)
        return v

    def s() -> str:
        v = _string(rng)
        literals.append(v)
        return v

    out = template
    while "{" in out:
        i = out.index("{")
        kind = out[i + 1]
        out = out[:i] + {"n": n, "d": d, "s": s}[kind]() + out[i + 3 :]
    return out, literals


@pytest.mark.parametrize("dialect", ["mysql", "postgres"])
def test_shared_redactions_equal_the_tokenizers_for_every_statement(dialect: str) -> None:
    rng = random.Random(20261125)
    for _ in range(600):
        sql, _ = _fill(rng.choice(TEMPLATES), rng)
        got = statement_text(sql, dialect=dialect, raw_allowed=False, sensitive=True).text
        assert got == redact_literals(sql, dialect), sql


def test_the_second_statement_of_a_shape_is_not_tokenized(monkeypatch: pytest.MonkeyPatch) -> None:
    first = "SELECT a FROM shape_probe WHERE id = 17 AND name = 'alice'"
    second = "SELECT a FROM shape_probe WHERE id = 99123 AND name = 'bob, of course'"
    assert _shape(first) == _shape(second) is not None
    expected = statement_text(first, dialect="mysql", raw_allowed=False, sensitive=False).text

    def boom(*_: object) -> object:
        raise AssertionError("tokenized again")

    monkeypatch.setattr(redact, "_tokenize", boom)
    assert statement_text(second, dialect="mysql", raw_allowed=False, sensitive=False).text == expected
    assert expected == "SELECT a FROM shape_probe WHERE id = ? AND name = ?"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'a\\' OR 1=1 -- ' FROM t",  # backslash escapes (MySQL): the careful path decides
        'SELECT "x" FROM t WHERE a = 1',  # double quotes: a string in MySQL, an identifier in PostgreSQL
        "SELECT 1 -- 2",
        "SELECT /* 1 */ 2",
        "SELECT $1, $$body$$",
        "SELECT `a` FROM t WHERE b = 1",
        "SELECT 'unterminated",
        "SELECT a FROM t",  # no literal: the exact-text cache is enough
        "SELECT \x01 FROM t WHERE a = 'x'",
    ],
)
def test_texts_whose_split_could_depend_on_a_literal_have_no_shape(sql: str) -> None:
    assert _shape(sql) is None


def test_numbers_inside_words_and_parameters_are_not_literals_of_a_shape() -> None:
    shape = _shape("SELECT t1.c2, @v3, :p4, ?5 FROM t1 WHERE x = 5")
    assert shape == "SELECT t1.c2, @v3, :p4, ?5 FROM t1 WHERE x = \x02"
