"""Shared fixtures for the policy tests: the example bank policy and catalogs without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from sqlbastion.masking.policy import MaskingPolicy, parse_masking_policy
from sqlbastion.policies.analyze import AnalysisLimits
from sqlbastion.policies.catalog import Catalog, TableInfo
from sqlbastion.policies.engine import PolicyEngine
from sqlbastion.policies.loader import LoadedPolicy, load_policy_files
from sqlbastion.policies.model import Decision, Dialect, StatementContext

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_POLICY = ROOT / "examples" / "policy.toml"

BANK_COLUMNS = {
    "customers": ("id", "name", "id_card", "mobile", "email", "address", "birth_date", "gender", "city", "created_at"),
    "accounts": ("id", "customer_id", "card_no", "account_type", "balance", "opened_at", "status", "branch"),
    "transactions": (
        "id",
        "account_id",
        "amount",
        "currency",
        "tx_time",
        "channel",
        "counterparty_name",
        "counterparty_card",
        "memo",
    ),
}
NOON = datetime(2026, 11, 25, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai, a Wednesday


def mysql_catalog() -> Catalog:
    tables = [TableInfo(schema="bank", name=t, columns=c) for t, c in BANK_COLUMNS.items()]
    tables.append(
        TableInfo(
            schema="bank",
            name="v_contacts",
            columns=("id", "phone", "town"),
            view_sql="select `bank`.`customers`.`id` AS `id`,`bank`.`customers`.`mobile` AS `phone`,"
            "`bank`.`customers`.`city` AS `town` from `bank`.`customers`",
        )
    )
    tables.append(TableInfo(schema="bank", name="branches", columns=("id", "city", "manager")))
    tables.append(TableInfo(schema="other", name="notes", columns=("id", "body")))
    return Catalog.build(backend="core", dialect="mysql", database=None, tables=tables)


def postgres_catalog() -> Catalog:
    tables = [
        TableInfo(schema="public", name=t, columns=c, oid=16000 + i, attnums=tuple(range(1, len(c) + 1)))
        for i, (t, c) in enumerate(BANK_COLUMNS.items())
    ]
    tables.append(
        TableInfo(
            schema="public",
            name="v_contacts",
            columns=("id", "phone", "town"),
            view_sql=(
                " SELECT customers.id,\n    customers.mobile AS phone,\n    customers.city AS town\n   FROM customers;"
            ),
        )
    )
    tables.append(TableInfo(schema="public", name="branches", columns=("id", "city", "manager")))
    tables.append(TableInfo(schema="pg_catalog", name="pg_type", columns=("oid", "typname", "typlen")))
    tables.append(TableInfo(schema="pg_catalog", name="pg_class", columns=("oid", "relname", "relkind")))
    tables.append(TableInfo(schema="pg_catalog", name="pg_stats", columns=("schemaname", "tablename", "attname")))
    tables.append(TableInfo(schema="pg_catalog", name="pg_stat_activity", columns=("pid", "query", "usename")))
    tables.append(TableInfo(schema="information_schema", name="columns", columns=("table_name", "column_name")))
    return Catalog.build(backend="ledger", dialect="postgres", database="bank", tables=tables)


@cache
def example_policy() -> LoadedPolicy:
    return load_policy_files([EXAMPLE_POLICY])


@cache
def example_masking() -> MaskingPolicy:
    loaded = example_policy()
    return parse_masking_policy(loaded.documents[0][1], file=loaded.documents[0][0])


def new_engine(*, cache_entries: int = 10_000, limits: AnalysisLimits | None = None) -> PolicyEngine:
    return PolicyEngine(
        example_policy().policy,
        masking=example_masking(),
        catalogs={"core": mysql_catalog(), "ledger": postgres_catalog()},
        cache_entries=cache_entries,
        limits=limits,
    )


ENGINE = new_engine()


def context(person: str, dialect: Dialect = "mysql", **changes: object) -> StatementContext:
    values: dict[str, object] = {
        "person": person,
        "roles": (),
        "backend": "core" if dialect == "mysql" else "ledger",
        "dialect": dialect,
        "database": "bank",
        "search_path": ("public",) if dialect == "postgres" else (),
        "client_address": "127.0.0.1",
        "now": NOON,
    }
    values.update(changes)
    return StatementContext(**values)  # type: ignore[arg-type]  # test helper: keys are StatementContext fields


def decide(
    person: str, sql: str, dialect: Dialect = "mysql", engine: PolicyEngine | None = None, **changes: object
) -> Decision:
    return (engine or ENGINE).decide(sql, context(person, dialect, **changes))
