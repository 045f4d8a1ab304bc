"""The PostgreSQL proxy's catalog cache against the real server: names, types, failures."""

from __future__ import annotations

import psycopg
import pytest

from sqlbastion.config import BackendSettings, loads
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.observability.metrics import METRICS
from sqlbastion.proxy.postgres.catalog import Catalog
from sqlbastion.proxy.postgres.protocol import RowColumn

pytestmark = pytest.mark.integration

ENV = "SQLBASTION_TEST_PG_CATALOG_PW"


def _backend(server: ServerInfo, port: int | None = None) -> BackendSettings:
    settings = loads(
        f"""
[[backends]]
name = "pgcat"
protocol = "postgres"
listen = "127.0.0.1:{free_port()}"
host = "{server.host}"
port = {port or server.port}
user = "{server.service_user}"
password = "env:{ENV}"
connect_timeout_s = 2.0
"""
    )
    return settings.backends[0]


@pytest.fixture
def catalog_table(postgres_server: ServerInfo, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setenv(ENV, postgres_server.service_password)
    s = postgres_server
    with psycopg.connect(
        host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS cat")
        conn.execute("DROP TABLE IF EXISTS cat.people")
        conn.execute("DROP TYPE IF EXISTS cat.mood")
        conn.execute("CREATE TYPE cat.mood AS ENUM ('ok', 'sad')")
        conn.execute("CREATE TABLE cat.people (id int, full_name text, feeling cat.mood)")
        row = conn.execute("SELECT 'cat.people'::regclass::oid::int, 'cat.mood'::regtype::oid::int").fetchone()
        assert row is not None
        return int(str(row[0])), int(str(row[1]))


async def test_names_and_types_are_resolved_and_cached(
    postgres_server: ServerInfo, catalog_table: tuple[int, int]
) -> None:
    table_oid, mood_oid = catalog_table
    catalog = Catalog(_backend(postgres_server), "postgres")
    columns = [
        RowColumn(name=b"full_name", table_oid=table_oid, attnum=2, type_oid=25, format=0),
        RowColumn(name=b"feeling", table_oid=table_oid, attnum=3, type_oid=mood_oid, format=0),
        RowColumn(name=b"?column?", table_oid=0, attnum=0, type_oid=23, format=0),
    ]
    assert catalog.resolve(columns) is None
    await catalog.load(columns)
    metas = catalog.resolve(columns)
    assert metas is not None
    assert [(m.schema, m.table, m.column, m.type_name) for m in metas] == [
        ("cat", "people", "full_name", "text"),
        ("cat", "people", "feeling", "mood"),
        (None, None, None, "int4"),
    ]
    await catalog.close()


async def test_unreachable_catalog_falls_back_to_nameless_columns(
    postgres_server: ServerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, postgres_server.service_password)
    backend = _backend(postgres_server, port=free_port())
    catalog = Catalog(backend, "postgres")
    before = METRICS.backend_errors.labels("postgres", "pgcat", "catalog")._value.get()
    columns = [RowColumn(name=b"x", table_oid=99999, attnum=1, type_oid=99998, format=0)]
    await catalog.load(columns)
    metas = catalog.resolve(columns)
    assert metas is not None
    assert (metas[0].table, metas[0].column, metas[0].type_name) == (None, None, "unknown")
    assert METRICS.backend_errors.labels("postgres", "pgcat", "catalog")._value.get() == before + 1
