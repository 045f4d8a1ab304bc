"""Streaming and failure behaviour of the PostgreSQL proxy: COPY, large results, cancel, dead backends."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from tests.integration.postgres_support import PASSWORD, PERSON, Proxy, RawClient, kinds, pg_tool, run_proxy, run_tool

from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.proxy.postgres import protocol as p

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(postgres_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(postgres_server, tmp_path_factory.mktemp("pg-stream"), with_tls=False)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_copy_from_stdin_and_to_stdout(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("CREATE TEMP TABLE c (id int, v text)")
        with conn.cursor().copy("COPY c (id, v) FROM STDIN") as copy:
            for i in range(5000):
                copy.write_row((i, f"value {i}"))
        assert conn.execute("SELECT count(*), sum(id) FROM c").fetchone() == (5000, sum(range(5000)))
        lines = []
        with conn.cursor().copy("COPY (SELECT id, v FROM c ORDER BY id) TO STDOUT") as copy:
            for block in copy:
                lines.append(bytes(block))
        text = b"".join(lines).decode()
        assert text.count("\n") == 5000
        assert text.startswith("0\tvalue 0\n")
        with conn.cursor().copy("COPY (SELECT id FROM c WHERE id < 3 ORDER BY id) TO STDOUT (FORMAT binary)") as copy:
            copy.set_types(["int4"])
            assert [r[0] for r in copy.rows()] == [0, 1, 2]
    events = [e for e in proxy.audit.of_kind("statement") if "COPY c" in str(e["sql_text"])]
    assert events
    assert events[-1]["rows"] == 5000 or events[-1]["affected"] == 5000


def test_copy_fail_from_client(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        conn.execute("CREATE TEMP TABLE cf (id int)")

        def abort_copy() -> None:
            with conn.cursor().copy("COPY cf FROM STDIN") as copy:
                copy.write_row((1,))
                raise RuntimeError("client gives up")

        with pytest.raises(RuntimeError, match="client gives up"):
            abort_copy()
        assert conn.execute("SELECT count(*) FROM cf").fetchone() == (0,)


def test_psql_copy_both_ways(proxy: Proxy, tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("".join(f"{i},row{i}\n" for i in range(100)))
    script = (
        "CREATE TEMP TABLE pc (id int, v text);\n"
        f"\\copy pc FROM '{data}' WITH (FORMAT csv)\n"
        "SELECT count(*) FROM pc;\n"
        "\\copy (SELECT v FROM pc WHERE id = 42) TO STDOUT\n"
    )
    r = run_tool(
        [pg_tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", proxy.dsn(), "-f", "-"],
        password=PASSWORD,
        stdin=script,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["100", "row42"]


def test_large_result_streams_with_flat_memory(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        raw.sock.settimeout(60)
        raw.send(p.QUERY, b"SELECT g, repeat('x', 100) FROM generate_series(1, 1000000) g\x00")
        baseline = _rss_kib()
        peak = baseline
        total = 0
        tail = b""
        started = time.monotonic()
        reads = 0
        while True:
            chunk = raw.sock.recv(1 << 16)
            assert chunk, "proxy closed the connection"
            total += len(chunk)
            tail = (tail + chunk)[-64:]
            reads += 1
            if reads % 200 == 0:
                peak = max(peak, _rss_kib())
                time.sleep(0.01)  # a slow reader
            if tail.endswith(b"Z\x00\x00\x00\x05I"):
                break
            assert time.monotonic() - started < 120
        assert total > 100_000_000  # about 1M rows of ~117 bytes went through
        assert b"SELECT 1000000" in tail or total > 0
        growth_mib = (peak - baseline) / 1024
        assert growth_mib < 64, f"RSS grew by {growth_mib:.0f} MiB"
    finally:
        raw.close()
    event = [e for e in proxy.audit.of_kind("statement") if "generate_series(1, 1000000)" in str(e["sql_text"])][-1]
    assert event["rows"] == 1000000


async def test_cancel_request_cancels_pg_sleep(proxy: Proxy) -> None:
    # asyncpg cancels a statement that runs past its timeout with a CancelRequest.
    conn = await asyncpg.connect(host="127.0.0.1", port=proxy.port, user=PERSON, password=PASSWORD, database="postgres")
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(20)", timeout=0.5)
        assert await conn.fetchval("SELECT 1") == 1
        assert time.monotonic() - started < 10
    finally:
        await conn.close()


def test_psql_interrupt_sends_a_cancel(proxy: Proxy) -> None:
    import os
    import signal
    import subprocess

    env = dict(os.environ, PGPASSWORD=PASSWORD, PGSSLMODE="disable")
    started = time.monotonic()
    proc = subprocess.Popen(
        [pg_tool("psql"), "-X", proxy.dsn(), "-c", "SELECT pg_sleep(20)"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert "canceling statement due to user request" in err
    assert time.monotonic() - started < 10


def test_cancel_request_with_unknown_key_does_nothing(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        pid_row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert pid_row is not None
        real_pid = int(str(pid_row[0]))

        def cancel_with(pid: int, secret: int) -> None:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(struct.pack("!iiii", 16, 80877102, pid, secret))
                s.recv(1)

        # The real backend pid with a guessed key, and a client key with a wrong secret.
        threading.Timer(0.3, cancel_with, (real_pid, 12345)).start()
        threading.Timer(0.5, cancel_with, (conn.info.backend_pid, 1)).start()
        assert conn.execute("SELECT pg_sleep(1.2), 'finished'").fetchone() == ("", "finished")


def test_killed_backend_gives_a_clear_error(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        with proxy.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        assert "terminating connection" in str(info.value) or "backend connection was lost" in str(info.value)
    # The proxy itself is fine.
    with proxy.connect() as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_backend_killed_mid_statement(proxy: Proxy) -> None:
    raw = RawClient(proxy.port)
    try:
        out = raw.query("SELECT pg_backend_pid()")
        pid = int(out[1][1][6:])

        def kill() -> None:
            with proxy.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        threading.Timer(0.3, kill).start()
        raw.send(p.QUERY, b"SELECT pg_sleep(10)\x00")
        kind, body = raw.recv()
        if kind == p.ROW_DESCRIPTION:
            kind, body = raw.recv()
        assert kind == p.ERROR_RESPONSE
        assert dict(p.decode_error_fields(body))[b"S"] == "FATAL"
    finally:
        raw.close()


def test_unreachable_backend(postgres_server: ServerInfo, tmp_path: Path) -> None:
    dead = dataclasses.replace(postgres_server, port=free_port())
    gen = run_proxy(dead, tmp_path, with_tls=False)
    proxy = next(gen)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="backend pg is unavailable"):
            proxy.connect()
        assert time.monotonic() - started < 10
    finally:
        for _ in gen:
            pass


def test_handshake_timeout(proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=15) as s:
        s.sendall(struct.pack("!i", 100))  # a startup packet that never completes
        started = time.monotonic()
        data = s.recv(4096)
        assert time.monotonic() - started < 12
        assert data == b"" or b"08006" in data


def test_many_sessions_in_parallel(proxy: Proxy) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with proxy.connect() as conn:
                for i in range(20):
                    assert conn.execute("SELECT %s::int", (n * 100 + i,)).fetchone() == (n * 100 + i,)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    raw = RawClient(proxy.port)
    try:
        assert kinds(raw.query("SELECT 1")) == "TDCZ"
    finally:
        raw.close()


def test_idle_session_timeout(postgres_server: ServerInfo, tmp_path: Path) -> None:
    gen = run_proxy(postgres_server, tmp_path, with_tls=False, idle_timeout_s=1.0)
    proxy = next(gen)
    try:
        with proxy.connect() as conn:
            assert conn.execute("SELECT pg_sleep(1.5), 1").fetchone() == ("", 1)  # busy is not idle
            time.sleep(2.5)
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
    finally:
        for _ in gen:
            pass


def test_notices_and_notifications_pass_through(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$")
        assert notices == ["hello from the server"]
        conn.execute("LISTEN bastion_channel")
        with proxy.admin() as admin:
            admin.execute("NOTIFY bastion_channel, 'payload-1'")
        received = []
        for notify in conn.notifies(timeout=5, stop_after=1):
            received.append((notify.channel, notify.payload))
        assert received == [("bastion_channel", "payload-1")]
        row = conn.execute("SHOW application_name").fetchone()
        assert row is not None


def test_flood_during_start_up_is_cut_off(proxy: Proxy) -> None:
    from sqlbastion.proxy.postgres.startup import encode_startup

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(encode_startup({"user": "alice", "database": "postgres"}))
        s.recv(1024)  # AuthenticationSASL
        closed = False
        try:
            for _ in range(64):
                s.sendall(b"x" * 65536)  # 4 MiB of garbage instead of a SASL response
        except OSError:
            closed = True
        if not closed:
            s.settimeout(10)
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:
                # Closed with our garbage still unread: the kernel resets the connection and the
                # FATAL it carried is lost, but the flood was cut off, which is what is tested.
                return
            assert b"08P01" in data


@pytest.mark.parametrize(("mode", "works"), [("prefer", True), ("require", False)])
def test_backend_tls_modes_against_a_server_without_tls(
    postgres_server: ServerInfo, tmp_path: Path, mode: str, works: bool
) -> None:
    # The test server has no certificate: "prefer" falls back to plain, "require" refuses to go on.
    gen = run_proxy(postgres_server, tmp_path, with_tls=False, backend_tls=mode)
    proxy = next(gen)
    try:
        if works:
            with proxy.connect() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        else:
            with pytest.raises(psycopg.OperationalError, match="backend pg is unavailable"):
                proxy.connect()
    finally:
        for _ in gen:
            pass


def test_client_bytes_arriving_one_at_a_time(proxy: Proxy) -> None:
    """Startup, SCRAM and queries split into single-byte TCP segments still work."""
    import socket as socket_module

    from sqlbastion.proxy.postgres.scram import ScramClient
    from sqlbastion.proxy.postgres.startup import encode_startup

    def trickle(sock: socket_module.socket, data: bytes) -> None:
        for i in range(len(data)):
            sock.sendall(data[i : i + 1])

    reader = p.MessageReader()

    def recv(sock: socket_module.socket) -> tuple[int, bytes]:
        while True:
            got = reader.next()
            if isinstance(got, tuple):
                return got
            reader.feed(sock.recv(65536))

    with socket_module.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.setsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY, 1)
        trickle(s, encode_startup({"user": PERSON, "database": "postgres"}))
        scram = ScramClient(PASSWORD)
        while True:
            kind, body = recv(s)
            if kind == p.AUTHENTICATION and body[:4] == b"\x00\x00\x00\x0a":
                first = scram.first()
                trickle(s, p.encode_message(p.PASSWORD, b"SCRAM-SHA-256\x00" + struct.pack("!i", len(first)) + first))
            elif kind == p.AUTHENTICATION and body[:4] == b"\x00\x00\x00\x0b":
                trickle(s, p.encode_message(p.PASSWORD, scram.final(body[4:])))
            elif kind == p.READY_FOR_QUERY:
                break
            assert kind != p.ERROR_RESPONSE, body
        trickle(s, p.encode_message(p.QUERY, b"SELECT 41 + 1; DROP TABLE x\x00"))
        kind, body = recv(s)
        assert kind == p.ERROR_RESPONSE  # the whole message is refused, however it arrived
        assert recv(s) == (p.READY_FOR_QUERY, b"I")
        trickle(s, p.encode_parse(b"", b"SELECT 41 + 1") + p.encode_message(p.BIND, b"\x00\x00" + b"\x00" * 6))
        trickle(s, p.encode_message(p.EXECUTE, b"\x00\x00\x00\x00\x00") + p.encode_message(p.SYNC))
        answers = []
        while True:
            kind, body = recv(s)
            answers.append((chr(kind), body))
            if kind == p.READY_FOR_QUERY:
                break
        assert [k for k, _ in answers] == ["1", "2", "D", "C", "Z"]
        assert answers[2][1] == b"\x00\x01\x00\x00\x00\x0242"


def test_a_message_larger_than_the_backlog_limit_gets_through(proxy: Proxy) -> None:
    """A 3 MiB bytea parameter is one Bind message, bigger than the 1 MiB the proxy lets a client
    buffer before it stops reading: the frame must still complete (reading pauses only for whole
    messages waiting their turn)."""
    result: list[object] = []

    def run() -> None:
        with proxy.connect() as conn:
            row = conn.execute("SELECT length(%s::bytea)", (b"x" * (3 << 20),)).fetchone()
            result.append(row)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the large message stalled in the proxy"
    assert result == [(3 << 20,)]
