"""Result sets through sqlbastion: masking (text and binary rows), refusal, streaming, failures."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.cursors
import pytest
from tests.integration.mysql_support import PASSWORD, PERSON, Proxy, prepare_test_database, run_proxy

from sqlbastion.devtools.servers import ServerInfo, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prepare_test_database(mariadb_server)
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-results"))


def test_masked_text_rows(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        cur.execute("SELECT id, secret, name FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "***", "one"), (2, None, "two"), (3, "***", "three"))
        cur.execute("SELECT id, name FROM t ORDER BY id")  # nothing to mask: the fast path
        assert cur.fetchall() == ((1, "one"), (2, "two"), (3, "three"))
    planned = proxy.masker.planned[-2]
    secret = next(c for c in planned if c.name == "secret")
    assert (secret.schema, secret.table, secret.column, secret.type_name) == ("proxytest", "t", "secret", "var_string")
    event = [
        e for e in proxy.audit.of_kind("statement") if e["sql_text"] == "SELECT id, secret, name FROM t ORDER BY id"
    ]
    assert event[-1]["masked_values"] == 3
    assert event[-1]["rows"] == 3


def test_masked_binary_rows(proxy: Proxy) -> None:
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=proxy.port,
        user=PERSON,
        password=PASSWORD,
        database="proxytest",
        ssl_disabled=True,
        use_pure=True,
    )
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, secret, d, n AS secret FROM t WHERE id >= ? ORDER BY id", (1,))
        rows: list[Any] = list(cur.fetchall())
        assert [r[1] for r in rows] == ["***", None, "***"]
        assert [r[3] for r in rows] == [0, 0, None]  # BIGINT masked in place, 8 bytes wide
        assert str(rows[0][2]) == "2024-01-02"  # temporal values re-encoded untouched
        assert rows[1][2] is None
        cur.close()
    finally:
        conn.close()


def test_refused_result_sends_error_and_connection_survives(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT id AS refuse_me, name FROM t")
        assert info.value.args == (1227, "sqlbastion: result refused by the test planner.")
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (3,)


def test_refused_second_result_of_multi_statement(proxy: Proxy) -> None:
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with proxy.connect(database="proxytest", client_flag=flags) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS a; SELECT 2 AS refuse_me; SELECT 3 AS c")
        assert cur.fetchall() == ((1,),)
        with pytest.raises(pymysql.err.OperationalError):
            cur.nextset()
        cur.execute("SELECT 4")
        assert cur.fetchone() == (4,)


def test_backend_errors_withheld_for_sensitive_statements(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT secret FROM t WHERE secret = (SELECT 'a' UNION SELECT 'b')")
        code, text = info.value.args
        assert code == 1242  # the backend's own errno is kept
        assert text.startswith("sqlbastion: backend message withheld (the statement touched sensitive columns).")
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT name FROM t WHERE name = (SELECT 'a' UNION SELECT 'b')")
        assert "Subquery returns more than 1 row" in info.value.args[1]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_million_rows_streamed_with_flat_memory(proxy: Proxy) -> None:
    pid = os.getpid()  # the proxy runs on a thread of this process
    conn = proxy.connect(cursorclass=pymysql.cursors.SSCursor, read_timeout=120)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT seq, REPEAT('r', 100) FROM mysql.seq_1_to_1000000")
            baseline = _rss_kib(pid)
            peak = baseline
            count = 0
            for _row in cur:
                count += 1
                if count % 100_000 == 0:
                    peak = max(peak, _rss_kib(pid))
                    time.sleep(0.05)  # a slow reader
            assert count == 1_000_000
    finally:
        conn.close()
    # ~110 MB of rows went through; the proxy buffered a bounded window of them.
    assert peak - baseline < 64 * 1024, f"RSS grew by {peak - baseline} KiB"
    event = [e for e in proxy.audit.of_kind("statement") if "seq_1_to_1000000" in str(e["sql_text"])][-1]
    assert event["rows"] == 1_000_000


class _CuttingRelay:
    """A TCP relay to the backend that can cut every connection on demand."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen = socket.create_server(("127.0.0.1", 0))
        self.listen_port = self.listen.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listen.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.host, self.port))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self.sockets.clear()

    def close(self) -> None:
        self.cut()
        self.listen.close()


def test_killed_backend_mid_result(mariadb_server: ServerInfo, tmp_path: Path) -> None:
    relay = _CuttingRelay(mariadb_server.host, mariadb_server.port)
    gen = run_proxy(mariadb_server, tmp_path / "cut", backend_port=relay.listen_port, with_tls=False)
    proxy = next(gen)
    try:
        other = proxy.connect()
        conn = proxy.connect(cursorclass=pymysql.cursors.SSCursor, read_timeout=30)
        cur = conn.cursor()
        cur.execute("SELECT seq FROM mysql.seq_1_to_1000000")
        cur.fetchone()
        relay.cut()
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            for _row in cur:
                pass
        assert time.monotonic() - started < 10  # a clear error, not a hang
        assert info.value.args[0] in (2013, 2006)
        conn.close()
        # A new session works again (the relay forwards new connections).
        with proxy.connect() as fresh, fresh.cursor() as fcur:
            fcur.execute("SELECT 5")
            assert fcur.fetchone() == (5,)
        other.close()
    finally:
        relay.close()
        with contextlib.suppress(StopIteration):
            gen.send(None)


def test_backend_unreachable(mariadb_server: ServerInfo, tmp_path: Path) -> None:
    gen = run_proxy(mariadb_server, tmp_path / "down", backend_port=free_port(), with_tls=False)
    proxy = next(gen)
    try:
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect()
        assert time.monotonic() - started < 10
        assert info.value.args[0] == 2003
        assert "unreachable" in info.value.args[1]
    finally:
        with contextlib.suppress(StopIteration):
            gen.send(None)


def test_malformed_command_closes_only_that_session(proxy: Proxy) -> None:
    with proxy.connect() as bystander:
        conn = proxy.connect()
        sock: Any = conn._sock
        sock.sendall(b"\x00\x00\x00\x00")  # an empty command packet
        with pytest.raises(pymysql.err.MySQLError):
            conn._read_packet()
        with bystander.cursor() as cur:
            cur.execute("SELECT 9")
            assert cur.fetchone() == (9,)


def test_warnings_of_sensitive_statements_are_cleared(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        cur.execute("SELECT CAST(name AS SIGNED) FROM t WHERE id = 1")  # not sensitive: warnings stay readable
        cur.execute("SHOW WARNINGS")
        assert any("one" in str(r[2]) for r in cur.fetchall())
        cur.execute("SELECT CAST(secret AS SIGNED) FROM t WHERE id = 1")  # the warning would echo 'hunter2'
        cur.execute("SHOW WARNINGS")
        assert not any("hunter2" in str(r[2]) for r in cur.fetchall())


def test_diagnostics_beside_sensitive_statement_refused(proxy: Proxy) -> None:
    flags = pymysql.constants.CLIENT.MULTI_STATEMENTS
    with proxy.connect(database="proxytest", client_flag=flags) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT CAST(secret AS SIGNED) FROM t WHERE id = 1; SHOW WARNINGS")
        assert info.value.args[0] == 1227
        assert "MYSQL-DIAGNOSTICS" in info.value.args[1]
        cur.execute("SELECT 1; SHOW WARNINGS")  # nothing sensitive: allowed
        assert cur.fetchall() == ((1,),)


def test_graceful_drain(mariadb_server: ServerInfo, tmp_path: Path) -> None:
    gen = run_proxy(mariadb_server, tmp_path / "drain", with_tls=False)
    proxy = next(gen)
    idle = proxy.connect()
    busy = proxy.connect(read_timeout=30)
    result: list[object] = []

    def long_query() -> None:
        with busy.cursor() as cur:
            cur.execute("SELECT SLEEP(1.5), 'finished'")
            result.append(cur.fetchone())

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(0.5)  # the statement is running
    started = time.monotonic()
    with contextlib.suppress(StopIteration):
        gen.send(None)  # stops the proxy: stop accepting, close idle sessions, let the busy one finish
    worker.join(10)
    assert result == [(0, "finished")]  # the running statement completed and its result arrived
    assert time.monotonic() - started < 10
    with pytest.raises(pymysql.err.OperationalError), idle.cursor() as cur:
        cur.execute("SELECT 1")
    with pytest.raises(pymysql.err.OperationalError):
        proxy.connect(connect_timeout=2)
