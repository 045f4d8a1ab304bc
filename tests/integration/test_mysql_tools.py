"""Unmodified tools through sqlbastion: the mariadb CLI, sysbench, mysql-connector's C extension."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pymysql
import pytest
from tests.integration.mysql_support import (
    PASSWORD,
    PERSON,
    SHA2_PASSWORD,
    SHA2_PERSON,
    Proxy,
    prepare_test_database,
    run_proxy,
)

from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prepare_test_database(mariadb_server)
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-tools"))


def _cli() -> str:
    path = shutil.which("mariadb") or shutil.which("mysql")
    assert path, "the mariadb client is installed by scripts/install-deps.sh (mariadb-client)"
    return path


def _run_cli(proxy: Proxy, sql: str, *extra: str, user: str = PERSON, password: str = PASSWORD) -> str:
    result = subprocess.run(
        [_cli(), "-h127.0.0.1", f"-P{proxy.port}", f"-u{user}", f"-p{password}", "--batch", *extra, "-e", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return result.stdout


def test_cli_plain_query(proxy: Proxy) -> None:
    out = _run_cli(proxy, "SELECT name FROM proxytest.t ORDER BY id; SELECT secret FROM proxytest.t WHERE id = 1")
    assert out.splitlines() == ["name", "one", "two", "three", "secret", "***"]


def test_cli_tls_and_caching_sha2_person(proxy: Proxy) -> None:
    assert proxy.ca_file
    out = _run_cli(
        proxy,
        "SELECT 40 + 2",
        "--ssl",
        f"--ssl-ca={proxy.ca_file}",
        "--ssl-verify-server-cert",
        user=SHA2_PERSON,
        password=SHA2_PASSWORD,
    )
    assert out.splitlines()[-1] == "42"


def test_cli_blocked_statement(proxy: Proxy) -> None:
    with pytest.raises(RuntimeError) as info:
        _run_cli(proxy, "DROP DATABASE proxytest")
    assert "ERROR 1227 (42000)" in str(info.value)
    assert "statement blocked by rule TEST-DROP" in str(info.value)


def test_cli_wrong_password(proxy: Proxy) -> None:
    with pytest.raises(RuntimeError) as info:
        _run_cli(proxy, "SELECT 1", password="nope")
    assert "ERROR 1045 (28000)" in str(info.value)


def _sysbench(proxy: Proxy, ps_mode: str) -> str:
    sysbench = shutil.which("sysbench")
    assert sysbench, "sysbench is installed by scripts/install-deps.sh --bench"
    result = subprocess.run(
        [
            sysbench,
            "oltp_read_write",
            "--mysql-host=127.0.0.1",
            f"--mysql-port={proxy.port}",
            f"--mysql-user={PERSON}",
            f"--mysql-password={PASSWORD}",
            "--mysql-db=sbtest_proxy",
            "--tables=1",
            "--table-size=1000",
            "--threads=2",
            "--time=3",
            f"--db-ps-mode={ps_mode}",
            "--db-driver=mysql",
            "run",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def sbtest(proxy: Proxy) -> None:
    with proxy.admin() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS sbtest_proxy")
        cur.execute("CREATE DATABASE sbtest_proxy")
        cur.execute(
            "CREATE TABLE sbtest_proxy.sbtest1 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0,"
            " c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k))"
        )
        cur.execute(
            "INSERT INTO sbtest_proxy.sbtest1 (k, c, pad) SELECT seq % 1000, REPEAT('c', 119), REPEAT('p', 59)"
            " FROM mysql.seq_1_to_1000"
        )


@pytest.mark.parametrize("ps_mode", ["auto", "disable"])
def test_sysbench_oltp_read_write(proxy: Proxy, sbtest: None, ps_mode: str) -> None:
    out = _sysbench(proxy, ps_mode)
    transactions = re.search(r"transactions:\s+(\d+)", out)
    errors = re.search(r"ignored errors:\s+(\d+)", out)
    assert transactions is not None
    assert int(transactions.group(1)) > 10
    assert errors is not None
    # sysbench ignores (and retries) the backend's own deadlocks between its threads; anything
    # sqlbastion broke would be fatal and fail the run above.
    assert int(errors.group(1)) <= int(transactions.group(1)) // 20


def test_connector_c_extension(proxy: Proxy) -> None:
    try:
        import mysql.connector
        from mysql.connector.connection_cext import CMySQLConnection  # noqa: F401  # availability probe
    except ImportError as exc:
        pytest.skip(f"mysql-connector's C extension cannot load on this machine: {exc}")
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, use_pure=False, ssl_disabled=True
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT name FROM proxytest.t WHERE id = 2")
        assert cur.fetchall() == [("two",)]
    finally:
        conn.close()


def test_pymysql_many_short_connections(proxy: Proxy) -> None:
    before = proxy.backend_connection_count()
    for i in range(30):
        with proxy.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT %s", (i,))
            assert cur.fetchone() == (i,)
    # Every backend connection was closed with its client.
    for _ in range(50):
        if proxy.backend_connection_count() <= before:
            break
        __import__("time").sleep(0.1)
    assert proxy.backend_connection_count() <= before
    with pytest.raises(pymysql.err.OperationalError):
        proxy.connect(password="x")
