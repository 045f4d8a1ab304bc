"""Client messages of the PostgreSQL relay: the statements and what answers them.

Every Query and Parse goes to ``Session.authorize``; Bind, Describe, Execute
and Close act on the prepared statements and portals the client made through
the protocol (PostgreSQL 15 documentation §55.2.2, §55.2.3, §55.7). Each
message the backend will answer gets a ``Pending`` entry in the order it will
answer. A refused message is replaced, in the same position of the stream, by
a stand-in the server rejects (relay module docstring). This is a mixin of
``QueryRelay``; it holds no state of its own.
"""

from __future__ import annotations

import time
from collections import deque

from sqlbastion.policies.model import Action, Decision
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import ProtocolViolation
from sqlbastion.proxy.postgres.tracking import (
    MAX_PORTALS,
    MAX_PREPARED,
    REFUSED_NAME,
    REFUSED_SQL,
    SCRATCH_OUTCOME,
    Kind,
    Pending,
    Portal,
    Prepared,
    may_change_state,
)
from sqlbastion.proxy.session import Session, StatementOutcome, Verdict, blocked_message, new_event_id

__all__ = ["StatementHandling"]

# Bind of a statement that cannot exist into the unnamed portal, no parameters, no formats.
_BIND_STAND_IN = p.encode_message(p.BIND, b"\x00" + REFUSED_NAME + b"\x00" + b"\x00" * 6)


class StatementHandling:
    """The client-message half of QueryRelay (which sets every attribute declared here)."""

    session: Session
    max_statement_bytes: int
    _encoding: str
    _items: deque[Pending]
    _to_backend: bytearray
    _to_client: bytearray
    _statements: dict[bytes, Prepared]
    _portals: dict[bytes, Portal]
    _skip_to_sync: bool
    _refresh_at_sync: bool
    _hold: bool
    _status: bytes

    def _sync(self, body: bytes, frame: bytes) -> None:
        item = Pending(Kind.SYNC, None, False, False, None, None, False, 0, SCRATCH_OUTCOME)
        self._items.append(item)
        self._to_backend += frame
        if self._refresh_at_sync:
            self._refresh_at_sync = False
            item.refresh_state = True
            self._hold = True

    def _flush_message(self, body: bytes, frame: bytes) -> None:
        self._to_backend += frame

    def _forward(
        self,
        kind: str,
        frame: bytes,
        verdict: Verdict | None = None,
        *,
        statement: Prepared | None = None,
        portal: Portal | None = None,
        refused: bool = False,
        swallow: bool = False,
        refresh_state: bool = False,
    ) -> Pending:
        if verdict is None and kind != Kind.INTERNAL:
            # Not a statement: no timing, and a scratch outcome nobody reads.
            item = Pending(kind, None, refused, swallow, statement, portal, refresh_state, 0, SCRATCH_OUTCOME)
        else:
            item = Pending(
                kind,
                verdict,
                refused,
                swallow,
                statement,
                portal,
                refresh_state,
                time.perf_counter_ns(),
                StatementOutcome(),
            )
        self._items.append(item)
        self._to_backend += frame
        return item

    def _decode_sql(self, raw: bytes) -> str:
        return raw.decode(self._encoding, "replace")

    def _state_key(self) -> tuple[object, ...]:
        # What a prepared statement's decision depends on: the session state, and the policy in
        # force (a reload changes its version: the next Bind is decided again, its plans dropped).
        s = self.session
        st = s.state
        return (
            st.database,
            st.search_path,
            st.standard_conforming_strings,
            st.client_encoding,
            s.runtime.engine.version,
        )

    def _authorize(self, raw: bytes) -> Verdict:
        limit = self.max_statement_bytes
        if limit and len(raw) > limit:
            return self._refusal(raw[:200], f"the statement is longer than {limit} bytes")
        return self.session.authorize(self._decode_sql(raw))

    def _refusal(self, raw: bytes, reason: str) -> Verdict:
        """A verdict for something the proxy refuses before the policy engine sees it."""
        decision = Decision(action=Action.BLOCK, reason=reason, policy_version=self.session.runtime.engine.version)
        event_id = new_event_id()
        return Verdict(
            decision=decision,
            event_id=event_id,
            started_ns=time.perf_counter_ns(),
            sql_text=self._decode_sql(raw),
            message=blocked_message(decision, event_id),
        )

    def _query(self, body: bytes, frame: bytes) -> None:
        sql = p.decode_query(body)
        limit = self.max_statement_bytes
        if limit and len(sql) > limit:
            verdict = self._refusal(sql[:200], f"the statement is longer than {limit} bytes")
        else:  # _authorize, inlined: the simple-query hot path
            verdict = self.session.authorize(sql.decode(self._encoding, "replace"))
        if verdict.allowed:
            refresh = may_change_state(sql)
            ns = time.perf_counter_ns()
            self._items.append(Pending(Kind.QUERY, verdict, False, False, None, None, refresh, ns, StatementOutcome()))
            self._to_backend += frame
            self._hold = refresh
            return
        if not self._items and self._status == b"I":
            # Idle and nothing in flight: answer without a round trip.
            self._to_client += p.encode_error("ERROR", "42501", verdict.message)
            self._to_client += p.encode_ready_for_query(b"I")
            self.session.finish(verdict, StatementOutcome())
            return
        self._forward(Kind.QUERY, p.encode_message(p.QUERY, REFUSED_SQL + b"\x00"), verdict=verdict, refused=True)

    def _function_call(self, body: bytes, frame: bytes) -> None:
        verdict = self._refusal(b"<FunctionCall message>", "the FunctionCall message is not supported; use SELECT")
        self._forward(Kind.QUERY, p.encode_message(p.QUERY, REFUSED_SQL + b"\x00"), verdict=verdict, refused=True)

    def _parse(self, body: bytes, frame: bytes) -> None:
        msg = p.decode_parse(body)
        verdict = self._authorize(msg.query)
        if not verdict.allowed:
            if not msg.name:
                self._statements.pop(b"", None)  # a failed Parse still drops the unnamed statement
            stand_in = p.encode_parse(msg.name, REFUSED_SQL)
            self._forward(Kind.PARSE, stand_in, verdict=verdict, refused=True)
            self._skip_to_sync = True
            return
        if len(self._statements) >= MAX_PREPARED and msg.name not in self._statements:
            raise ProtocolViolation(f"more than {MAX_PREPARED} prepared statements", sqlstate="53400")
        stmt = Prepared(
            sql=verdict.sql_text,
            verdict=verdict,
            state_key=self._state_key(),
            changes_state=may_change_state(msg.query),
        )
        if msg.name:
            self._statements.setdefault(msg.name, stmt)  # an existing name makes the server refuse it
        else:
            self._statements[b""] = stmt
        self._forward(Kind.PARSE, frame, statement=stmt, verdict=verdict)

    def _refuse_extended(self, verdict: Verdict, stand_in: bytes, kind: str) -> None:
        self._forward(kind, stand_in, verdict=verdict, refused=True)
        self._skip_to_sync = True

    def _bind(self, body: bytes, frame: bytes) -> None:
        portal_name, statement_name, formats = p.decode_bind_fields(body)
        stmt = self._statements.get(statement_name)
        if stmt is None:
            # Prepared with SQL PREPARE, or unknown: its decision and columns are not known here.
            verdict = self._refusal(statement_name, "the statement was not prepared through the protocol")
            self._refuse_extended(verdict, _BIND_STAND_IN, Kind.BIND)
            return
        if stmt.state_key != self._state_key():
            # The session state the decision depended on changed since Parse: decide again.
            verdict = self._authorize(stmt.sql.encode(self._encoding, "replace"))
            if not verdict.allowed:
                self._refuse_extended(verdict, _BIND_STAND_IN, Kind.BIND)
                return
            stmt.verdict, stmt.state_key = verdict, self._state_key()
            stmt.plans.clear()
        portals = self._portals
        if len(portals) >= MAX_PORTALS and portal_name not in portals:
            # Forget the oldest; executing it later is refused (fail closed), never unplanned.
            del portals[next(iter(portals))]
        portal = Portal(statement=stmt, formats=formats, described=stmt.described)
        portals[portal_name] = portal
        # _forward, inlined on the prepared-statement hot path (as in _execute, _describe, _sync).
        self._items.append(Pending(Kind.BIND, None, False, False, None, portal, False, 0, SCRATCH_OUTCOME))
        self._to_backend += frame

    def _execute(self, body: bytes, frame: bytes) -> None:
        name, _limit = p.decode_execute(body)
        portal = self._portals.get(name)
        if portal is None:
            # A cursor opened with SQL DECLARE, or unknown: refuse rather than relay unplanned rows.
            verdict = self._refusal(name, "the portal was not created through the protocol")
            stand_in = p.encode_message(p.EXECUTE, REFUSED_NAME + b"\x00\x00\x00\x00\x00")
            self._refuse_extended(verdict, stand_in, Kind.EXECUTE)
            return
        if not portal.described and portal.row is None:
            # Rows must never arrive before their columns are known: ask for them.
            self._forward(
                Kind.DESCRIBE, p.encode_message(p.DESCRIBE, b"P" + name + b"\x00"), portal=portal, swallow=True
            )
            portal.described = True
        base = portal.statement.verdict
        now = time.perf_counter_ns()
        verdict = Verdict(
            decision=base.decision,
            event_id=new_event_id(),
            started_ns=now,
            sql_text=base.sql_text,
            message=base.message,
        )
        self._items.append(Pending(Kind.EXECUTE, verdict, False, False, None, portal, False, now, StatementOutcome()))
        self._to_backend += frame
        if portal.statement.changes_state:
            self._refresh_at_sync = True

    def _describe(self, body: bytes, frame: bytes) -> None:
        target, name = p.decode_close_or_describe(body, "Describe")
        if target == 0x53:
            stmt = self._statements.get(name)
            if stmt is not None:
                stmt.described = True
            self._forward(Kind.DESCRIBE, frame, statement=stmt)
        else:
            portal = self._portals.get(name)
            if portal is not None:
                portal.described = True
            self._items.append(Pending(Kind.DESCRIBE, None, False, False, None, portal, False, 0, SCRATCH_OUTCOME))
            self._to_backend += frame

    def _close(self, body: bytes, frame: bytes) -> None:
        target, name = p.decode_close_or_describe(body, "Close")
        if target == 0x53:
            self._statements.pop(name, None)
        else:
            self._portals.pop(name, None)
        self._forward(Kind.CLOSE, frame)
