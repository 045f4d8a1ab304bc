"""Packet-level conversations with sqlbastion: byte-by-byte clients, cursors, re-authorisation.

The test client is built from sqlbastion's own sans-IO codec and a blocking socket,
so it can do what libraries do not: send one byte at a time, open a cursor with
COM_STMT_EXECUTE and read it with COM_STMT_FETCH, pipeline packets.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from tests.integration.mysql_support import (
    PASSWORD,
    PERSON,
    RAW_CLIENT_CAPS,
    Proxy,
    RawClient,
    prepare_test_database,
    run_proxy,
)

from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import Capability, FieldType, ServerStatus
from sqlbastion.proxy.mysql.errors import MySQLProtocolError
from sqlbastion.proxy.mysql.framing import PacketFramer, frame
from sqlbastion.proxy.mysql.packets import (
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
)
from sqlbastion.proxy.mysql.rows import decode_binary_row

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prepare_test_database(mariadb_server)
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-raw"), with_tls=False)


def test_byte_by_byte_client(proxy: Proxy) -> None:
    c = RawClient(proxy.port, byte_by_byte=True)
    try:
        p = c.command(b"\x03SELECT name FROM t WHERE id = 2")
        assert p.payload == b"\x01"
        c.read_result(p)
        blocked = c.command(b"\x03DROP TABLE t")
        assert ErrPacket.decode(blocked.payload).errno == 1227
        assert c.command(b"\x0e").payload[0] == 0  # COM_PING
    finally:
        c.close()


def test_pipelined_commands(proxy: Proxy) -> None:
    c = RawClient(proxy.port)
    try:
        c.sock.sendall(frame(0, b"\x0e")[0] + frame(0, b"\x03DROP TABLE t")[0] + frame(0, b"\x0e")[0])
        assert c.read().payload[0] == 0
        assert ErrPacket.decode(c.read().payload).errno == 1227
        assert c.read().payload[0] == 0
    finally:
        c.close()


def test_cursor_fetch_is_masked(proxy: Proxy) -> None:
    c = RawClient(proxy.port)
    try:
        stmt = c.prepare("SELECT id, secret FROM t ORDER BY id")
        sid = stmt.statement_id.to_bytes(4, "little")
        # COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY (page_protocol_com_stmt_execute).
        first = c.command(b"\x17" + sid + b"\x01" + (1).to_bytes(4, "little"))
        cols, rows, status = c.read_result(first, binary=True)
        assert status & ServerStatus.CURSOR_EXISTS
        assert rows == []
        assert [col.type for col in cols] == [FieldType.LONG, FieldType.VAR_STRING]
        c.send(0, b"\x1c" + sid + (10).to_bytes(4, "little"))  # COM_STMT_FETCH 10 rows
        fetched = []
        while True:
            p = c.read()
            if p.payload[0] == 0xFE and len(p.payload) < 9:
                break
            fetched.append(decode_binary_row(p.payload, [col.type for col in cols]))
        assert [r[1] for r in fetched] == [b"***", None, b"***"]
        assert [int.from_bytes(r[0] or b"", "little") for r in fetched] == [1, 2, 3]
        bad = c.command(b"\x1c" + (999).to_bytes(4, "little") + (1).to_bytes(4, "little"))
        assert ErrPacket.decode(bad.payload).errno == 1243
    finally:
        c.close()


def test_execute_reauthorised_after_use(proxy: Proxy) -> None:
    c = RawClient(proxy.port)
    try:
        stmt = c.prepare("SELECT 'reauth-probe'")
        sid = stmt.statement_id.to_bytes(4, "little")
        execute = b"\x17" + sid + b"\x00" + (1).to_bytes(4, "little")
        c.read_result(c.command(execute), binary=True)
        before = len(proxy.engine.contexts_for("reauth-probe"))
        c.read_result(c.command(execute), binary=True)
        assert len(proxy.engine.contexts_for("reauth-probe")) == before  # decision reused
        assert c.command(b"\x02mysql").payload[0] == 0  # COM_INIT_DB changes the session state
        c.read_result(c.command(execute), binary=True)
        contexts = proxy.engine.contexts_for("reauth-probe")
        assert len(contexts) == before + 1
        assert contexts[-1].database == "mysql"
        events: list[dict[str, object]] = []
        for _ in range(100):  # the audit event follows the result by a moment
            events = [e for e in proxy.audit.of_kind("statement") if e["sql_text"] == "SELECT 'reauth-probe'"]
            if len(events) == 4:
                break
            time.sleep(0.02)
        assert len({e["event_id"] for e in events}) == len(events) == 4  # prepare + 3 executes
    finally:
        c.close()


def test_unknown_statement_and_long_data_ids(proxy: Proxy) -> None:
    c = RawClient(proxy.port)
    try:
        err = c.command(b"\x17" + (4242).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little"))
        assert ErrPacket.decode(err.payload).errno == 1243
        c.send(0, b"\x18" + (4242).to_bytes(4, "little") + b"\x00\x00data")  # no reply expected
        c.send(0, b"\x19" + (4242).to_bytes(4, "little"))
        assert c.command(b"\x0e").payload[0] == 0
    finally:
        c.close()


def test_ok_packets_keep_the_clients_format(proxy: Proxy) -> None:
    # The client did not negotiate CLIENT_SESSION_TRACK; the backend did: the OK is rewritten.
    c = RawClient(proxy.port)
    try:
        p = c.command(b"\x03USE mysql")
        ok = OkPacket.decode(p.payload, RAW_CLIENT_CAPS)
        assert not ok.status & ServerStatus.SESSION_STATE_CHANGED
        assert ok.info == b""
    finally:
        c.close()


def test_unknown_database_at_connect(proxy: Proxy) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(database="no_such_db_here")
    assert info.value.args[0] == 1049


def test_plaintext_after_ssl_request_is_not_authenticated(mariadb_server: ServerInfo, tmp_path: Path) -> None:
    # A client that sends the SSLRequest and then its HandshakeResponse in clear text (a downgrade
    # or injection attempt) gets no session: the bytes go into the TLS handshake, which fails.
    gen = run_proxy(mariadb_server, tmp_path / "tls", with_tls=True)
    proxy = next(gen)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            framer = PacketFramer()
            framer.receive_data(sock.recv(4096))
            greeting = framer.next_packet()
            assert greeting is not None
            nonce = HandshakeV10.decode(greeting.payload).auth_data
            caps = RAW_CLIENT_CAPS | int(Capability.SSL)
            ssl_request = caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x2d" + b"\x00" * 23
            resp = HandshakeResponse(
                capabilities=RAW_CLIENT_CAPS,
                max_packet=1 << 24,
                charset=45,
                user=PERSON.encode(),
                auth_response=auth.native_scramble(PASSWORD.encode(), nonce),
                auth_plugin=auth.NATIVE,
            )
            sock.sendall(frame(1, ssl_request)[0] + frame(2, resp.encode())[0])
            reply = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(4096):
                    reply += chunk
            # Whatever came back (a TLS alert, or nothing), it is never a MySQL OK packet.
            check = PacketFramer()
            check.receive_data(reply)
            with contextlib.suppress(MySQLProtocolError):
                while (p := check.next_packet()) is not None:
                    assert p.payload[:1] != b"\x00"
        assert proxy.audit.of_kind("auth_failed")[-1]["reason"] == "protocol"
        assert not [e for e in proxy.audit.of_kind("connection_opened") if e["person"] == PERSON]
    finally:
        with contextlib.suppress(StopIteration):
            gen.send(None)


def test_garbage_clients_do_not_disturb_others(proxy: Proxy) -> None:
    import random

    rng = random.Random(7)
    with proxy.connect() as bystander:
        for i in range(40):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                sock.recv(4096)
                junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                if i % 2:
                    junk = frame(1, junk)[0]  # well framed, nonsense inside
                with contextlib.suppress(OSError):
                    sock.sendall(junk)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(4096):
                        pass
        with bystander.cursor() as cur:
            cur.execute("SELECT 11")
            assert cur.fetchone() == (11,)
