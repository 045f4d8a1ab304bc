"""Unmodified tools through sqlbastion: the mariadb CLI, sysbench, mysql-connector's C extension."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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


# mysql-connector's C extension holds the GIL in some calls (mysql_autocommit, made right after
# login): a client in this process would stop the proxy's thread until the reply that thread must
# send, so the C-extension client runs in a process of its own (docs/mysql.md).
C_EXTENSION_CLIENT = """
import json, sys
import mysql.connector
from mysql.connector.connection_cext import CMySQLConnection
port, user, password, mode, plugin = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
extra = {"auth_plugin": plugin} if plugin else {}
conn = mysql.connector.connect(
    host="127.0.0.1", port=port, user=user, password=password, use_pure=False,
    ssl_disabled=mode != "tls", connection_timeout=20, **extra,
)
assert isinstance(conn, CMySQLConnection), type(conn)
out = {"autocommit": conn.autocommit}
conn.autocommit = True
cur = conn.cursor()
cur.execute("SELECT name FROM proxytest.t WHERE id = 2")
out["text"] = [list(r) for r in cur.fetchall()]
cur.close()
cur = conn.cursor(prepared=True)
cur.execute("SELECT id, name FROM proxytest.t WHERE id >= ? ORDER BY id", (2,))
out["prepared"] = [list(r) for r in cur.fetchall()]
cur.close()
try:
    conn.cursor().execute("DROP TABLE proxytest.t")
except mysql.connector.Error as exc:
    out["blocked"] = exc.errno
conn.ping(reconnect=False)
conn.commit()
conn.close()
print(json.dumps(out))
"""


@pytest.mark.parametrize(
    ("mode", "user", "password", "plugin"),
    [
        ("plain", PERSON, PASSWORD, ""),
        ("tls", PERSON, PASSWORD, ""),
        # libmysqlclient sends no auth data for a plugin other than the greeting's and waits
        # for an AuthSwitchRequest: the caching_sha2 fast path after the switch, and the
        # same for a person with the mysql_native verifier (switched to it).
        ("plain", SHA2_PERSON, SHA2_PASSWORD, "caching_sha2_password"),
        ("tls", SHA2_PERSON, SHA2_PASSWORD, "caching_sha2_password"),
        ("plain", PERSON, PASSWORD, "caching_sha2_password"),
    ],
)
def test_connector_c_extension(proxy: Proxy, mode: str, user: str, password: str, plugin: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", C_EXTENSION_CLIENT, str(proxy.port), user, password, mode, plugin],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["text"] == [["two"]]
    assert out["prepared"] == [[2, "two"], [3, "three"]]
    assert out["blocked"] == 1227


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
