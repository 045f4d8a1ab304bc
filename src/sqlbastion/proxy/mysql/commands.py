"""The command phase of one person's connection: decide, forward, relay, audit.

Strategy: one coroutine reads the client's commands in order
(page_protocol_command_phase). Each command is authorised through the
``Session`` before any byte reaches the backend; a refused one is answered with
ERR 1227 / 42000 and the connection stays usable (DESIGN.md decision 6). An
allowed command is forwarded and its response relayed by ``RelayingLoop``
(relaying.py), the base class: a ``ResponseRelay`` called straight from the
backend protocol's ``data_received``, so rows stream without a coroutine switch
per packet, and the client's write buffer pauses the backend's reading
(backpressure), so memory stays flat for a slow reader.

Commands sqlbastion cannot police (replication, COM_DEBUG, COM_SHUTDOWN,
COM_PROCESS_INFO …) are refused; COM_CHANGE_USER is refused, never relayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlbastion import logs
from sqlbastion.proxy.mysql import guards
from sqlbastion.proxy.mysql.change_user import change_user
from sqlbastion.proxy.mysql.channel import BackendConnection, PacketProtocol
from sqlbastion.proxy.mysql.constants import (
    SQLSTATE,
    Command,
    ErrorCode,
    ServerStatus,
)
from sqlbastion.proxy.mysql.errors import MalformedPacket
from sqlbastion.proxy.mysql.framing import frame
from sqlbastion.proxy.mysql.handshake import PersonHandshake
from sqlbastion.proxy.mysql.packets import ErrPacket
from sqlbastion.proxy.mysql.registry import SessionRegistry
from sqlbastion.proxy.mysql.relaying import BackendLost, RelayingLoop
from sqlbastion.proxy.mysql.results import (
    MetadataShortcut,
)
from sqlbastion.proxy.mysql.state import (
    SETUP_SQL,
    STATE_SQL,
    PreparedStatement,
    apply_state_changes,
    quote_ident,
    set_sql_mode,
)
from sqlbastion.proxy.mysql.wire import PayloadReader
from sqlbastion.proxy.session import (
    MaskPlan,
    Session,
    StatementOutcome,
    Verdict,
    new_event_id,
)

__all__ = ["SETUP_SQL", "BackendLost", "CommandLoop", "PreparedStatement", "apply_state_changes"]

log = logs.get_logger("proxy.mysql")

MAX_PREPARED_STATEMENTS = 1024  # per connection; MySQL's max_prepared_stmt_count is per server
TEXT_PLAN_CACHE_ENTRIES = 64  # distinct (decision, session state) pairs whose plans a connection keeps

_NO_RESPONSE = frozenset({Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA})
_CURSOR_EXISTS = int(ServerStatus.CURSOR_EXISTS)
_QUERY, _STMT_EXECUTE, _QUIT = int(Command.QUERY), int(Command.STMT_EXECUTE), int(Command.QUIT)


class _TextPlans:
    """Per (decision, session state): plans by exact column-definition bytes, and the last metadata."""

    __slots__ = ("plan_cache", "shortcut")

    def __init__(self) -> None:
        self.plan_cache: dict[bytes, tuple[MaskPlan, list[int]]] = {}
        self.shortcut: MetadataShortcut | None = None


class CommandLoop(RelayingLoop):
    """Serves one authenticated person's commands until the client or the backend goes away.

    COM_CHANGE_USER lives in ``change_user.py`` and works on this object's state.
    """

    def __init__(
        self,
        *,
        client: PacketProtocol,
        backend: BackendConnection,
        session: Session,
        client_capabilities: int,
        registry: SessionRegistry,
        max_statement_bytes: int,
        proxy_id: int = 0,
        idle_timeout_s: float,
        handshake: PersonHandshake | None = None,
        handshake_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            client=client,
            backend=backend,
            session=session,
            client_capabilities=client_capabilities,
            handshake=handshake,
        )
        self.handshake = handshake
        self.handshake_timeout_s = handshake_timeout_s
        self.registry = registry
        self.proxy_id = proxy_id
        self.max_statement_bytes = max_statement_bytes
        self.idle_timeout_s = idle_timeout_s
        self.statements: dict[int, PreparedStatement] = {}
        self._plan_caches: dict[tuple[object, ...], _TextPlans] = {}
        self.last_prepared: int | None = None
        self._last_activity = time.monotonic()
        self._ended: str | None = None  # set when a command ends the session (a failed COM_CHANGE_USER)

    # -- what change_user.py uses --------------------------------------------

    def send_error(self, errno: int, message: str, sqlstate: str | None = None) -> None:
        """An ERR in reply to the current command."""
        self._send_err(errno, message, sqlstate)

    def end(self, reason: str) -> None:
        """End the session after the current command (the loop returns ``reason``)."""
        self._ended = reason

    def replace_session(self, new: Session) -> None:
        """Serve ``new`` from now on; nothing prepared or planned for the old one carries over."""
        self.session = new
        self.statements.clear()
        self.last_prepared = None
        self._plan_caches.clear()

    # -- small helpers -------------------------------------------------------

    def _send_err(self, errno: int, message: str, sqlstate: str | None = None) -> None:
        err = ErrPacket(errno=errno, message=message, sqlstate=sqlstate or SQLSTATE.get(errno, "HY000"))
        self.client.write(frame(self._reply_seq, err.encode(self.client_caps))[0])

    def _refuse(self, verdict: Verdict) -> None:
        self.session.finish(verdict, StatementOutcome())  # recorded before the client can see the refusal
        self._send_err(ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR, verdict.message, sqlstate="42000")

    def _proxy_block(self, sql: str, refusal: guards.GuardRefusal) -> Verdict:
        return guards.refusal_verdict(sql, refusal, policy_version=self.session.runtime.engine.version)

    def _decode(self, raw: bytes) -> str | guards.GuardRefusal:
        return guards.decode_statement(raw, self.session.state.client_encoding)

    def _state_key(self) -> tuple[object, ...]:
        s = self.session.state
        return (s.database, s.ansi_quotes, s.no_backslash_escapes, s.client_encoding)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> str:
        """Serve until the end; returns the reason the connection closed."""
        loop = asyncio.get_running_loop()
        idle = loop.call_later(min(self.idle_timeout_s, 60.0), self._check_idle)
        try:
            while True:
                seq, payload, next_seq = await self.client.read_frame()
                self._last_activity = time.monotonic()
                if seq != 0:
                    raise MalformedPacket(f"command packet with sequence id {seq}")
                if not payload:
                    raise MalformedPacket("empty command packet")
                if self._backend_gone:
                    self._send_err(ErrorCode.CR_SERVER_LOST, "sqlbastion: the backend connection was lost")
                    return "backend_lost"
                if payload[0] == _QUIT:
                    return "quit"
                # A command of 16 MiB or more arrived in several packets: replies continue its numbering.
                self._reply_seq = next_seq
                cmd = payload[0]
                # The two commands of nearly every round trip without the dispatcher's coroutine frame.
                if cmd == _STMT_EXECUTE:
                    await self._execute(payload)
                    continue
                if cmd == _QUERY:
                    await self._query(payload)
                    continue
                ended = await self._dispatch(payload)
                if ended is not None:
                    return ended
        finally:
            idle.cancel()

    def _check_idle(self) -> None:
        if self.client.closed:
            return
        if time.monotonic() - self._last_activity > self.idle_timeout_s and self._response is None:
            log.info("idle timeout", person=self.session.person, session_id=self.session.session_id)
            self.client.close()
            return
        asyncio.get_running_loop().call_later(min(self.idle_timeout_s, 60.0), self._check_idle)

    async def _dispatch(self, payload: bytes) -> str | None:
        """Serve one command; returns a reason when the command ended the session."""
        cmd = payload[0]
        # The two commands of nearly every round trip first, compared as plain ints.
        if cmd == _STMT_EXECUTE:
            await self._execute(payload)
        elif cmd == _QUERY:
            await self._query(payload)
        elif cmd == Command.STMT_PREPARE:
            await self._prepare(payload)
        elif cmd == Command.STMT_FETCH:
            await self._fetch(payload)
        elif cmd in (Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA, Command.STMT_RESET):
            await self._statement_command(payload)
        elif cmd == Command.INIT_DB:
            await self._init_db(payload)
        elif cmd == Command.FIELD_LIST:
            await self._field_list(payload)
        elif cmd in (Command.PING, Command.STATISTICS, Command.SET_OPTION):
            await self._relay(payload, "single")
        elif cmd == Command.RESET_CONNECTION:
            await self._reset_connection(payload)
        elif cmd == Command.PROCESS_KILL:
            await self._process_kill(payload)
        elif cmd == Command.CHANGE_USER:
            await self._change_user(payload)
            return self._ended
        else:
            self._send_err(ErrorCode.ER_UNKNOWN_COM_ERROR, f"sqlbastion: command 0x{cmd:02X} is not allowed")
        return None

    # -- statement text checks ---------------------------------------------

    def _checked_text(
        self, raw: bytes
    ) -> tuple[str, Verdict | None, guards.KillRequest | guards.OwnProcessList | None]:
        """The decoded statement, and a refusal verdict or a KILL to resolve, from the proxy's own checks."""
        if len(raw) > self.max_statement_bytes:
            text = f"<{len(raw)} bytes>"
            return (
                text,
                self._proxy_block(
                    text,
                    guards.GuardRefusal(
                        rule_id="MYSQL-OVERSIZE",
                        title="Statement larger than server.max_statement_bytes",
                        why=f"the statement has {len(raw)} bytes; the limit is {self.max_statement_bytes}",
                    ),
                ),
                None,
            )
        decoded = self._decode(raw)
        if isinstance(decoded, guards.GuardRefusal):
            text = raw[:256].decode("utf-8", "replace")
            return text, self._proxy_block(text, decoded), None
        check = guards.check_statement(decoded)
        if isinstance(check, guards.GuardRefusal):
            return decoded, self._proxy_block(decoded, check), None
        return decoded, None, check

    # -- commands ----------------------------------------------------------------

    async def _query(self, payload: bytes) -> None:
        text, refusal, kill = self._checked_text(payload[1:])
        if refusal is not None:
            self._refuse(refusal)
            return
        if isinstance(kill, guards.OwnProcessList):
            await self._own_process_list(payload, text)
            return
        if kill is not None:
            request = kill
            await self._kill(
                text, kill.target, lambda backend_id: b"\x03" + request.statement(backend_id).encode("ascii")
            )
            return
        verdict = self.session.authorize(text)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        if verdict.decision.sensitive_columns and guards.reads_diagnostics(text):
            # SHOW WARNINGS beside a statement on sensitive columns would echo their values.
            self._refuse(self._proxy_block(text, guards.DIAGNOSTICS))
            return
        plans = self._text_plans(verdict)
        done = await self._run_statement(
            payload,
            verdict,
            "query",
            plan_cache=plans.plan_cache if plans is not None else None,
            shortcut=plans.shortcut if plans is not None else None,
        )
        if done is not None and plans is not None:
            plans.shortcut = done[1].new_shortcut

    async def _own_process_list(self, payload: bytes, text: str) -> None:
        """SHOW [FULL] PROCESSLIST with only the rows of the person's own sessions."""
        verdict = self.session.authorize(text)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        own = self.registry.own_backend_ids(self.session.person, self.session.backend.name)
        await self._run_statement(payload, verdict, "query", keep_row=guards.rows_of_sessions(own))

    async def _prepare(self, payload: bytes) -> None:
        text, refusal, kill = self._checked_text(payload[1:])
        if refusal is None and kill is not None:
            refusal = self._proxy_block(text, guards.KILL_OTHERS)
        if refusal is not None:
            self._refuse(refusal)
            return
        if len(self.statements) >= MAX_PREPARED_STATEMENTS:
            self._send_err(
                ErrorCode.ER_MAX_PREPARED_STMT_COUNT_REACHED,
                f"sqlbastion: more than {MAX_PREPARED_STATEMENTS} prepared statements on one connection",
            )
            return
        verdict = self.session.authorize(text)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        done = await self._run_statement(payload, verdict, "prepare")
        if done is None:
            return
        summary, _ = done
        prep = summary.prepare_ok
        if prep is not None:
            self.statements[prep.statement_id] = PreparedStatement(
                statement_id=prep.statement_id,
                sql=text,
                verdict=verdict,
                state_key=self._state_key(),
                num_params=prep.num_params,
            )
            self.last_prepared = prep.statement_id

    def _statement(self, payload: bytes, command: str) -> PreparedStatement | None:
        sid = int.from_bytes(payload[1:5], "little") if len(payload) >= 5 else -1
        if sid == 0xFFFFFFFF and self.last_prepared is not None:
            sid = self.last_prepared  # MariaDB: "the statement prepared last"
        stmt = self.statements.get(sid)
        if stmt is None:
            self._send_err(
                ErrorCode.ER_UNKNOWN_STMT_HANDLER, f"Unknown prepared statement handler ({sid}) given to {command}"
            )
        return stmt

    def _text_plans(self, verdict: Verdict) -> _TextPlans | None:
        """The plans text statements share: equal decisions in equal session state.

        A mask plan is a function of the decision, the session context and the
        result's columns (DESIGN.md: masking is a pure function), so two statements
        whose decisions are equal by value, in the same session state, with
        byte-identical column definitions get the same plan. One dictionary
        lookup per statement: the key (a whole Decision) is hashed once.
        """
        key = (verdict.decision, self._state_key())
        try:
            plans = self._plan_caches.get(key)
        except TypeError:  # a decision holding something unhashable: no caching
            return None
        if plans is None:
            if len(self._plan_caches) >= TEXT_PLAN_CACHE_ENTRIES:
                self._plan_caches.clear()
            plans = self._plan_caches[key] = _TextPlans()
        return plans

    def _reuse(self, stmt: PreparedStatement) -> Verdict:
        """The prepare-time decision, unless the session state it depends on changed since."""
        if stmt.state_key != self._state_key():
            stmt.verdict = self.session.authorize(stmt.sql)
            stmt.state_key = self._state_key()
            stmt.plan_cache.clear()
            stmt.shortcut = None
            return stmt.verdict
        self.session.statements += 1
        v = stmt.verdict
        return Verdict(
            decision=v.decision,
            event_id=new_event_id(),
            started_ns=time.perf_counter_ns(),
            sql_text=v.sql_text,
            message=v.message,
        )

    async def _execute(self, payload: bytes) -> None:
        stmt = self._statement(payload, "mysqld_stmt_execute")
        if stmt is None:
            return
        verdict = self._reuse(stmt)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        done = await self._run_statement(
            payload, verdict, "query", binary=True, plan_cache=stmt.plan_cache, shortcut=stmt.shortcut
        )
        if done is not None:
            summary, relay = done
            stmt.shortcut = relay.new_shortcut
            if summary.status is not None and summary.status & _CURSOR_EXISTS:
                stmt.plan = relay.plan
                stmt.types = relay.types
                stmt.cursor_rows = summary.rows

    async def _fetch(self, payload: bytes) -> None:
        stmt = self._statement(payload, "mysqld_stmt_fetch")
        if stmt is None:
            return
        verdict = self._reuse(stmt)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        started = time.perf_counter_ns()
        # The cap counts every row of the cursor, over all its COM_STMT_FETCH chunks.
        cap = verdict.decision.max_rows
        room = None if cap is None else max(0, cap - stmt.cursor_rows)
        summary, _ = await self._relay(
            payload,
            "fetch",
            verdict=verdict,
            plan=stmt.plan,
            types=stmt.types,
            binary=True,
            max_rows=room,
            cap_ref=verdict.event_id,
            audited=True,
        )
        stmt.cursor_rows += summary.rows
        try:
            apply_state_changes(self.session, summary)
            self.session.finish(verdict, self._outcome(verdict, summary, started))
        finally:
            self._write_tail()

    async def _statement_command(self, payload: bytes) -> None:
        cmd = payload[0]
        names = {Command.STMT_CLOSE: "mysqld_stmt_close", Command.STMT_RESET: "mysqld_stmt_reset"}
        if cmd in _NO_RESPONSE:
            # No response at all (page_protocol_com_stmt_close / _send_long_data): unknown ids are dropped.
            try:
                sid = PayloadReader(payload, 1).int4("statement_id")
            except MalformedPacket:
                return
            if sid not in self.statements:
                return
            if cmd == Command.STMT_CLOSE:
                del self.statements[sid]
            self.backend.protocol.write(frame(0, payload)[0])
            return
        if self._statement(payload, names.get(Command(cmd), "mysqld_stmt_reset")) is None:
            return
        await self._relay(payload, "single")

    async def _init_db(self, payload: bytes) -> None:
        name, refusal, _ = self._checked_text(payload[1:])
        if refusal is not None:
            self._refuse(refusal)
            return
        verdict = self.session.authorize(f"USE {quote_ident(name)}")
        if not verdict.allowed:
            self._refuse(verdict)
            return
        await self._run_statement(payload, verdict, "single")

    async def _field_list(self, payload: bytes) -> None:
        r = PayloadReader(payload, 1)
        try:
            table_raw = r.nul_bytes("table")
        except MalformedPacket:
            table_raw = r.rest()
        table, refusal, _ = self._checked_text(table_raw)
        if refusal is not None:
            self._refuse(refusal)
            return
        verdict = self.session.authorize(f"SHOW COLUMNS FROM {quote_ident(table)}")
        if not verdict.allowed:
            self._refuse(verdict)
            return
        await self._run_statement(payload, verdict, "field_list")

    async def _reset_connection(self, payload: bytes) -> None:
        summary, _ = await self._relay(payload, "single")
        if summary.error is not None:
            return
        self.statements.clear()
        self.last_prepared = None
        # The reset restored the server's defaults, including session tracking: set it up again.
        await self.internal(SETUP_SQL)
        await self.refresh_state()

    async def refresh_state(self) -> None:
        """Read the database, sql_mode and character set from the backend into the session state."""
        self._response = self._loop.create_future()
        try:
            _, rows = await self.backend.simple_query(STATE_SQL)
        finally:
            self._response = None
        if rows:
            db, mode, charset = (rows[0] + [None, None, None])[:3]
            self.session.state.database = db.decode("utf-8", "replace") if db else None
            set_sql_mode(self.session, mode.decode("ascii", "replace") if mode else "")
            if charset:
                self.session.state.client_encoding = charset.decode("ascii", "replace").lower()

    async def _change_user(self, payload: bytes) -> None:
        await change_user(self, payload)

    async def _process_kill(self, payload: bytes) -> None:
        if len(payload) < 5:
            self._send_err(ErrorCode.ER_MALFORMED_PACKET, "malformed COM_PROCESS_KILL")
            return
        target = int.from_bytes(payload[1:5], "little")
        command = bytes((Command.PROCESS_KILL,))
        await self._kill(f"KILL {target}", target, lambda backend_id: command + backend_id.to_bytes(4, "little"))

    async def _kill(self, text: str, target: int, command: Callable[[int], bytes]) -> None:
        """KILL of one of the person's own sessions, rewritten to its backend connection id."""
        backend_id = self.registry.resolve_kill(self.session.person, self.session.backend.name, target)
        if backend_id is None:
            self._send_err(ErrorCode.ER_KILL_DENIED_ERROR, f"You are not owner of thread {target}")
            return
        verdict = self.session.authorize(text)
        if not verdict.allowed:
            self._refuse(verdict)
            return
        await self._run_statement(command(backend_id), verdict, "query")
