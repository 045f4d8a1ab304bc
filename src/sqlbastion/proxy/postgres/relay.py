"""The query phase of one PostgreSQL connection, sans-IO: client bytes and backend bytes in,
bytes for each side out.

Strategy
--------
Every message the relay forwards to the backend that will be answered gets an
``_Item`` in a FIFO (``self._items``), in the order the backend will answer
(PostgreSQL 15 documentation §55.2.2 "Simple Query", §55.2.3 "Extended
Query"). Backend messages are attributed to the item at the head:

* ParseComplete, BindComplete, CloseComplete, NoData / RowDescription (after a
  Describe), CommandComplete / EmptyQueryResponse / PortalSuspended (after an
  Execute) and ReadyForQuery (after a Sync or a Query) complete their item.
* An ErrorResponse during an extended-query batch completes its item and, as
  the server then ignores everything up to Sync, drops the items up to the
  next Sync item — the resync asyncpg performs.
* NoticeResponse, NotificationResponse and ParameterStatus may come at any
  time and are passed through.

Refusing without breaking the protocol: a refused statement is replaced, in
the same position of the stream, by a statement that the server itself is
certain to reject (a syntax error, or a Bind/Execute of a name that cannot
exist). The backend then produces the ErrorResponse, skips to Sync and reports
the transaction status exactly as it would for a statement it refused itself;
the relay rewrites that ErrorResponse into sqlbastion's 42501 message. The
refused text never reaches the backend. A refused simple Query outside a
transaction, with nothing else in flight, is answered locally without a round
trip.

Fast path: when a result's MaskPlan is empty, DataRow frames are relayed as a
contiguous byte span and never decoded.

Audit before the reply: a statement's audit event (``Session.finish``) is
emitted before the bytes that complete its reply leave the relay, so a client
that got an answer always has its event in the audit intake (durable once
``emit`` returns). Everything happens within one ``backend_data`` call and the
bytes leave through ``take_to_client`` afterwards: an Execute is audited at
its CommandComplete/PortalSuspended/ErrorResponse, a refused message when the
backend rejects its stand-in (or at once when answered locally), a Query at
its ReadyForQuery. A Query's CommandComplete or ErrorResponse that arrives in
an earlier read than its ReadyForQuery is held back (``_reply_hold``) until
that ReadyForQuery, or until a further result of the same Query
(RowDescription, a COPY response) shows the reply goes on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from sqlbastion.logs import get_logger
from sqlbastion.masking.rows import program_for
from sqlbastion.policies.model import Decision
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.onepass import WholeAnswers
from sqlbastion.proxy.postgres.protocol import ProtocolViolation, RowColumn
from sqlbastion.proxy.postgres.results import ResultHandling
from sqlbastion.proxy.postgres.statements import StatementHandling
from sqlbastion.proxy.postgres.tracking import (
    ANSWERS,
    COLUMN_CACHE_ENTRIES,
    COMPLETIONS,
    COPY_MESSAGES,
    DONE_MESSAGES,
    MAX_PENDING_ITEMS,
    NO_CAP,
    REFUSED_SQL,
    ROW_CAP_EXCEEDED,
    SIMPLE_COMPLETIONS,
    ColumnMeta,
    ColumnResolver,
    Kind,
    Pending,
    Portal,
    Prepared,
    python_codec,
)
from sqlbastion.proxy.session import (
    MaskPlan,
    ResultColumn,
    Session,
)

__all__ = ["ColumnMeta", "ColumnResolver", "QueryRelay", "python_codec"]

log = get_logger("proxy.postgres")

_I32 = p._I32  # the protocol module's Int32 struct


class QueryRelay(StatementHandling, ResultHandling, WholeAnswers):
    """Relays one authenticated connection's query phase.

    Call ``client_data`` / ``backend_data`` with received bytes; then send
    ``take_to_backend()`` and ``take_to_client()``. When ``need_catalog`` is
    set, the relay waits for the listener to load those columns into the
    resolver's cache and call ``resume()``. ``close_reason`` set means: send
    what is pending to the client, then close both connections.
    """

    def __init__(
        self,
        session: Session,
        resolver: ColumnResolver,
        *,
        max_message: int = p.DEFAULT_MAX_MESSAGE,
        transaction_status: bytes = b"I",
        max_statement_bytes: int = 0,
    ) -> None:
        self.session = session
        self.resolver = resolver
        self.max_statement_bytes = max_statement_bytes
        self._client = p.MessageReader(max_message=max_message)
        self._backend = bytearray()
        self._bpos = 0
        self.max_message = max_message
        self._to_backend = bytearray()
        self._to_client = bytearray()
        self._items: deque[Pending] = deque()
        self._statements: dict[bytes, Prepared] = {}
        self._portals: dict[bytes, Portal] = {}
        self._skip_to_sync = False
        self._refresh_at_sync = False
        self._hold = False  # client messages wait (search_path refresh in flight)
        self._stalled = False  # client messages wait for MAX_PENDING_ITEMS answers to drain
        self._status = transaction_status
        self.need_catalog: tuple[RowColumn, ...] | None = None
        self.close_reason: str | None = None
        # The current result set.
        self._plan: MaskPlan | None = None
        self._row_passthrough = False
        self._discarding = False  # a refused result: drop its rows, error at its end
        self._muted = False  # after a refused result, until ReadyForQuery
        self._rows_passthrough = 0  # rows relayed on the fast path for the current item
        # The row cap (docs/policy.md, max_rows): rows the current result may still send
        # (NO_CAP: none), rows sent by the general path, and whether the cap was hit.
        self._room = NO_CAP
        self._masked_rows = 0
        self._capped = False
        # Audit before the reply: where the bytes held back from the client start, or -1.
        self._reply_hold = -1
        self._columns_cache: dict[tuple[tuple[RowColumn, ...], tuple[int, ...] | None], list[ResultColumn]] = {}
        self._row_cache: dict[bytes, tuple[RowColumn, ...]] = {}
        # Query results planned empty: RowDescription body → (decision, policy version).
        self._query_plans: dict[bytes, tuple[Decision, str]] = {}
        self._tags: dict[bytes, tuple[str, int]] = {}  # CommandComplete body → (command word, count)
        self._encoding = python_codec(session.state.client_encoding)
        # Frontend message handlers, most frequent first in spirit: one dict lookup per message.
        self._handlers: dict[int, Callable[[bytes, bytes], None]] = {
            p.BIND: self._bind,
            p.EXECUTE: self._execute,
            p.SYNC: self._sync,
            p.PARSE: self._parse,
            p.DESCRIBE: self._describe,
            p.QUERY: self._query,
            p.CLOSE: self._close,
            p.FLUSH: self._flush_message,
            p.FUNCTION_CALL: self._function_call,
        }

    # --- the listener's side -------------------------------------------------------------

    def take_to_backend(self) -> bytes:
        if not self._to_backend:
            return b""
        out = bytes(self._to_backend)
        self._to_backend.clear()
        return out

    def take_to_client(self) -> bytes:
        buf = self._to_client
        if not buf:
            return b""
        hold = self._reply_hold
        if hold >= 0 and self.close_reason is None:
            # A Query's CommandComplete/ErrorResponse waits for its ReadyForQuery, when the
            # statement's audit event is written (module docstring, "Audit before the reply").
            if hold == 0:
                return b""
            out = bytes(buf[:hold])
            del buf[:hold]
            self._reply_hold = 0
            return out
        out = bytes(buf)
        buf.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._items)

    @property
    def client_buffered(self) -> int:
        return self._client.buffered

    @property
    def client_backlog(self) -> int:
        """Client bytes waiting for their turn while the relay holds client messages back (a
        search_path refresh, the in-flight limit); 0 otherwise. A message still arriving is not a
        backlog: its size is bounded by ``max_message``, and reading must go on to complete it."""
        if self._hold or self._stalled:
            return self._client.buffered
        return 0

    @property
    def backend_buffered(self) -> int:
        return len(self._backend) - self._bpos

    def client_data(self, data: bytes) -> None:
        if self._client.buffered:
            self._client.feed(data)
            self._pump_client()
        else:
            # Nothing buffered (the usual case: a read holds whole messages): the frames are
            # walked in the received bytes themselves; only a remainder is copied to the reader.
            self._pump_client(data)

    def backend_data(self, data: bytes) -> None:
        if self._bpos == len(self._backend):
            # Nothing buffered: walk the received bytes in place (no copy into the buffer, and
            # each frame a single slice); only what is left over is kept (``_pump_backend``).
            if self._bpos:
                self._backend.clear()
                self._bpos = 0
            self._pump_backend(data)
        else:
            self._backend += data
            self._pump_backend()
        if self._stalled and len(self._items) < MAX_PENDING_ITEMS:
            # The client's pipeline waited for answers to drain (MAX_PENDING_ITEMS): go on with it.
            self._stalled = False
            self._pump_held_client()

    def resume(self) -> None:
        """Continue after ``need_catalog`` was satisfied."""
        self.need_catalog = None
        self._pump_backend()
        self._pump_held_client()

    def _pump_held_client(self) -> None:
        """Process client messages that waited, from the backend's side of the relay."""
        try:
            self._pump_client()
        except ProtocolViolation as exc:  # the client's fault, not the backend's
            self._to_client += exc.reply()
            self.close_reason = f"client protocol violation: {exc.message}"

    def abort_pending(self, reason: str) -> None:
        """The backend is gone: audit what was in flight as failed."""
        self._reply_hold = -1  # audited below, before the listener takes the bytes
        while self._items:
            item = self._items.popleft()
            if (
                item.verdict is not None
                and not item.swallow
                and (item.refused or item.kind in (Kind.QUERY, Kind.EXECUTE))
            ):
                item.outcome.backend_error = reason
                self._finish(item)

    # --- client → backend ----------------------------------------------------------------

    def _pump_client(self, data: bytes | None = None) -> None:
        # The frames are walked in place in the reader's buffer, or in ``data`` when the reader
        # held nothing (no call per frame to find it); each frame counts as consumed before its
        # handler runs, as a handler's ProtocolViolation ends the session anyway.
        reader = self._client
        handlers = self._handlers
        items = self._items
        buf: bytes | bytearray
        if data is None:
            buf, pos = reader.window()
        else:
            buf, pos = data, 0
        n = len(buf)
        unpack = _I32.unpack_from
        max_message = self.max_message
        try:
            while self.close_reason is None and n - pos >= 5:
                kind = buf[pos]
                # While waiting, COPY data still flows: the statement waited on may be the COPY itself.
                if (self._hold or len(items) >= MAX_PENDING_ITEMS) and kind not in COPY_MESSAGES:
                    self._stalled = not self._hold  # resumed by backend_data once answers drain
                    return
                length = unpack(buf, pos + 1)[0]
                if length < 4 or length > max_message:
                    reader.check_length(length)
                end = pos + 1 + length
                if end > n:
                    return
                if kind == p.BIND and not self._skip_to_sync:
                    # libpq's Bind / Describe / Execute / Sync, whole: one pass (onepass.py).
                    done = self._whole_prepared_batch(buf, pos, n)
                    if done:
                        pos = done
                        continue
                frame = bytes(buf[pos:end])  # a single copy when buf is the received bytes
                pos = end
                # The statement messages go straight to their handler; Terminate, COPY messages, the
                # skip to Sync after an error and unknown types (none of them in the table) do not.
                handler = handlers.get(kind)
                if handler is not None and not self._skip_to_sync:
                    handler(frame[5:], frame)
                else:
                    self._client_message(kind, frame)
        finally:
            if data is None:
                reader.consume_to(pos)
            elif pos < n:
                reader.feed(data[pos:])  # a message still arriving, or held back: the reader keeps it

    def _client_message(self, kind: int, frame: bytes) -> None:
        if kind == p.TERMINATE:
            self._to_backend += frame
            self.close_reason = "client terminated"
            return
        if kind in (p.COPY_DATA, p.COPY_DONE, p.COPY_FAIL):
            # Only meaningful in COPY FROM STDIN; the server ignores them otherwise (§55.2.6).
            self._to_backend += frame
            return
        if self._skip_to_sync:
            if kind == p.SYNC:
                self._skip_to_sync = False
                self._forward(Kind.SYNC, frame)
            return  # as the server does after an error in an extended-query batch
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProtocolViolation(f"invalid frontend message type {kind}")
        handler(frame[5:], frame)

    # --- backend → client ----------------------------------------------------------------

    def _pump_backend(self, data: bytes | None = None) -> None:
        # ``data``: received bytes walked in place, the buffer being empty; what is left of them
        # (a message still arriving, or a pause for the catalog) is kept in the buffer.
        buf: bytes | bytearray
        if data is None:
            buf, pos = self._backend, self._bpos
        else:
            buf, pos = data, 0
        n = len(buf)
        span = pos
        unpack = _I32.unpack_from
        max_message = self.max_message
        items = self._items
        try:
            while n - pos >= 5 and self.need_catalog is None:
                length = unpack(buf, pos + 1)[0]
                if length < 4 or length > max_message:
                    raise ProtocolViolation(f"backend sent a message of invalid length {length}")
                end = pos + 1 + length
                if end > n:
                    break
                kind = buf[pos]
                if kind == p.DATA_ROW and self._row_passthrough:
                    if self._rows_passthrough != self._room:
                        pos = end  # fast path: part of the span relayed untouched
                        self._rows_passthrough += 1
                        continue
                    # One row past the row cap: the span ends before it; the general path drops it.
                    self._cap_reached(items[0])
                elif (
                    kind == p.DATA_ROW
                    and self._plan is not None
                    and not self._discarding
                    and not self._muted
                    and items
                    and not items[0].swallow
                ):
                    # Masked rows: the run of complete DataRows from here, rewritten in one call
                    # (masking.rows; C when built), within the row cap. What it does not take (a
                    # malformed row, the row past the cap) goes on to the general path below.
                    program = program_for(self._plan)
                    room = self._room - self._masked_rows
                    if program is not None and room > 0:
                        if span < pos:
                            self._flush_span(buf, span, pos)
                        span = pos
                        done, nrows, masked = program.rewrite_pg(
                            buf, pos, n, self._to_client, limit=room, max_length=max_message
                        )
                        if nrows:
                            outcome = items[0].outcome
                            outcome.rows += nrows
                            outcome.masked_values += masked
                            self._masked_rows += nrows
                            pos = span = done
                            continue
                if kind == p.ROW_DESCRIPTION and items and not self._muted:
                    # A whole answer in this read, with a plan known empty: one pass (onepass.py).
                    head = items[0].kind
                    if head == Kind.QUERY:
                        done = self._whole_query_result(buf, pos, end, n, span=span, item=items[0])
                    elif head == Kind.DESCRIBE and len(items) >= 3:
                        done = self._whole_execute_result(buf, pos, end, n, span=span)
                    else:
                        done = 0
                    if done:
                        pos = span = done
                        continue
                if (
                    kind in SIMPLE_COMPLETIONS
                    and items
                    and items[0].kind == SIMPLE_COMPLETIONS[kind]
                    and not items[0].swallow
                ):
                    # ParseComplete / BindComplete / CloseComplete: relayed as part of the span.
                    items.popleft()
                    pos = end
                    continue
                if span < pos:
                    self._flush_span(buf, span, pos)
                if not self._backend_message(kind, buf, pos, end):
                    span = pos
                    break  # paused for the catalog
                pos = span = end
        finally:
            if span < pos:
                self._flush_span(buf, span, pos)
            if data is None:
                self._bpos = pos
            elif pos < n:
                self._backend += memoryview(data)[pos:]  # the buffer was empty: _bpos stays 0
        if data is not None:
            return
        if pos == n:
            self._backend.clear()
            self._bpos = 0
        elif pos > 65536:
            del self._backend[:pos]
            self._bpos = 0

    def _flush_span(self, buf: bytes | bytearray, start: int, end: int) -> None:
        if self._muted:
            return
        self._to_client += memoryview(buf)[start:end]
        if self._items:
            self._items[0].outcome.bytes_sent += end - start

    def _backend_message(self, kind: int, buf: bytes | bytearray, start: int, end: int) -> bool:
        """Handle one backend frame. Returns False to pause before it (catalog lookup needed)."""
        if self._muted:
            return self._muted_message(kind, buf, start, end)
        frame = bytes(buf[start:end])
        body = frame[5:]
        allowed = ANSWERS.get(kind)
        if allowed is not None:
            # An answer to the pending message at the head (most frequent first).
            if not self._items:
                raise ProtocolViolation(f"backend sent an unexpected message {chr(kind)!r}")
            item = self._items[0]
            if item.kind not in allowed:
                # An answer the pending message cannot have: the two sides no longer agree.
                raise ProtocolViolation(f"backend sent {chr(kind)!r} while {item.kind!r} was pending")
            if kind == p.DATA_ROW:
                if not item.swallow:
                    if self._plan is None and not self._row_passthrough and not self._start_rows(item):
                        return False  # paused for the catalog
                    if not self._row_allowed(item):
                        return True  # past the row cap: dropped
                return self._data_row(item, frame, body)
            if kind in COMPLETIONS:
                self._complete(item, kind, frame, body)
            elif kind == p.READY_FOR_QUERY:
                self._ready(item, frame, body)
            elif kind == p.ROW_DESCRIPTION:
                return self._row_description(item, frame, body)
            elif kind in DONE_MESSAGES:
                self._items.popleft()
                if not item.swallow:
                    self._to_client += frame
            elif kind == p.PARAMETER_DESCRIPTION:
                if not item.swallow:
                    self._to_client += frame
            else:
                self._copy(item, kind, frame)
            return True
        if kind == p.ERROR_RESPONSE:
            if self._items:
                self._error(self._items[0], frame, body)
            else:
                self._to_client += frame  # e.g. FATAL on administrator shutdown or termination
        elif kind == p.NOTICE_RESPONSE:
            head = self._items[0] if self._items else None
            if head is None or not head.swallow:
                self._to_client += self._withhold(head, kind, body) or frame
        elif kind == p.PARAMETER_STATUS:
            self._parameter_status(body)
            self._to_client += frame
        elif kind == p.NOTIFICATION:
            self._to_client += frame
        elif kind == p.FUNCTION_CALL_RESPONSE:
            raise ProtocolViolation("backend answered a FunctionCall that was never sent")
        else:
            raise ProtocolViolation(f"backend sent an unknown message type {kind}")
        return True

    def _muted_message(self, kind: int, buf: bytes | bytearray, start: int, end: int) -> bool:
        """After a refused result: process answers as usual, send the client only ReadyForQuery.

        Inside a transaction block, when nothing else is in flight, the server's transaction is
        made to fail too (a stand-in it rejects), so that client and server agree: the client saw
        an error, and a later COMMIT answers ROLLBACK.
        """
        mark = len(self._to_client)
        hold = self._reply_hold
        ready = kind == p.READY_FOR_QUERY
        fail_transaction = ready and buf[start + 5] == ord("T") and len(self._items) == 1
        self._muted = False
        try:
            done = self._backend_message(kind, buf, start, end)
        finally:
            if not ready or fail_transaction:
                del self._to_client[mark:]
            if not ready:
                self._reply_hold = hold  # nothing reached the client: what was held stays held
            self._muted = not ready
        if fail_transaction and self.close_reason is None:
            stand_in = p.encode_message(p.QUERY, REFUSED_SQL + b"\x00")
            item = self._forward(Kind.INTERNAL, stand_in, swallow=True)
            item.forward_ready = True  # its ReadyForQuery ('E') is the one the client gets
            self._hold = True
        return done

    def _parameter_status(self, body: bytes) -> None:
        name, value = p.decode_parameter_status(body)
        state = self.session.state
        self._query_plans.clear()  # plans depend on the session state
        if name == "client_encoding":
            from sqlbastion.proxy.postgres.startup import safe_client_encoding

            safe = safe_client_encoding(value)
            if safe is None:
                # The next statement could not be read the way the server reads it.
                self._to_client += p.encode_error(
                    "FATAL", "0A000", f'client_encoding "{value}" is not supported by sqlbastion; use UTF8'
                )
                self.close_reason = "unsafe client_encoding"
                return
            state.client_encoding = safe
            self._encoding = python_codec(safe)
        elif name == "standard_conforming_strings":
            state.standard_conforming_strings = value == "on"

    def _complete(self, item: Pending, kind: int, frame: bytes, body: bytes) -> None:
        if item.kind == Kind.EXECUTE and self._plan is None and not self._row_passthrough:
            # A result with no rows still needs its plan, to honour a refusal.
            portal = item.portal
            if portal is not None and kind != p.EMPTY_QUERY:
                row = portal.row if portal.row is not None else portal.statement.row
                if row is not None:
                    self._start_result(item, row, portal.formats)
        passed = self._rows_passthrough
        item.outcome.rows += passed
        self._rows_passthrough = 0
        if self._room != NO_CAP:
            # The row cap counts on across a Query's results and a portal's Executes.
            sent = passed + self._masked_rows
            if item.kind == Kind.EXECUTE and item.portal is not None:
                item.portal.rows_sent += sent
            else:
                item.rows_sent += sent
            self._room = NO_CAP
        if self._capped:
            pass  # the audit keeps the rows actually sent, not the server's count
        elif kind == p.COMMAND_COMPLETE:
            tag = self._tags.get(body)
            if tag is None:
                # A workload repeats a few tags ("SELECT 1"): decode each once. Bounded.
                if len(self._tags) >= COLUMN_CACHE_ENTRIES:
                    self._tags.clear()
                tag = self._tags[body] = p.decode_command_tag(body)
            word, count = tag
            if word in ("SELECT", "FETCH", "MOVE", "COPY"):
                item.outcome.rows = max(item.outcome.rows, count) if word != "COPY" else item.outcome.rows + count
            else:
                item.outcome.affected += count
        refused = self._plan.refuse if self._discarding and self._plan is not None else None
        self._end_result()
        if not item.swallow:
            if item.kind == Kind.QUERY and self._reply_hold < 0:
                self._reply_hold = len(self._to_client)  # audited at ReadyForQuery: held till then
            self._to_client += p.encode_error("ERROR", "42501", refused) if refused else frame
        if item.kind == Kind.EXECUTE:
            self._items.popleft()
            self._finish(item)
        if refused:
            # The client saw an error; as after a server error, it sees nothing more until
            # ReadyForQuery, although the server goes on (docs/postgres.md, "Refusal").
            self._muted = True

    def _error(self, item: Pending, frame: bytes, body: bytes) -> None:
        # A result cut at the row cap that then fails on the server: the client, which got the
        # first rows, gets the cap's error in the server's error's place.
        cap_text = self._plan.refuse if self._capped and self._plan is not None else None
        self._end_result()
        if item.kind == Kind.QUERY and self._reply_hold < 0:
            self._reply_hold = len(self._to_client)  # audited at ReadyForQuery: held till then
        if item.refused and item.verdict is not None:
            self._to_client += p.encode_error("ERROR", "42501", item.verdict.message)
        elif cap_text is not None:
            self._to_client += p.encode_error("ERROR", "42501", cap_text)
        elif item.kind != Kind.INTERNAL:
            # An injected Describe's failure is still the batch's failure: the client must see it.
            self._to_client += self._withhold(item, p.ERROR_RESPONSE, body) or frame
        if item.verdict is not None and not item.refused:
            fields = dict(p.decode_error_fields(body))
            code = fields.get(b"C", "")
            text = (
                f"SQLSTATE {code}"
                if item.verdict.decision.sensitive_columns
                else f"SQLSTATE {code}: {fields.get(b'M', '')}"
            )
            before = item.outcome.backend_error
            if before is not None and before.startswith(ROW_CAP_EXCEEDED):
                text = f"{ROW_CAP_EXCEEDED}; then {text}"  # the audit keeps that the cap was hit
            item.outcome.backend_error = text
        if item.kind in (Kind.QUERY, Kind.INTERNAL, Kind.SYNC):
            return  # completed by its ReadyForQuery
        self._items.popleft()
        self._forget(item)
        if item.refused or item.kind in (Kind.EXECUTE, Kind.PARSE):
            self._finish(item)
        self._drop_to_sync()

    def _forget(self, item: Pending) -> None:
        """A Parse or Bind that failed or was skipped created nothing on the server."""
        if item.kind == Kind.PARSE and item.statement is not None:
            for name, stmt in list(self._statements.items()):
                if stmt is item.statement:
                    del self._statements[name]
        elif item.kind == Kind.BIND and item.portal is not None:
            for name, portal in list(self._portals.items()):
                if portal is item.portal:
                    del self._portals[name]

    def _drop_to_sync(self) -> None:
        """The server ignores an extended-query batch's messages after an error, up to Sync."""
        while self._items and self._items[0].kind != Kind.SYNC:
            dropped = self._items.popleft()
            self._forget(dropped)
            if dropped.refused:
                # The refusal was decided; it is audited even though the batch never reached it.
                dropped.outcome.backend_error = "skipped after an earlier error in the batch"
                self._finish(dropped)

    def _ready(self, item: Pending, frame: bytes, body: bytes) -> None:
        if item.kind not in (Kind.QUERY, Kind.SYNC, Kind.INTERNAL):
            raise ProtocolViolation("backend sent ReadyForQuery out of turn")
        if len(body) != 1 or body not in (b"I", b"T", b"E"):
            raise ProtocolViolation("backend sent an invalid ReadyForQuery")
        self._items.popleft()
        if self._plan is not None or self._row_passthrough or self._discarding:
            self._end_result()  # a result ended by its ReadyForQuery (after an error)
        item.outcome.rows += self._rows_passthrough
        self._rows_passthrough = 0
        self._status = body
        self.session.state.in_transaction = body != b"I"
        if item.kind == Kind.QUERY and item.verdict is not None:
            self._finish(item)
        self._reply_hold = -1  # audited: what was held may go
        if not item.swallow or item.forward_ready:
            self._to_client += frame
        if item.kind == Kind.INTERNAL:
            self._hold = False
            self._pump_held_client()
        elif item.refresh_state:
            self._forward(Kind.INTERNAL, p.encode_message(p.QUERY, b"SHOW search_path\x00"), swallow=True)

    def _finish(self, item: Pending) -> None:
        verdict = item.verdict
        if verdict is None:
            return
        if verdict.allowed:
            item.outcome.backend_us = (time.perf_counter_ns() - item.sent_ns) // 1000
        # Session.finish counts backend errors (sqlbastion_backend_errors_total{kind="statement"}).
        self.session.finish(verdict, item.outcome)
