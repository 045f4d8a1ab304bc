"""The command loop without sockets: forward, relay, audit, and the failure paths.

These tests drive the real ``CommandLoop`` with in-memory transports (the
backend is answered by the test) and check what the client receives, in which
order, and that every statement gets exactly one audit event — also when the
backend or the client goes away mid-result.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tests.protocol.mysql.mysql_codec_support import EOF_CAPS, column, packets, result_set_payloads

from sqlbastion.config import BackendSettings
from sqlbastion.proxy.mysql.channel import BackendConnection, ConnectionClosed, PacketProtocol
from sqlbastion.proxy.mysql.commands import BackendLost, CommandLoop
from sqlbastion.proxy.mysql.framing import PacketFramer, frame
from sqlbastion.proxy.mysql.packets import ErrPacket, StmtPrepareOk
from sqlbastion.proxy.mysql.registry import SessionRegistry
from sqlbastion.proxy.session import ClientInfo, Runtime, Session

ROW = [b"value"]


class _Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []
        self.client: _Transport | None = None
        self.written_at_emit: list[bytes] = []  # what the client had been sent when each event was emitted

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)
        if self.client is not None:
            self.written_at_emit.append(bytes(self.client.data))

    def accepting(self) -> bool:
        return True


class _Transport:
    """Collects writes; closing it tells its protocol in the next loop iteration, as asyncio does."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False
        self.protocol: PacketProtocol | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.aborted

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.aborted and self.protocol is not None and not self.protocol.closed:
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)
        self.aborted = True


class _Pair:
    """A CommandLoop between an in-memory client and an in-memory backend that the test answers."""

    def __init__(self, engine: object | None = None) -> None:
        self.audit = _Audit()
        runtime = Runtime(audit=self.audit)
        if engine is not None:
            runtime = Runtime(engine=cast(Any, engine), audit=self.audit)  # a test engine (DecisionEngine's shape)
        self.client = PacketProtocol()
        self.client_t = _Transport()
        self.client.connection_made(cast(Any, self.client_t))
        self.audit.client = self.client_t
        self.backend = PacketProtocol()
        self.backend_t = _Transport()
        self.backend_t.protocol = self.backend
        self.backend.connection_made(cast(Any, self.backend_t))
        conn = object.__new__(BackendConnection)
        conn.protocol = self.backend
        conn.capabilities = EOF_CAPS
        conn.connection_id = 5
        conn.server_version = "10.11.0-MariaDB"
        conn.tls = False
        settings = BackendSettings(
            name="b", protocol="mysql", listen="127.0.0.1:1", host="127.0.0.1", port=3306, user="u"
        )
        self.session = Session(
            runtime=runtime,
            backend=settings,
            person="alice",
            client=ClientInfo(address="127.0.0.1", port=1, protocol="mysql"),
        )
        self.loop = CommandLoop(
            client=self.client,
            backend=conn,
            session=self.session,
            client_capabilities=EOF_CAPS,
            registry=SessionRegistry(),
            max_statement_bytes=1 << 20,
            idle_timeout_s=3600.0,
        )
        self.task = asyncio.get_running_loop().create_task(self.loop.run())

    def send(self, *payloads: bytes) -> None:
        self.client.data_received(b"".join(frame(0, p)[0] for p in payloads))

    def backend_commands(self) -> list[bytes]:
        f = PacketFramer()
        f.receive_data(bytes(self.backend_t.data))
        out = []
        while (p := f.next_packet()) is not None:
            out.append(p.payload)
        return out

    def client_payloads(self) -> list[bytes]:
        f = PacketFramer()
        f.receive_data(bytes(self.client_t.data))
        out = []
        while (p := f.next_packet()) is not None:
            out.append(p.payload)
        return out

    def statements(self) -> list[dict[str, object]]:
        return [e for e in self.audit.events if e["kind"] == "statement"]


def _result(value: bytes = b"value") -> bytes:
    return packets(result_set_payloads([column("c")], [[value]], caps=EOF_CAPS))


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_text_statement_is_answered_and_audited() -> None:
    pair = _Pair()
    pair.send(b"\x03SELECT c FROM t WHERE id=1")
    await _settle()
    assert pair.backend_commands() == [b"\x03SELECT c FROM t WHERE id=1"]
    assert pair.statements() == []
    pair.backend.data_received(_result())
    assert pair.client_t.data == b"", "the reply waits for the statement's audit event"
    await _settle()
    assert pair.client_t.data == _result()
    [event] = pair.statements()
    assert event["rows"] == 1
    assert event["sql_text"] == "SELECT c FROM t WHERE id=1"
    assert pair.loop.idle
    pair.task.cancel()


async def test_pipelined_commands_wait_for_the_response_in_flight() -> None:
    pair = _Pair()
    pair.send(b"\x03SELECT 1", b"\x03SELECT 2")
    await _settle()
    # The second command is not forwarded while the first response is streaming.
    assert pair.backend_commands() == [b"\x03SELECT 1"]
    pair.backend.data_received(_result(b"one"))
    await _settle()
    assert pair.backend_commands() == [b"\x03SELECT 1", b"\x03SELECT 2"]
    pair.backend.data_received(_result(b"two"))
    await _settle()
    assert pair.client_t.data == _result(b"one") + _result(b"two")
    assert [e["sql_text"] for e in pair.statements()] == ["SELECT 1", "SELECT 2"]
    pair.task.cancel()


async def test_prepared_executes_reuse_the_decision_and_each_gets_an_event() -> None:
    pair = _Pair()
    pair.send(b"\x16SELECT c FROM t WHERE id=?")
    await _settle()
    prep = StmtPrepareOk(statement_id=9, num_columns=1, num_params=0).encode()
    pair.backend.data_received(packets([prep, column("c").encode(), b"\xfe\x00\x00\x02\x00"]))
    await _settle()
    execute = b"\x17" + (9).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little")
    binary = packets(result_set_payloads([column("c")], [[b"v"]], caps=EOF_CAPS, binary=True))
    for _ in range(3):
        pair.send(execute)
        await _settle()
        pair.backend.data_received(binary)
        await _settle()
    events = pair.statements()
    assert len(events) == 4  # the prepare and three executes
    assert len({e["event_id"] for e in events}) == 4
    assert pair.client_t.data.endswith(binary * 3)
    pair.task.cancel()


async def test_backend_lost_mid_result_answers_records_and_ends_the_session() -> None:
    pair = _Pair()
    pair.send(b"\x03SELECT c FROM t")
    await _settle()
    pair.backend.data_received(_result()[:12])  # the column count and part of a definition
    pair.backend.connection_lost(None)
    await _settle()
    err = ErrPacket.decode(pair.client_payloads()[-1])
    assert err.errno == 2013
    [event] = pair.statements()
    assert event["backend_error"] == "backend connection lost"
    assert pair.task.done()
    assert isinstance(pair.task.exception(), BackendLost)


async def test_backend_breaking_the_protocol_mid_result_ends_the_session() -> None:
    pair = _Pair()
    pair.send(b"\x03SELECT c FROM t")
    await _settle()
    pair.backend.data_received(packets([b"\xfb/etc/passwd"]))  # a LOCAL INFILE request is never negotiated
    await _settle()
    assert ErrPacket.decode(pair.client_payloads()[-1]).errno == 2013
    assert len(pair.statements()) == 1
    assert isinstance(pair.task.exception(), BackendLost)


async def test_client_gone_mid_result_is_recorded_and_aborts_the_backend() -> None:
    pair = _Pair()
    pair.send(b"\x03SELECT c FROM t")
    await _settle()
    pair.client.connection_lost(None)
    await _settle()
    assert pair.backend_t.aborted
    [event] = pair.statements()
    assert event["backend_error"] == "client left during the result"
    assert isinstance(pair.task.exception(), ConnectionClosed)


async def test_commands_and_responses_fed_one_byte_at_a_time() -> None:
    pair = _Pair()
    commands = b"".join(frame(0, p)[0] for p in (b"\x03SELECT 1", b"\x03SELECT 2"))
    for i in range(len(commands)):
        pair.client.data_received(commands[i : i + 1])
        await asyncio.sleep(0)
    await _settle()
    for value in (b"one", b"two"):
        response = _result(value)
        for i in range(len(response)):
            pair.backend.data_received(response[i : i + 1])
        await _settle()
    assert pair.backend_commands() == [b"\x03SELECT 1", b"\x03SELECT 2"]
    assert pair.client_t.data == _result(b"one") + _result(b"two")
    assert [e["rows"] for e in pair.statements()] == [1, 1]
    pair.task.cancel()


async def test_unknown_statement_id_is_refused_without_reaching_the_backend() -> None:
    pair = _Pair()
    pair.send(b"\x17" + (77).to_bytes(4, "little") + b"\x00" + (1).to_bytes(4, "little"))
    await _settle()
    assert pair.backend_commands() == []
    assert ErrPacket.decode(pair.client_payloads()[0]).errno == 1243
    pair.task.cancel()


async def test_audit_event_is_emitted_before_the_final_packet() -> None:
    # A kill -9 between the two must not leave the client with a reply whose event is lost:
    # rows stream as they come, but the bytes ending the response wait for the emit.
    pair = _Pair()
    pair.send(b"\x03SELECT c FROM t")
    await _settle()
    result = packets(result_set_payloads([column("c")], [[b"a"], [b"b"]], caps=EOF_CAPS))
    end = packets([result_set_payloads([column("c")], [], caps=EOF_CAPS)[-1]], first_seq=6)
    assert result.endswith(end)
    pair.backend.data_received(result[: -len(end)])
    assert pair.client_t.data == result[: -len(end)], "rows are not held back"
    pair.backend.data_received(end)
    assert pair.client_t.data == result[: -len(end)]
    await _settle()
    assert pair.client_t.data == result
    [event] = pair.statements()
    emitted = pair.audit.written_at_emit[pair.audit.events.index(event)]
    assert emitted == result[: -len(end)]
    # An OK (no result set) and an ERR from the backend: the same order.
    for reply in (b"\x00\x01\x00\x02\x00\x00\x00", ErrPacket(errno=1146, message="no such table").encode()):
        before = bytes(pair.client_t.data)
        pair.send(b"\x03DELETE FROM t WHERE id=1")
        await _settle()
        pair.backend.data_received(frame(1, reply)[0])
        assert bytes(pair.client_t.data) == before
        await _settle()
        assert bytes(pair.client_t.data) == before + frame(1, reply)[0]
        assert pair.audit.written_at_emit[-1] == before
    pair.task.cancel()


class _CappedEngine:
    """Allows everything with a row cap of 2."""

    version = "capped"

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: object) -> object:
        from sqlbastion.policies.model import Action, Decision

        return Decision(action=Action.ALLOW, policy_version=self.version, max_rows=2)


async def test_capped_response_fed_byte_by_byte_then_a_pipelined_command() -> None:
    pair = _Pair(engine=_CappedEngine())
    pair.send(b"\x03SELECT c FROM t", b"\x0e")  # the query and a pipelined COM_PING
    await _settle()
    assert pair.backend_commands() == [b"\x03SELECT c FROM t"]
    two_results = result_set_payloads([column("c")], [[b"a"], [b"b"]], caps=EOF_CAPS, more=True)
    two_results += result_set_payloads([column("c")], [[b"c"]], caps=EOF_CAPS)
    response = packets(two_results)
    for i in range(len(response)):
        pair.backend.data_received(response[i : i + 1])
    await _settle()
    # The cap's ERR took the place of the third row (in the second result); only then the PING.
    assert pair.backend_commands() == [b"\x03SELECT c FROM t", b"\x0e"]
    pair.backend.data_received(frame(1, b"\x00\x00\x00\x02\x00\x00\x00")[0])
    await _settle()
    payloads = pair.client_payloads()
    err = ErrPacket.decode(payloads[-2])
    assert err.errno == 1227
    assert "row cap of 2 rows" in err.message
    assert payloads[-1][0] == 0x00  # the PING's OK
    [event] = pair.statements()
    assert event["rows"] == 2
    assert event["backend_error"] == "row cap exceeded"
    pair.task.cancel()
