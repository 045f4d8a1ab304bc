"""Unmodified PostgreSQL clients through sqlbastion: psql, asyncpg, psycopg 3, pgbench; TLS; auth failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from tests.integration.postgres_support import (
    OUTSIDER,
    OUTSIDER_PASSWORD,
    PASSWORD,
    PERSON,
    Proxy,
    pg_tool,
    run_proxy,
    run_tool,
    ssl_context_for,
)

from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(postgres_server, tmp_path_factory.mktemp("pg-clients"))


@pytest.fixture(scope="module")
def tls_proxy(postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(postgres_server, tmp_path_factory.mktemp("pg-tls"), require_tls=True)


@pytest.fixture(scope="module")
def pgbench_db(postgres_server: ServerInfo) -> str:
    """pgbench's tables, created directly on the server (not through the proxy)."""
    s = postgres_server
    with psycopg.connect(
        host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'bench'").fetchone() is None:
            conn.execute("CREATE DATABASE bench")
    r = run_tool(
        [pg_tool("pgbench"), "-i", "-s", "1", "-q", "-h", s.host, "-p", str(s.port), "-U", s.admin_user, "bench"],
        password=s.admin_password,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return "bench"


def test_psycopg_text_and_binary(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        assert conn.execute("SELECT 1, 'a'::text, NULL::int").fetchall() == [(1, "a", None)]
        row = conn.execute("SELECT %s::int, %s::text, %s::numeric", (5, "x", 1.5), binary=True).fetchone()
        assert row is not None
        assert row[:2] == (5, "x")
        assert float(str(row[2])) == 1.5
        cur = conn.cursor()
        cur.execute("SELECT generate_series(1, 1000)")
        assert [r[0] for r in cur.fetchall()] == list(range(1, 1001))


def test_psycopg_pipeline_mode(proxy: Proxy) -> None:
    with proxy.connect() as conn, conn.pipeline():
        cursors = [conn.execute("SELECT %s::int * 2", (i,)) for i in range(20)]
        conn.execute("SELECT 'done'", binary=True)
    assert [c.fetchone() for c in cursors] == [(i * 2,) for i in range(20)]


def test_psycopg_transactions_and_server_side_cursor(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("CREATE TEMP TABLE tx (id int)")
        with conn.transaction():
            conn.execute("INSERT INTO tx VALUES (1), (2)")
        with conn.transaction():
            conn.execute("INSERT INTO tx VALUES (3)")
            cur = conn.cursor(name="c1")
            cur.itersize = 2
            cur.execute("SELECT id FROM tx ORDER BY id")
            assert [r[0] for r in cur] == [1, 2, 3]
            cur.close()


async def test_asyncpg_extended_and_binary(proxy: Proxy) -> None:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, database="postgres", ssl=False
    )
    try:
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
        rows = await conn.fetch("SELECT g, g::text AS t, now() AS ts FROM generate_series(1, 50) g")
        assert [r["g"] for r in rows] == list(range(1, 51))
        stmt = await conn.prepare("SELECT $1::text || 'x'")
        assert [await stmt.fetchval(str(i)) for i in range(5)] == [f"{i}x" for i in range(5)]
        await conn.execute("CREATE TEMP TABLE a1 (id int, v text)")
        await conn.executemany("INSERT INTO a1 VALUES ($1, $2)", [(i, str(i)) for i in range(10)])
        async with conn.transaction():
            ids = [r["id"] async for r in conn.cursor("SELECT id FROM a1 ORDER BY id", prefetch=3)]
            assert ids == list(range(10))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="TEST-DROP"):
            await conn.execute("DROP TABLE a1")
        assert await conn.fetchval("SELECT count(*) FROM a1") == 10
    finally:
        await conn.close()


async def test_asyncpg_executemany_longer_than_the_pending_limit(proxy: Proxy) -> None:
    """asyncpg pipelines executemany (Bind/Execute per row, one Sync): 3,000 rows are 6,000
    messages, more than the relay keeps in flight; the rest must follow as answers drain."""
    conn = await asyncpg.connect(
        host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, database="postgres", ssl=False
    )
    try:
        await conn.execute("CREATE TEMP TABLE many (i int)")
        rows = [(i,) for i in range(3000)]
        try:
            await asyncio.wait_for(conn.executemany("INSERT INTO many VALUES ($1)", rows), 60)
        except TimeoutError:
            conn.terminate()  # a graceful close would wait on the stuck pipeline too
            pytest.fail("the pipeline stalled in the proxy")
        assert await conn.fetchval("SELECT count(*) FROM many") == 3000
    finally:
        if not conn.is_closed():
            await conn.close()


def test_psql_script_and_multi_statement(proxy: Proxy) -> None:
    r = run_tool(
        [pg_tool("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", proxy.dsn(), "-c", "SELECT 40 + 2; SELECT 'ok'"],
        password=PASSWORD,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok"] or r.stdout.split() == ["42", "ok"]
    r = run_tool(
        [pg_tool("psql"), "-X", "-A", "-t", proxy.dsn(), "-c", "SELECT 1; DROP TABLE nothing; SELECT 2"],
        password=PASSWORD,
    )
    assert r.returncode != 0
    assert "42501" in r.stderr or "TEST-DROP" in r.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_modes(proxy: Proxy, pgbench_db: str, mode: str) -> None:
    r = run_tool(
        [
            pg_tool("pgbench"),
            "-n",
            "-S",
            "-M",
            mode,
            "-c",
            "2",
            "-T",
            "2",
            "-h",
            "127.0.0.1",
            "-p",
            str(proxy.port),
            "-U",
            PERSON,
            pgbench_db,
        ],
        password=PASSWORD,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "number of failed transactions: 0" in r.stdout
    tps = [line for line in r.stdout.splitlines() if line.startswith("tps")]
    assert tps, r.stdout


def test_pgbench_tpcb_writes(proxy: Proxy, pgbench_db: str) -> None:
    r = run_tool(
        [
            pg_tool("pgbench"),
            "-n",
            "-M",
            "prepared",
            "-c",
            "2",
            "-t",
            "50",
            "-h",
            "127.0.0.1",
            "-p",
            str(proxy.port),
            "-U",
            PERSON,
            pgbench_db,
        ],
        password=PASSWORD,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "number of transactions actually processed: 100/100" in r.stdout


def test_tls_required_and_used(tls_proxy: Proxy, pgbench_db: str) -> None:
    with tls_proxy.connect(sslmode="verify-ca") as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 7").fetchone() == (7,)
    with pytest.raises(psycopg.OperationalError, match="requires an SSL connection"):
        tls_proxy.connect(sslmode="disable")
    for mode in ("simple", "prepared"):
        r = run_tool(
            [
                pg_tool("pgbench"),
                "-n",
                "-S",
                "-M",
                mode,
                "-T",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                str(tls_proxy.port),
                "-U",
                PERSON,
                pgbench_db,
            ],
            password=PASSWORD,
            sslmode="require",
        )
        assert r.returncode == 0, r.stderr
        assert "number of failed transactions: 0" in r.stdout


async def test_asyncpg_over_tls(tls_proxy: Proxy) -> None:
    assert tls_proxy.ca_file is not None
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=tls_proxy.port,
        user=PERSON,
        password=PASSWORD,
        database="postgres",
        ssl=ssl_context_for(tls_proxy.ca_file),
    )
    try:
        assert await conn.fetchval("SELECT $1::int", 3) == 3
    finally:
        await conn.close()


def _backend_sessions(proxy: Proxy) -> int:
    with proxy.admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND application_name <> 'sqlbastion-catalog'",
            (proxy.server.service_user,),
        ).fetchone()
        assert row is not None
        return int(str(row[0]))


def test_authentication_failures_look_the_same(proxy: Proxy) -> None:
    before = _backend_sessions(proxy)
    messages = []
    for user, password in (
        (PERSON, "wrong"),
        ("nobody", "whatever"),
        (OUTSIDER, OUTSIDER_PASSWORD),  # right password, refused at admission
    ):
        with pytest.raises(psycopg.OperationalError) as info:
            proxy.connect(user=user, password=password)
        messages.append(str(info.value).replace(user, "<user>"))
    assert len(set(messages)) == 1
    assert 'password authentication failed for user "<user>"' in messages[0]
    assert _backend_sessions(proxy) <= before
    reasons = [e["reason"] for e in proxy.audit.of_kind("auth_failed")][-3:]
    assert reasons == ["bad_credentials", "bad_credentials", "network"]


def test_refused_startup_parameters(proxy: Proxy) -> None:
    with pytest.raises(psycopg.OperationalError, match='startup parameter "options"'):
        psycopg.connect(proxy.dsn() + " options='-c search_path=evil'")
    with pytest.raises(psycopg.OperationalError, match="client_encoding"):
        psycopg.connect(proxy.dsn() + " client_encoding=SJIS")
    with pytest.raises(psycopg.OperationalError, match='startup parameter "replication"'):
        psycopg.connect(proxy.dsn() + " replication=database")
    refusals = [e["reason"] for e in proxy.audit.of_kind("auth_failed")][-3:]
    assert refusals == ["protocol", "protocol", "protocol"]
    with psycopg.connect(proxy.dsn() + " application_name=bastion-test client_encoding=LATIN1") as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("bastion-test",)
        assert conn.execute("SHOW client_encoding").fetchone() == ("LATIN1",)


def test_sslrequest_followed_by_plain_bytes_is_refused(proxy: Proxy) -> None:
    import socket
    import struct

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        startup = struct.pack("!ii", 8, 80877103)
        stuffed = struct.pack("!i", 196608) + b"user\x00alice\x00\x00"
        s.sendall(startup + struct.pack("!i", len(stuffed) + 4) + stuffed)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert b"S" not in data[:1]
    assert b"08P01" in data


def test_unknown_parameters_are_dropped(tmp_path: Path, proxy: Proxy) -> None:
    with psycopg.connect(proxy.dsn() + " connect_timeout=5", autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (proxy.server.service_user,)
