"""Decision cache: hits for the same meaning, never a shared entry for different meanings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sqlbastion.observability.metrics import METRICS
from sqlbastion.policies.catalog import Catalog, TableInfo
from sqlbastion.policies.engine import DecisionCache, PolicyEngine
from tests.unit.policies.support import (
    context as ctx_for,
)
from tests.unit.policies.support import (
    example_masking,
    example_policy,
    mysql_catalog,
    new_engine,
    postgres_catalog,
)


def hits() -> float:
    return float(METRICS.decision_cache.labels("hit")._value.get())


def test_same_statement_hits() -> None:
    engine = new_engine()
    ctx = ctx_for("dev")
    first = engine.decide("SELECT id FROM customers WHERE id = 1", ctx)
    before = hits()
    second = engine.decide("SELECT id FROM customers WHERE id = 1", ctx)
    assert hits() == before + 1
    assert second.cached
    assert not first.cached
    assert replace(second, cached=False) == first


def test_other_literals_share_the_fingerprint() -> None:
    engine = new_engine()
    ctx = ctx_for("dev")
    engine.decide("SELECT id FROM customers WHERE id = 1", ctx)
    before = hits()
    d = engine.decide("SELECT id FROM customers WHERE id = 2", ctx)
    assert hits() == before + 1
    assert d.cached
    assert d.allowed


# Pairs that differ only in literals but mean different things: the second must be
# decided on its own, whatever the first left in the cache.
PAIRS = [
    ("mysql", "DELETE FROM accounts WHERE 1 = 2", "DELETE FROM accounts WHERE 1 = 1"),
    ("mysql", "DELETE FROM accounts WHERE 0", "DELETE FROM accounts WHERE 1"),
    ("mysql", "DELETE FROM accounts WHERE id = 5 OR 0 + 0", "DELETE FROM accounts WHERE id = 5 OR 0 + 1"),
    ("mysql", "DELETE FROM accounts WHERE id = 5 OR 1 = 0", "DELETE FROM accounts WHERE id = 5 OR 1 = 1"),
    ("mysql", "DELETE FROM accounts WHERE id = 5 OR 0", "DELETE FROM accounts WHERE id = 5 OR 1"),
    ("mysql", "DELETE FROM accounts WHERE 'a' = 'b'", "DELETE FROM accounts WHERE 'a' = 'a'"),
    (
        "mysql",
        "UPDATE accounts SET status = 'x' WHERE status LIKE 'a%'",
        "UPDATE accounts SET status = 'x' WHERE status LIKE '%'",
    ),
    ("postgres", "DELETE FROM accounts WHERE false", "DELETE FROM accounts WHERE true"),
    ("mysql", "SELECT id, mobile FROM customers ORDER BY 1", "SELECT id, mobile FROM customers ORDER BY 2"),
    (
        "postgres",
        "SELECT id, mobile FROM customers GROUP BY 1, 2 ORDER BY 1",
        "SELECT id, mobile FROM customers GROUP BY 1, 2 ORDER BY 2",
    ),
    ("postgres", "SELECT set_config('application_name', 'x', false)", "SELECT set_config('search_path', 'x', false)"),
    ("mysql", "SET sql_mode = 'TRADITIONAL'", "SET sql_mode = 'ANSI_QUOTES'; SELECT 1"),
    ("mysql", "SET NAMES 'utf8mb4'", "SET NAMES 'gbk'"),
    ("postgres", "SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'"),
    ("postgres", "SET standard_conforming_strings = on", "SET standard_conforming_strings = maybe"),
    ("postgres", "COPY (SELECT 1) TO STDOUT", "COPY (SELECT 1) TO '/tmp/x'"),
]


@pytest.mark.parametrize(("dialect", "first", "second"), PAIRS)
def test_literals_that_change_meaning_never_share(dialect: str, first: str, second: str) -> None:
    warm = new_engine()
    cold = new_engine()
    ctx = ctx_for("dev", dialect)  # type: ignore[arg-type]  # parametrised dialect name
    warm.decide(first, ctx)
    warm.decide(first, ctx)
    expected = cold.decide(second, ctx)
    got = warm.decide(second, ctx)
    assert (got.action, got.rule_ids) == (expected.action, expected.rule_ids)


def test_identifier_versus_string_under_ansi_quotes() -> None:
    engine = new_engine()
    sql = "SELECT id FROM customers WHERE \"mobile\" LIKE '1%'"
    plain = ctx_for("dev")
    ansi = ctx_for("dev", ansi_quotes=True)
    assert engine.decide(sql, plain).allowed
    assert not engine.decide(sql, ansi).allowed
    assert engine.decide(sql, plain).allowed


@pytest.mark.parametrize(
    "change",
    [
        {"database": "other"},
        {"no_backslash_escapes": True},
        {"ansi_quotes": True},
        {"client_encoding": "latin1"},
    ],
)
def test_context_is_part_of_the_key(change: dict[str, object]) -> None:
    engine = new_engine()
    sql = "SELECT 'a\\' , mobile FROM customers WHERE mobile LIKE '1%' -- '"
    base = engine.decide(sql, ctx_for("dev"))
    other = engine.decide(sql, ctx_for("dev", "mysql", **change))
    cold = new_engine().decide(sql, ctx_for("dev", "mysql", **change))
    assert (other.action, other.rule_ids) == (cold.action, cold.rule_ids)
    assert base.fingerprint


def test_person_and_roles_are_part_of_the_key() -> None:
    engine = new_engine()
    sql = "SELECT mobile FROM customers WHERE mobile LIKE '1%'"
    assert engine.decide(sql, ctx_for("dba")).allowed
    assert not engine.decide(sql, ctx_for("dev")).allowed
    assert not engine.decide(sql, ctx_for("analyst")).allowed


def test_catalog_version_is_part_of_the_key() -> None:
    catalogs: dict[str, Catalog] = {"core": mysql_catalog(), "ledger": postgres_catalog()}
    engine = PolicyEngine(example_policy().policy, masking=example_masking(), catalogs=catalogs.get)
    sql = "SELECT * FROM fresh"
    ctx = ctx_for("dev")
    assert (
        engine.decide(sql, ctx).rule_ids == ("SB-GRANT-DENIED", "MASK-UNPROVABLE")
        or not engine.decide(sql, ctx).allowed
    )
    tables = [*mysql_catalog().tables.values(), TableInfo(schema="bank", name="fresh", columns=("id",))]
    catalogs["core"] = Catalog.build(backend="core", dialect="mysql", database=None, tables=tables)
    assert engine.decide(sql, ctx).allowed


def test_admission_is_never_cached() -> None:
    engine = new_engine()
    sql = "SELECT id FROM customers WHERE id = 1"
    assert engine.decide(sql, ctx_for("dev")).allowed
    outside = engine.decide(sql, ctx_for("dev", client_address="192.0.2.1"))
    assert outside.rule_ids == ("SB-ADMISSION",)
    assert engine.decide(sql, ctx_for("dev")).allowed


def test_cache_is_bounded() -> None:
    cache = DecisionCache(3)
    for i in range(10):
        cache.put(("k", i), i)
    assert len(cache) == 3
    assert cache.get(("k", 0)) is None
    assert cache.get(("k", 9)) == 9
    engine = new_engine(cache_entries=5)
    for i in range(50):
        engine.decide(f"SELECT id FROM customers WHERE id = {i} AND city = 'c{i}' AND {i} = {i}", ctx_for("dev"))
    assert len(engine.cache) <= 5


def test_unprovable_shapes_are_not_cached_by_fingerprint() -> None:
    engine = new_engine()
    ctx = ctx_for("dev")
    assert not engine.decide("SELECT 'x", ctx).allowed
    assert engine.decide("SELECT 'x'", ctx).allowed


def test_cache_memory_is_capped() -> None:
    cache = DecisionCache(1000, max_chars=10_000)
    for i in range(100):
        cache.put(("x", f"{i:04d}" + "y" * 996, ()), i)
    assert cache.chars <= 10_000
    assert len(cache) <= 10
    assert cache.get(("x", "0099" + "y" * 996, ())) == 99
    cache.clear()
    assert cache.chars == 0


def test_context_numbers_name_one_context_each_and_are_never_reused() -> None:
    engine = new_engine()
    person = engine.person("dev")
    assert person is not None
    a = ctx_for("dev")
    b = ctx_for("dev", database="other")
    first = engine._context_id(a, person, "v1")
    assert engine._context_id(replace(a), person, "v1") == first  # equal values, another object
    assert engine._context_id(b, person, "v1") != first
    assert engine._context_id(a, person, "v2") != first  # the catalog version is part of it
    engine._context_ids.clear()
    assert engine._context_id(a, person, "v1") not in {first, 1, 2}  # a cleared table hands out new numbers


def test_a_reused_context_object_follows_a_catalog_change() -> None:
    versions = {"core": mysql_catalog()}
    engine = PolicyEngine(example_policy().policy, masking=example_masking(), catalogs=versions.get, cache_entries=100)
    ctx = ctx_for("dev")
    sql = "SELECT id FROM customers WHERE id = 1"
    assert engine.decide(sql, ctx).allowed
    assert engine.decide(sql, ctx).cached
    versions["core"] = Catalog.build(
        backend="core", dialect="mysql", database=None, tables=[TableInfo(schema="bank", name="other", columns=("x",))]
    )
    after = engine.decide(sql, ctx)  # same context object, new catalog: decided afresh
    assert not after.cached
