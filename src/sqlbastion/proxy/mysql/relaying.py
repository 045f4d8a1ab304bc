"""Forwarding one command to the backend and relaying its response: the command loop's base.

Strategy: an allowed command is forwarded and its response relayed by the
connection's one ``ResponseRelay``, called straight from the backend
protocol's ``data_received`` (``_on_backend_data``), so rows stream without a
coroutine switch per packet; the client's write buffer pauses the backend's
reading (backpressure). The statement path (``_begin`` … ``_end``) awaits the
response future without a coroutine frame of its own.

Invariants: a statement's audit event is emitted before the client can have
the bytes that end its reply (``_tail``: DESIGN.md decision 8, docs/mysql.md);
one write per direction per round trip for one-read responses; the person's
row cap (docs/policy.md, ``max_rows``) is handed to the relay, which replaces
the row past it with an ERR and drops the rest of the response.
"""

from __future__ import annotations

import asyncio
import time

from sqlbastion.proxy.mysql.channel import BackendConnection, ConnectionClosed, PacketProtocol
from sqlbastion.proxy.mysql.constants import MAX_PACKET_PAYLOAD, ErrorCode
from sqlbastion.proxy.mysql.errors import MySQLProtocolError
from sqlbastion.proxy.mysql.framing import frame
from sqlbastion.proxy.mysql.handshake import PersonHandshake
from sqlbastion.proxy.mysql.packets import ColumnDefinition, ErrPacket, OkPacket, result_columns
from sqlbastion.proxy.mysql.results import (
    ROW_CAP_MESSAGE,
    MetadataShortcut,
    ResponseKind,
    ResponseRelay,
    ResultSummary,
    RowFilter,
)
from sqlbastion.proxy.mysql.state import apply_state_changes
from sqlbastion.proxy.session import MaskPlan, Session, StatementOutcome, Verdict

__all__ = ["CLEAR_DIAGNOSTICS_SQL", "ROW_CAP_EXCEEDED", "WITHHELD", "BackendLost", "RelayingLoop"]

# A statement that reads a table and produces no diagnostics: only such statements clear the
# server's diagnostics area (statements without tables, like DO 0, leave the warnings in place).
CLEAR_DIAGNOSTICS_SQL = "DO (SELECT 1 FROM information_schema.ENGINES LIMIT 1)"
# What the audit's backend_error says of a result cut at the person's row cap (a short description:
# the audit keeps only codes and such descriptions there; ``rows`` says how many rows were sent).
ROW_CAP_EXCEEDED = "row cap exceeded"
# mysql-connector-python's pure-Python protocol names itself so in its connection attributes.
# Its binary-row reader cannot read an ERR that follows rows (docs/mysql.md, "Row cap").
HOLD_ROWS_CLIENTS = frozenset({b"mysql-connector-python"})
WITHHELD = "sqlbastion: backend message withheld (the statement touched sensitive columns). Audit ref {}."


def _command_bytes(payload: bytes) -> bytes:
    """A command framed with sequence id 0 (page_protocol_basic_packets)."""
    n = len(payload)
    if n < MAX_PACKET_PAYLOAD:
        return n.to_bytes(3, "little") + b"\x00" + payload
    return frame(0, payload)[0]


def _holds_capped_rows(handshake: PersonHandshake | None) -> bool:
    """Whether the client's binary-row reader needs a capped result's rows held back."""
    resp = handshake.response if handshake is not None else None
    if resp is None:
        return False
    return any(k == b"_client_name" and v in HOLD_ROWS_CLIENTS for k, v in resp.attrs)


class BackendLost(Exception):
    """The backend connection ended while sqlbastion needed it."""


class RelayingLoop:
    """The part of a person's command loop that talks to the backend (``CommandLoop`` extends it)."""

    def __init__(
        self,
        *,
        client: PacketProtocol,
        backend: BackendConnection,
        session: Session,
        client_capabilities: int,
        handshake: PersonHandshake | None,
    ) -> None:
        self.client = client
        self.backend = backend
        self.session = session
        self.client_caps = client_capabilities
        self._loop = asyncio.get_running_loop()
        self._response: asyncio.Future[ResultSummary] | None = None
        self._current: ResponseRelay | None = None  # the relay of the response in flight
        self._relay_obj: ResponseRelay | None = None  # one per connection, reset for each response
        self._verdict: Verdict | None = None  # the verdict of the statement in flight
        # The client bytes that end the response in flight, held until its audit event is emitted.
        self._tail = b""
        self._hold_tail = False
        self._backend_gone = False
        self._reply_seq = 1  # the sequence id of the current command's first reply packet
        self._client_gone = False
        self.hold_capped_rows = _holds_capped_rows(handshake)
        backend.protocol.on_lost = self._on_backend_lost
        client.on_lost = self._on_client_lost
        client.on_pause_writing = self._pause_backend
        client.on_resume_writing = self._resume_backend

    @property
    def idle(self) -> bool:
        """True between commands (nothing is in flight to the backend)."""
        return self._response is None

    async def backend_command(self, payload: bytes) -> OkPacket:
        """An internal command to the backend that answers OK (raises BackendAuthError otherwise)."""
        self._response = self._loop.create_future()
        try:
            return await self.backend.command_ok(payload)
        finally:
            self._response = None

    # -- flow control and failures -----------------------------------------

    def _pause_backend(self) -> None:
        t = self.backend.protocol.transport
        if t is not None and not t.is_closing():
            t.pause_reading()

    def _resume_backend(self) -> None:
        t = self.backend.protocol.transport
        if t is not None and not t.is_closing():
            t.resume_reading()

    def _on_client_lost(self, exc: BaseException | None) -> None:
        # A client gone mid-result: stop the backend's work instead of draining it for nobody.
        self._client_gone = True
        if self._response is not None:
            self.backend.protocol.abort()

    def _on_backend_lost(self, exc: BaseException | None) -> None:
        self._backend_gone = True
        fut = self._response
        if fut is not None and not fut.done():
            fut.set_exception(BackendLost(str(exc) if exc else "backend closed the connection"))

    # -- relaying ---------------------------------------------------------------

    async def _relay(
        self,
        payload: bytes,
        kind: ResponseKind,
        *,
        verdict: Verdict | None = None,
        binary: bool = False,
        plan: MaskPlan | None = None,
        types: list[int] | None = None,
        plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] | None = None,
        keep_row: RowFilter | None = None,
        shortcut: MetadataShortcut | None = None,
        max_rows: int | None = None,
        cap_ref: str = "-",
        audited: bool = False,
    ) -> tuple[ResultSummary, ResponseRelay]:
        """Forward one command and relay its response.

        With ``audited`` the bytes that end the response (the last write, which
        carries the final OK/EOF/ERR) are kept in ``self._tail``: the caller
        emits the statement's audit event and then calls ``_write_tail`` (the
        intake makes the emit durable once it returns, so a client never holds
        the reply of a statement whose event a process kill could lose).
        """
        fut, relay = self._begin(
            payload,
            kind,
            verdict,
            binary=binary,
            plan=plan,
            types=types,
            plan_cache=plan_cache,
            keep_row=keep_row,
            shortcut=shortcut,
            max_rows=max_rows,
            cap_ref=cap_ref,
            audited=audited,
        )
        try:
            return await fut, relay
        except BackendLost:
            self._lost_reply(relay)
            raise
        finally:
            self._end(audited)

    def _begin(
        self,
        payload: bytes,
        kind: ResponseKind,
        verdict: Verdict | None,
        *,
        binary: bool = False,
        plan: MaskPlan | None = None,
        types: list[int] | None = None,
        plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] | None = None,
        keep_row: RowFilter | None = None,
        shortcut: MetadataShortcut | None = None,
        max_rows: int | None = None,
        cap_ref: str = "-",
        audited: bool = False,
    ) -> tuple[asyncio.Future[ResultSummary], ResponseRelay]:
        """Set the relay up, forward the command; the caller awaits the future, then calls ``_end``.

        Split from ``_relay`` so the statement path awaits the response without a
        coroutine frame of its own in between.
        """
        withhold = None
        if verdict is not None and verdict.decision.sensitive_columns:
            withhold = WITHHELD.format(verdict.event_id)
        cap_text = ""
        if max_rows is not None:
            cap_text = ROW_CAP_MESSAGE.format(cap=self._cap_of(verdict, max_rows), ref=cap_ref)
        relay = self._relay_obj
        if relay is None or relay.backend_capabilities != self.backend.capabilities:
            relay = self._relay_obj = ResponseRelay(
                kind=kind, backend_capabilities=self.backend.capabilities, client_capabilities=self.client_caps
            )
        relay.reset(
            kind,
            binary=binary,
            planner=self._planner if verdict is not None else None,
            withhold_errors=withhold,
            plan=plan,
            types=types,
            first_seq=self._reply_seq,
            plan_cache=plan_cache,
            keep_row=keep_row,
            shortcut=shortcut,
            max_rows=max_rows,
            cap_text=cap_text,
            hold_capped_rows=self.hold_capped_rows and (binary or kind == "fetch"),
        )
        fut: asyncio.Future[ResultSummary] = self._loop.create_future()
        bp = self.backend.protocol
        leftover = bp.framer.take_buffered() if bp.framer.buffered else b""
        # One bound method for every response (no closures per statement): it reads the
        # current relay, verdict and future from here.
        self._current = relay
        self._verdict = verdict
        self._response = fut
        self._hold_tail = audited
        bp.relay_to = self._on_backend_data
        bp.write(_command_bytes(payload))
        if leftover:
            self._on_backend_data(leftover)
        return fut, relay

    def _lost_reply(self, relay: ResponseRelay) -> None:
        """The backend went away during the response: a clear error in sequence (the session then ends)."""
        if self._client_gone:
            raise ConnectionClosed("the client left during the result") from None
        err = ErrPacket(
            errno=ErrorCode.CR_SERVER_LOST,
            message="sqlbastion: lost the backend connection during the query",
            sqlstate="HY000",
        )
        self.client.write(frame(relay.next_seq, err.encode(self.client_caps))[0])

    def _end(self, audited: bool) -> None:
        """Undo ``_begin``'s set-up once the response is over (or failed)."""
        self.backend.protocol.relay_to = None
        self._response = None
        self._current = None
        self._verdict = None
        if not audited:
            self._write_tail()

    def _write_tail(self) -> None:
        """Send the held end of the response (after its audit event)."""
        tail = self._tail
        if tail:
            self._tail = b""
            self.client.write(tail)

    @staticmethod
    def _cap_of(verdict: Verdict | None, room: int) -> int:
        """The person's cap as the message states it (``room`` is what is left of it for a cursor)."""
        if verdict is not None and verdict.decision.max_rows is not None:
            return verdict.decision.max_rows
        return room

    def _planner(self, cols: list[ColumnDefinition], is_binary: bool) -> MaskPlan:
        """The mask plan of a result of the statement in flight (called only when no cached plan fits)."""
        verdict = self._verdict
        assert verdict is not None  # the planner is only given to relays of a statement with a verdict
        return self.session.mask_plan(verdict, result_columns(cols, is_binary))

    def _on_backend_data(self, data: bytes) -> None:
        """Backend bytes of the response in flight, straight from the protocol's data_received."""
        fut = self._response
        relay = self._current
        if fut is None or relay is None or fut.done():
            return
        try:
            out = relay.feed(data)
        except MySQLProtocolError as exc:
            # The backend broke the protocol: its state is unknown, so the session ends.
            fut.set_exception(BackendLost(f"backend protocol error: {exc.message}"))
            return
        if relay.done:
            if self._hold_tail:
                self._tail = out  # written after the audit event (_write_tail)
            elif out:
                self.client.write(out)
            fut.set_result(relay.summary)
        elif out:
            self.client.write(out)

    @staticmethod
    def _outcome(verdict: Verdict, summary: ResultSummary, started: int) -> StatementOutcome:
        """The audit outcome of a relayed statement."""
        err = summary.error
        backend_error = None
        if err is not None:
            backend_error = f"{err.errno} ({err.sqlstate})"
            if not verdict.decision.sensitive_columns:
                backend_error += f": {err.message[:512]}"
        if summary.refused:
            backend_error = ROW_CAP_EXCEEDED if summary.capped else summary.refused
        return StatementOutcome(
            rows=summary.rows,
            affected=summary.affected,
            bytes_sent=summary.bytes_out,
            backend_error=backend_error,
            backend_us=(time.perf_counter_ns() - started) // 1000,
            masked_values=summary.masked_values,
        )

    async def _run_statement(
        self,
        payload: bytes,
        verdict: Verdict,
        kind: ResponseKind,
        *,
        binary: bool = False,
        plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] | None = None,
        keep_row: RowFilter | None = None,
        shortcut: MetadataShortcut | None = None,
    ) -> tuple[ResultSummary, ResponseRelay] | None:
        """Forward an allowed statement, relay its response, record the outcome."""
        started = time.perf_counter_ns()
        max_rows = verdict.decision.max_rows if kind == "query" else None
        fut, relay = self._begin(
            payload,
            kind,
            verdict,
            binary=binary,
            plan_cache=plan_cache,
            keep_row=keep_row,
            shortcut=shortcut,
            max_rows=max_rows,
            cap_ref=verdict.event_id,
            audited=True,
        )
        try:
            try:
                summary = await fut
            except BackendLost:
                self._lost_reply(relay)
                raise
            finally:
                self._end(True)
        except BackendLost:
            self.session.finish(verdict, StatementOutcome(backend_error="backend connection lost"))
            raise
        except ConnectionClosed:
            # The client left mid-result: the statement reached the backend, so it is still recorded.
            self.session.finish(verdict, StatementOutcome(backend_error="client left during the result"))
            raise
        try:
            apply_state_changes(self.session, summary)
            self.session.finish(verdict, self._outcome(verdict, summary, started))
        finally:
            self._write_tail()  # the reply's end, after its audit event
        if verdict.decision.sensitive_columns and summary.warnings:
            # SHOW WARNINGS would echo values of sensitive columns: clear the diagnostics area.
            await self.internal(CLEAR_DIAGNOSTICS_SQL)
        return summary, relay

    async def internal(self, sql: str) -> None:
        """An internal statement whose response the client never sees."""
        self._response = self._loop.create_future()
        try:
            ok, _ = await self.backend.simple_query(sql)
        finally:
            self._response = None
        if ok is not None:
            apply_state_changes(self.session, ResultSummary(oks=[ok] if ok.session_state else [], status=ok.status))
