"""The catalog loaded from real servers: tables, columns, views, OIDs, refresh after DDL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import psycopg
import pymysql
import pytest

from sqlbastion.config import BackendSettings, SecretRef
from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.policies.analyze import analyze
from sqlbastion.policies.catalog import CatalogStore, load_mysql, load_postgres
from sqlbastion.policies.model import StatementContext

pytestmark = pytest.mark.integration

ENV = "SQLBASTION_TEST_CATALOG_PW"


@pytest.fixture
def secret_env() -> Iterator[str]:
    saved = os.environ.get(ENV)
    yield ENV
    if saved is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = saved


def backend(server: ServerInfo, protocol: str, env: str) -> BackendSettings:
    os.environ[env] = server.service_password
    return BackendSettings(
        name="b",
        protocol=protocol,  # type: ignore[arg-type]  # "mysql" or "postgres"
        listen="127.0.0.1:1",
        host=server.host,
        port=server.port,
        user=server.service_user,
        password=SecretRef(f"env:{env}"),
        database="bank",
        catalog_refresh_s=3600.0,
    )


async def test_mysql_catalog(sample_bank: LoadedBank, mariadb_server: ServerInfo, secret_env: str) -> None:
    s = mariadb_server
    conn = pymysql.connect(host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, database="bank")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW catalog_v AS SELECT id, mobile AS phone FROM customers")
        conn.commit()
    finally:
        conn.close()
    try:
        cat = await load_mysql(backend(s, "mysql", secret_env))
    finally:
        conn = pymysql.connect(host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, database="bank")
        try:
            with conn.cursor() as cur:
                cur.execute("DROP VIEW IF EXISTS catalog_v")
            conn.commit()
        finally:
            conn.close()
    customers = cat.table("bank", "customers")
    assert customers is not None
    assert customers.columns[:4] == ("id", "name", "id_card", "mobile")
    view = cat.table("BANK", "Catalog_V")
    assert view is not None
    assert view.is_view
    assert view.columns == ("id", "phone")
    ctx = StatementContext(person="p", roles=(), backend="b", dialect="mysql", database="bank")
    [f] = analyze("SELECT phone FROM catalog_v", ctx, cat).statements
    assert {str(c) for c in f.outputs[0].sources} == {"bank.customers.mobile", "bank.catalog_v.phone"}


async def test_postgres_catalog_and_refresh_after_ddl(
    sample_bank: LoadedBank, postgres_server: ServerInfo, secret_env: str
) -> None:
    s = postgres_server
    with psycopg.connect(
        host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="bank", autocommit=True
    ) as admin:
        admin.execute("DROP TABLE IF EXISTS catalog_fresh")
        admin.execute("CREATE OR REPLACE VIEW catalog_pv AS SELECT id, mobile AS phone FROM customers")
        admin.execute("GRANT SELECT ON catalog_pv TO PUBLIC")
        b = backend(s, "postgres", secret_env)
        cat = await load_postgres(b)
        assert cat.database == "bank"
        customers = cat.table("public", "customers")
        assert customers is not None
        assert customers.oid is not None
        assert cat.by_oid(customers.oid) is customers
        assert cat.column_by_attnum(customers.oid, 4) == (customers, "mobile")
        assert cat.table("pg_catalog", "pg_stats") is not None
        ctx = StatementContext(
            person="p", roles=(), backend="b", dialect="postgres", database="bank", search_path=("public",)
        )
        [f] = analyze("SELECT phone FROM catalog_pv", ctx, cat).statements
        assert "bank.public.customers.mobile" in {str(c) for c in f.outputs[0].sources}

        store = CatalogStore([b])
        await store.load_all()
        tasks = store.start()
        try:
            first = store.get("b")
            assert first is not None
            assert first.table("public", "catalog_fresh") is None
            admin.execute("CREATE TABLE catalog_fresh (id int, secret text)")
            store.note_ddl("b")
            for _ in range(100):
                await asyncio.sleep(0.05)
                current = store.get("b")
                if current is not None and current.table("public", "catalog_fresh") is not None:
                    break
            current = store.get("b")
            assert current is not None
            assert current.version != first.version
            fresh = current.table("public", "catalog_fresh")
            assert fresh is not None
            assert fresh.columns == ("id", "secret")
        finally:
            for t in tasks:
                t.cancel()
            admin.execute("DROP TABLE IF EXISTS catalog_fresh")
            admin.execute("DROP VIEW IF EXISTS catalog_pv")


async def test_unreachable_backend_keeps_the_old_snapshot(secret_env: str) -> None:
    os.environ[secret_env] = "x"
    b = BackendSettings(
        name="down",
        protocol="postgres",
        listen="127.0.0.1:1",
        host="127.0.0.1",
        port=9,
        user="x",
        password=SecretRef(f"env:{secret_env}"),
        connect_timeout_s=1.0,
    )
    store = CatalogStore([b])
    before = store.get("down")
    assert not await store.refresh("down")
    assert store.get("down") is before
