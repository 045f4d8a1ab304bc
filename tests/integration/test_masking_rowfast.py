"""Whole masked tables through the proxies: every row masked exactly as the catalogue says, no canary.

The compiled row rewriter (``masking.rows``) takes each received chunk's run of
rows; these scans cross hundreds of reads with rows split across them, mix
ASCII values done in C (mobile, id_card, email) with values it hands to the
Python maskers (Chinese names, NULL e-mails). Each proxied row is compared
with the direct row masked by the catalogue's own text functions, and the scan
is repeated with the compiled path switched off: the client must see the same
thing both ways, and no form of the canary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import mysql.connector
import psycopg
import pymysql
import pytest
from tests.integration.masking_support import (
    PASSWORDS,
    MaskingProxy,
    RecordingRelay,
    canary_values,
    find_leaks,
    run_masking_proxy,
)

from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.masking.functions import build_function
from sqlbastion.proxy.mysql import results as mysql_results
from sqlbastion.proxy.postgres import relay as pg_relay

pytestmark = pytest.mark.integration

SCAN = "SELECT id, name, mobile, id_card, email, city FROM customers ORDER BY id"
DIRECT = "SELECT id, name, mobile, id_card, email, city FROM customers ORDER BY id"
MASKS = {1: "chinese_name", 2: "mobile", 3: "id_card", 4: "email"}  # the developer role's functions
Row = tuple[Any, ...]


def expected(rows: list[Row]) -> list[Row]:
    """The direct rows masked with the catalogue's text functions (the developer role's masks)."""
    functions = {i: build_function(name) for i, name in MASKS.items()}
    out = []
    for row in rows:
        masked = list(row)
        for i, f in functions.items():
            value = row[i]
            masked[i] = None if value is None else f.text(str(value))
        out.append(tuple(None if v is None else str(v) for v in masked))
    return out


@contextmanager
def per_row_path(enabled: bool) -> Iterator[None]:
    """With ``enabled``, the relays' compiled path is switched off (the per-row path takes every row)."""
    if not enabled:
        yield
        return
    with (
        mock.patch.object(pg_relay, "program_for", return_value=None),
        mock.patch.object(mysql_results, "program_for", return_value=None),
    ):
        yield


@pytest.fixture(scope="module")
def proxy(
    sample_bank: LoadedBank,
    postgres_server: ServerInfo,
    mariadb_server: ServerInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MaskingProxy]:
    yield from run_masking_proxy(
        tmp_path_factory.mktemp("masking-rowfast"), postgres=postgres_server, mariadb=mariadb_server
    )


def _pg_direct(server: ServerInfo) -> list[Row]:
    with psycopg.connect(
        host=server.host, port=server.port, user=server.admin_user, password=server.admin_password, dbname="bank"
    ) as conn:
        return conn.execute(DIRECT).fetchall()


def _my_direct(server: ServerInfo) -> list[Row]:
    conn = pymysql.connect(
        host=server.host,
        port=server.port,
        user=server.admin_user,
        password=server.admin_password,
        database="bank",
        charset="utf8mb4",
    )
    try:
        with conn.cursor() as cur:
            cur.execute(DIRECT)
            return list(cur.fetchall())
    finally:
        conn.close()


def _pg_scan(port: int, sql: str = SCAN) -> list[Row]:
    dsn = f"host=127.0.0.1 port={port} user=dev password={PASSWORDS['dev']} dbname=bank sslmode=disable"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(sql.encode()).fetchall()
    return [tuple(None if v is None else str(v) for v in r) for r in rows]


def _my_scan(port: int, sql: str = SCAN) -> list[Row]:
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="dev",
        password=PASSWORDS["dev"],
        database="bank",
        charset="utf8mb4",
        connect_timeout=10,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(None if v is None else str(v) for v in r) for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.mark.parametrize("per_row", [False, True], ids=["compiled", "per-row"])
def test_postgres_whole_table_masked_row_by_row(
    proxy: MaskingProxy, sample_bank: LoadedBank, postgres_server: ServerInfo, per_row: bool
) -> None:
    want = expected(_pg_direct(postgres_server))
    assert len(want) >= 10_000
    relay = RecordingRelay(proxy.ports["pg"])
    try:
        with per_row_path(per_row):
            got = _pg_scan(relay.port)
        assert got == want
        assert not find_leaks(relay.received(), canary_values(sample_bank.canary))
    finally:
        relay.close()


@pytest.mark.parametrize("per_row", [False, True], ids=["compiled", "per-row"])
def test_mysql_whole_table_masked_row_by_row(
    proxy: MaskingProxy, sample_bank: LoadedBank, mariadb_server: ServerInfo, per_row: bool
) -> None:
    want = expected(_my_direct(mariadb_server))
    assert len(want) >= 10_000
    relay = RecordingRelay(proxy.ports["my"])
    try:
        with per_row_path(per_row):
            got = _my_scan(relay.port)
        assert got == want
        assert not find_leaks(relay.received(), canary_values(sample_bank.canary))
    finally:
        relay.close()


def _my_prepared_scan(port: int) -> list[Row]:
    """Binary-protocol rows (COM_STMT_EXECUTE) through mysql-connector's prepared cursor."""
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=port,
        user="dev",
        password=PASSWORDS["dev"],
        database="bank",
        connection_timeout=10,
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(SCAN + " LIMIT ?", (20_000,))
        rows = cur.fetchall()
        cur.close()
    finally:
        conn.close()
    return [
        tuple(None if v is None else v.decode() if isinstance(v, bytes | bytearray) else str(v) for v in r)
        for r in rows
    ]


@pytest.mark.parametrize("per_row", [False, True], ids=["compiled", "per-row"])
def test_mysql_prepared_whole_table_masked_row_by_row(
    proxy: MaskingProxy, sample_bank: LoadedBank, mariadb_server: ServerInfo, per_row: bool
) -> None:
    want = expected(_my_direct(mariadb_server))
    relay = RecordingRelay(proxy.ports["my"])
    try:
        with per_row_path(per_row):
            got = _my_prepared_scan(relay.port)
        assert got == want
        assert not find_leaks(relay.received(), canary_values(sample_bank.canary))
    finally:
        relay.close()


def test_large_masked_scans_through_both_proxies_agree(proxy: MaskingProxy) -> None:
    """The same statement, through PostgreSQL and MySQL: the same masked values."""
    pg = _pg_scan(proxy.ports["pg"], SCAN + " LIMIT 3000")
    my = _my_scan(proxy.ports["my"], SCAN + " LIMIT 3000")
    assert pg == my
