"""Whole answers of the PostgreSQL relay in one pass: the shapes ``pgbench -S`` and most
point reads produce, relayed as one span once their headers are scanned.

A read from the backend usually holds a statement's whole answer (PostgreSQL 15
documentation §55.2.2, §55.2.3):

* a simple Query: RowDescription, DataRow…, CommandComplete, ReadyForQuery;
* libpq's Bind / Describe portal / Execute / Sync: BindComplete (already relayed
  in the span by the pump), RowDescription, DataRow…, CommandComplete,
  ReadyForQuery.

When the result's columns were planned empty before — for the same decision
object and policy version (a Query, ``_query_plans``) or for the same prepared
statement, columns and result formats (an Execute, ``Prepared.plans``) — and the
decision sets no row cap, the relay checks each header, audits the statement and
appends the bytes once, instead of one handler per message. Anything else (a
mask, a cap, a state refresh, an error or notice in between, a tag or
RowDescription not decoded before, a malformed frame) returns 0 and the pump
goes on message by message, where every check is made and any fault is raised.
This is a mixin of ``QueryRelay``; it holds no state of its own.
"""

from __future__ import annotations

import time
from collections import deque

from sqlbastion.policies.model import Decision
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.postgres.tracking import (
    MAX_PENDING_ITEMS,
    MAX_PORTALS,
    SCRATCH_OUTCOME,
    Kind,
    Pending,
    Portal,
    Prepared,
)
from sqlbastion.proxy.session import (
    EMPTY_MASK_PLAN,
    MaskPlan,
    Session,
    StatementOutcome,
    Verdict,
    new_event_id,
)

__all__ = ["WholeAnswers"]

_I32 = p._I32  # the protocol module's Int32 struct
_STATUSES = (b"I", b"T", b"E")  # ReadyForQuery's transaction status (§55.7)


class WholeAnswers:
    """The one-pass half of QueryRelay (which sets every attribute declared here)."""

    session: Session
    max_message: int
    _items: deque[Pending]
    _to_client: bytearray
    _status: bytes
    _reply_hold: int
    _plan: MaskPlan | None
    _row_passthrough: bool
    _discarding: bool
    _tags: dict[bytes, tuple[str, int]]
    _row_cache: dict[bytes, tuple[RowColumn, ...]]
    _query_plans: dict[bytes, tuple[Decision, str]]
    _to_backend: bytearray
    _statements: dict[bytes, Prepared]
    _portals: dict[bytes, Portal]
    _refresh_at_sync: bool
    _hold: bool

    def _state_key(self) -> tuple[object, ...]:
        raise NotImplementedError  # StatementHandling's

    def _flush_span(self, buf: bytes | bytearray, start: int, end: int) -> None:
        raise NotImplementedError  # QueryRelay's

    def _finish(self, item: Pending) -> None:
        raise NotImplementedError  # QueryRelay's

    def _answer_tail(self, buf: bytes | bytearray, q: int, n: int) -> tuple[int, int, int, bytes, int] | None:
        """From just after a RowDescription: DataRow…, CommandComplete ``SELECT n``,
        ReadyForQuery, all complete in ``buf[q:n]``. Returns (end of the rows, rows, the tag's
        count, transaction status, end of ReadyForQuery), or None for any other shape."""
        unpack = _I32.unpack_from
        max_message = self.max_message
        nrows = 0
        length: int
        while n - q >= 5 and buf[q] == p.DATA_ROW:  # DataRow: Byte1 'D', Int32 length (§55.7)
            length = unpack(buf, q + 1)[0]
            if length < 4 or length > max_message or q + 1 + length > n:
                return None
            q += 1 + length
            nrows += 1
        rows_end = q
        # CommandComplete: Byte1 'C', Int32 length, String tag; ReadyForQuery: 'Z', Int32 5, Byte1 status.
        if n - q < 5 or buf[q] != p.COMMAND_COMPLETE:
            return None
        length = unpack(buf, q + 1)[0]
        tag_end = q + 1 + length
        if length < 5 or length > max_message or n - tag_end < 6:
            return None
        tag = self._tags.get(bytes(buf[q + 5 : tag_end]))  # decoded once before by _complete
        if tag is None or tag[0] != "SELECT":
            return None
        if buf[tag_end] != p.READY_FOR_QUERY or unpack(buf, tag_end + 1)[0] != 5:
            return None
        status = bytes(buf[tag_end + 5 : tag_end + 6])
        if status not in _STATUSES:
            return None
        return rows_end, nrows, tag[1], status, tag_end + 6

    def _relay_whole(
        self,
        buf: bytes | bytearray,
        pos: int,
        end: int,
        *,
        span: int,
        item: Pending,
        tail: tuple[int, int, int, bytes, int],
    ) -> int:
        """The statement audited, then its answer ``buf[pos:]`` appended as one span, from
        ``span`` (the part of the pump's span not yet flushed, if any); the items it answers are
        already off the queue. What ``_complete`` and ``_ready`` do, in one."""
        rows_end, nrows, count, status, done = tail
        outcome = item.outcome
        outcome.rows = max(outcome.rows + nrows, count)
        outcome.bytes_sent += rows_end - end  # the rows, as _flush_span counts them
        self._status = status
        self.session.state.in_transaction = status != b"I"
        self._finish(item)  # audited before the reply's bytes are appended
        self._reply_hold = -1
        self._to_client += memoryview(buf)[span:done]
        return done

    def _whole_query_result(
        self, buf: bytes | bytearray, pos: int, end: int, n: int, *, span: int, item: Pending
    ) -> int:
        """A simple Query's whole answer from its RowDescription at ``buf[pos:end]``. Returns the
        offset after its ReadyForQuery, or 0 when the pump must go message by message."""
        verdict = item.verdict
        if verdict is None or item.swallow or item.refresh_state:
            return 0
        decision = verdict.decision
        if decision.max_rows is not None or self._plan is not None or self._row_passthrough or self._discarding:
            return 0
        hit = self._query_plans.get(bytes(buf[pos + 5 : end]))
        if hit is None or hit[0] is not decision or hit[1] != self.session.runtime.engine.version:
            return 0
        tail = self._answer_tail(buf, end, n)
        if tail is None:
            return 0
        if span < pos:
            self._flush_span(buf, span, pos)  # counted in this Query's bytes_sent, as the pump does
        self._items.popleft()
        return self._relay_whole(buf, pos, end, span=pos, item=item, tail=tail)

    def _whole_execute_result(self, buf: bytes | bytearray, pos: int, end: int, n: int, *, span: int) -> int:
        """Describe portal, Execute of that portal, Sync (what libpq sends for a prepared
        statement): their whole answer from the RowDescription at ``buf[pos:end]``. Returns the
        offset after the ReadyForQuery, or 0 when the pump must go message by message."""
        items = self._items
        describe, execute, sync = items[0], items[1], items[2]
        portal = describe.portal
        if (
            portal is None
            or describe.swallow
            or execute.kind != Kind.EXECUTE
            or execute.portal is not portal
            or execute.swallow
            or sync.kind != Kind.SYNC
            or sync.swallow
            or sync.refresh_state
        ):
            return 0
        verdict = execute.verdict
        if verdict is None or verdict.decision.max_rows is not None:
            return 0
        if self._plan is not None or self._row_passthrough or self._discarding:
            return 0
        row = self._row_cache.get(bytes(buf[pos + 5 : end]))
        if row is None:
            return 0
        plan = portal.statement.plans.get((row, portal.formats))
        if plan is None or not (plan is EMPTY_MASK_PLAN or plan.empty):
            return 0  # only a plan that masks nothing is reused (results.py, _start_result)
        tail = self._answer_tail(buf, end, n)
        if tail is None:
            return 0
        # The span before the RowDescription (the BindComplete) goes out with the answer: the
        # pump would count it to the Describe at the head, which is no statement.
        portal.row = row
        items.popleft()
        items.popleft()
        items.popleft()
        return self._relay_whole(buf, pos, end, span=span, item=execute, tail=tail)

    def _whole_prepared_batch(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """The client's Bind, Describe portal, Execute, Sync of the same portal (what libpq sends
        for a prepared statement, §55.2.3), all complete in ``buf[pos:n]``, of a statement
        prepared through the protocol and decided for the current session state: what
        ``_bind``, ``_describe``, ``_execute`` and ``_sync`` do, then the four frames forwarded
        as one span. Returns the offset after the Sync, or 0 when the pump must go message by
        message (another shape, a statement to decide again or refuse, the in-flight limit)."""
        if len(self._items) + 3 >= MAX_PENDING_ITEMS:
            return 0
        unpack = _I32.unpack_from
        max_message = self.max_message
        # Each frame: Byte1 type, Int32 length counting itself (§55.7).
        length: int = unpack(buf, pos + 1)[0]
        bind_end = pos + 1 + length
        if length < 4 or length > max_message or n - bind_end < 5 or buf[bind_end] != p.DESCRIBE:
            return 0
        length = unpack(buf, bind_end + 1)[0]
        describe_end = bind_end + 1 + length
        if length < 4 or length > max_message or n - describe_end < 5 or buf[describe_end] != p.EXECUTE:
            return 0
        length = unpack(buf, describe_end + 1)[0]
        execute_end = describe_end + 1 + length
        if length < 4 or length > max_message or n - execute_end < 5 or buf[execute_end] != p.SYNC:
            return 0
        if unpack(buf, execute_end + 1)[0] != 4:
            return 0
        done = execute_end + 5
        # Bind: the same checks as its handler (a malformed one raises here as it would there).
        portal_name, statement_name, formats = p.decode_bind_fields(bytes(buf[pos + 5 : bind_end]))
        # Describe: Byte1 'P', String portal; Execute: String portal, Int32 row limit.
        if bytes(buf[bind_end + 5 : describe_end]) != b"P" + portal_name + b"\x00":
            return 0
        if describe_end + 10 + len(portal_name) != execute_end:
            return 0
        if bytes(buf[describe_end + 5 : describe_end + 6 + len(portal_name)]) != portal_name + b"\x00":
            return 0
        stmt = self._statements.get(statement_name)
        if stmt is None or stmt.state_key != self._state_key():
            return 0  # refused, or decided again, by _bind
        portals = self._portals
        if len(portals) >= MAX_PORTALS and portal_name not in portals:
            del portals[next(iter(portals))]  # as _bind: forget the oldest
        portal = Portal(statement=stmt, formats=formats, described=True)
        portals[portal_name] = portal
        base = stmt.verdict
        now = time.perf_counter_ns()
        verdict = Verdict(
            decision=base.decision,
            event_id=new_event_id(),
            started_ns=now,
            sql_text=base.sql_text,
            message=base.message,
        )
        items = self._items
        items.append(Pending(Kind.BIND, None, False, False, None, portal, False, 0, SCRATCH_OUTCOME))
        items.append(Pending(Kind.DESCRIBE, None, False, False, None, portal, False, 0, SCRATCH_OUTCOME))
        items.append(Pending(Kind.EXECUTE, verdict, False, False, None, portal, False, now, StatementOutcome()))
        sync = Pending(Kind.SYNC, None, False, False, None, None, False, 0, SCRATCH_OUTCOME)
        items.append(sync)
        if stmt.changes_state or self._refresh_at_sync:
            # The state may change: after this Sync's ReadyForQuery, read it again (as _sync).
            self._refresh_at_sync = False
            sync.refresh_state = True
            self._hold = True
        self._to_backend += memoryview(buf)[pos:done]
        return done
