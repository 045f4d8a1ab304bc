"""Output lineage: which source columns each result column comes from, through every shape."""

from __future__ import annotations

import pytest

from sqlbastion.policies.analyze import analyze
from sqlbastion.policies.model import OutputColumn
from tests.unit.policies.support import context, mysql_catalog, postgres_catalog

MY_CAT = mysql_catalog()
PG_CAT = postgres_catalog()


def outputs(sql: str, dialect: str = "mysql") -> list[OutputColumn]:
    cat = MY_CAT if dialect == "mysql" else PG_CAT
    a = analyze(sql, context("dev", dialect), cat)  # type: ignore[arg-type]  # parametrised dialect
    assert a.unprovable is None, a.unprovable
    [facts] = a.statements
    assert facts.unprovable is None, facts.unprovable
    return list(facts.outputs)


def srcs(o: OutputColumn) -> set[str]:
    return {f"{c.table}.{c.column}" for c in o.sources}


@pytest.mark.parametrize("dialect", ["mysql", "postgres"])
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT mobile FROM customers", [("mobile", {"customers.mobile"}, True)]),
        ("SELECT mobile AS m FROM customers", [("m", {"customers.mobile"}, True)]),
        ("SELECT c.mobile FROM customers c", [("mobile", {"customers.mobile"}, True)]),
        ("SELECT (mobile) FROM customers", [("mobile", {"customers.mobile"}, True)]),
        ("SELECT upper(name) AS n FROM customers", [("n", {"customers.name"}, False)]),
        (
            "SELECT CASE WHEN id > 1 THEN mobile ELSE email END AS x FROM customers",
            [("x", {"customers.mobile", "customers.email", "customers.id"}, False)],
        ),
        ("SELECT max(balance) AS b FROM accounts", [("b", {"accounts.balance"}, False)]),
        ("SELECT count(mobile) AS n FROM customers", [("n", set(), False)]),
        ("SELECT x.m FROM (SELECT mobile AS m FROM customers) x", [("m", {"customers.mobile"}, True)]),
        ("SELECT m FROM (SELECT mobile AS m FROM customers) AS x", [("m", {"customers.mobile"}, True)]),
        ("WITH c AS (SELECT mobile AS m FROM customers) SELECT m FROM c", [("m", {"customers.mobile"}, True)]),
        (
            "WITH c AS (SELECT id, mobile FROM customers), d AS (SELECT mobile AS z FROM c) SELECT z FROM d",
            [("z", {"customers.mobile"}, True)],
        ),
        (
            "SELECT mobile FROM customers UNION ALL SELECT card_no FROM accounts",
            [("mobile", {"customers.mobile", "accounts.card_no"}, True)],
        ),
        ("SELECT (SELECT max(card_no) FROM accounts) AS c", [("c", {"accounts.card_no"}, False)]),
        ("SELECT phone FROM v_contacts", [("phone", {"customers.mobile", "v_contacts.phone"}, True)]),
        ("SELECT town AS t FROM v_contacts", [("t", {"customers.city", "v_contacts.town"}, True)]),
        (
            "SELECT a.card_no, c.name FROM accounts a JOIN customers c ON c.id = a.customer_id",
            [("card_no", {"accounts.card_no"}, True), ("name", {"customers.name"}, True)],
        ),
        (
            "SELECT card_no, name FROM accounts a, customers c WHERE c.id = a.customer_id",
            [("card_no", {"accounts.card_no"}, True), ("name", {"customers.name"}, True)],
        ),
    ],
)
def test_lineage(dialect: str, sql: str, expected: list[tuple[str, set[str], bool]]) -> None:
    got = [(o.name, srcs(o), o.direct) for o in outputs(sql, dialect)]
    assert got == expected


def test_star_expands_through_the_catalog() -> None:
    names = [o.name for o in outputs("SELECT * FROM customers")]
    assert names == [
        "id",
        "name",
        "id_card",
        "mobile",
        "email",
        "address",
        "birth_date",
        "gender",
        "city",
        "created_at",
    ]
    names = [o.name for o in outputs("SELECT c.*, a.id FROM customers c JOIN accounts a ON a.customer_id = c.id")]
    assert names[:2] == ["id", "name"]
    assert names[-1] == "id"
    assert len(names) == 11
    assert [o.name for o in outputs("TABLE branches", "postgres")] == ["id", "city", "manager"]


def test_unknown_tables_are_opaque() -> None:
    [o] = outputs("SELECT * FROM nowhere")
    assert o.opaque
    [o] = outputs("SELECT m FROM nowhere")
    assert not o.opaque
    assert srcs(o) == {"nowhere.m"}


def test_ambiguous_column_takes_every_candidate() -> None:
    [o] = outputs("SELECT city FROM customers, branches")
    assert srcs(o) == {"customers.city", "branches.city"}


def test_recursive_cte_reaches_a_fixed_point() -> None:
    sql = (
        "WITH RECURSIVE r (n, v) AS (SELECT 1, city FROM customers UNION ALL SELECT n + 1, mobile FROM r, customers) "
        "SELECT v FROM r"
    )
    [o] = outputs(sql, "postgres")
    assert srcs(o) == {"customers.city", "customers.mobile"}
    assert not o.direct


@pytest.mark.parametrize(
    ("sql", "whole"),
    [
        ("SELECT row_to_json(c) FROM customers c", True),
        ("SELECT c::text FROM customers c", True),
        ("SELECT to_jsonb(c.*) FROM customers c", True),
        ("SELECT (c).mobile FROM customers c", False),
    ],
)
def test_postgres_whole_row_references(sql: str, whole: bool) -> None:
    [o] = outputs(sql, "postgres")
    assert "customers.mobile" in srcs(o)
    assert not o.direct
    assert bool(o.whole_row_of) == whole


def test_returning_has_lineage() -> None:
    a = analyze("UPDATE customers SET city = 'x' WHERE id = 1 RETURNING mobile", context("dev", "postgres"), PG_CAT)
    [f] = a.statements
    assert [srcs(o) for o in f.outputs] == [{"customers.mobile"}]
    assert f.produces_rows


def test_copy_to_stdout_has_lineage() -> None:
    a = analyze("COPY customers (id, mobile) TO STDOUT WITH (FORMAT binary)", context("dba", "postgres"), PG_CAT)
    [f] = a.statements
    assert [o.name for o in f.outputs] == ["id", "mobile"]
    assert f.kind == "copy_to"
