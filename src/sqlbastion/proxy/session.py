"""The protocol-neutral session: identity, decision, masking hook and audit hook.

Both protocol proxies own one ``Session`` per client connection. They call:

* ``authorize(sql)`` before a statement (or a message of several statements)
  reaches the backend. The returned ``Verdict`` says whether to forward it and,
  if not, the exact client-facing message (DESIGN.md, "Error messages").
* ``mask_plan(verdict, columns)`` when a result's column metadata arrives; an
  empty plan means the rows are relayed as raw bytes.
* ``finish(verdict, outcome)`` once the backend has answered (or the statement
  was refused), which writes the statement's audit event.

The session never does I/O itself: the policy engine, masking and the audit
emitter it is given are pure or non-blocking, so this module is usable from
playbook tests without sockets.

These three run for every statement, so each does only what the statement
itself changes (``bench/session_bench.py`` measures them): what the metrics
and the audit event take from a decision is derived once per decision object,
the statement context once per state change or second, the audit event is a
copy of a per-session template, and the metrics are plain per-session
counters (``observability.tally``). Every statement is still decided, every
result planned and every statement audited.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from sqlbastion.observability.metrics import METRICS, statement_type_label
from sqlbastion.policies.model import Action, Decision, StatementContext

if TYPE_CHECKING:
    from sqlbastion.config import BackendSettings

Protocol_ = Literal["mysql", "postgres"]


# Event ids need uniqueness, not secrecy: a generator seeded once from the OS
# (and again in a forked child, so parent and child never share a sequence)
# saves a getrandom system call per statement.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
_random_bits = _ids.getrandbits
# The id's first 14 characters name the millisecond: formatted once per millisecond. A tuple
# swapped whole, so a thread never pairs one millisecond with another's text.
_ms_prefix: tuple[int, str] = (-1, "")
# Over 80 random bits: clear the version nibble and the variant's two bits, then set
# version 7 and variant 0b10 (RFC 9562 §5.7); 74 random bits remain.
_KEEP = 0x0FFF_3FFF_FFFF_FFFF_FFFF
_SET = 0x7000_8000_0000_0000_0000


def new_event_id() -> str:
    """A time-ordered unique id (UUIDv7 layout, RFC 9562): 48-bit ms time, version, 74 random bits."""
    global _ms_prefix  # a per-millisecond memo, swapped whole (see above)
    ms = time.time_ns() // 1_000_000
    prefix = _ms_prefix
    if prefix[0] != ms:
        prefix = _ms_prefix = (ms, f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-")
    h = "%020x" % (_random_bits(80) & _KEEP | _SET)  # %-format: 40 % faster than an f-string here
    return f"{prefix[1]}{h[:4]}-{h[4:8]}-{h[8:]}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientInfo:
    address: str
    port: int
    protocol: Protocol_
    tls: bool = False
    application_name: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ResultColumn:
    """A result column as the wire protocol describes it, protocol-neutral.

    MySQL fills ``schema``/``table``/``column`` from ColumnDefinition41
    ``schema``/``org_table``/``org_name``; PostgreSQL from RowDescription's table
    OID and attribute number, resolved through the catalog.
    """

    name: str
    schema: str | None = None
    table: str | None = None
    column: str | None = None
    type_name: str = "text"
    binary: bool = False


class ColumnMasker(Protocol):
    """Masks one column's text-format value (bytes as the wire carries them)."""

    def __call__(self, value: bytes | None) -> bytes | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskPlan:
    """Per result column, the masker to apply, or None to pass the value through."""

    columns: tuple[ColumnMasker | None, ...] = ()
    functions: tuple[str | None, ...] = ()
    refuse: str | None = None  # set when the result must not be sent at all
    # True when nothing is masked or refused: rows are relayed as raw bytes. Computed once
    # here, because the relays ask it per result and per row.
    empty: bool = field(init=False, default=True, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", self.refuse is None and all(c is None for c in self.columns))


EMPTY_MASK_PLAN = MaskPlan()

# decision_facts: (allowed, the statements_total key (statement type label, action, rule
# label), number of sensitive columns, the audit event's fields the decision fixes).
_DecisionFacts = tuple[bool, tuple[str, str, str], int, dict[str, object]]
_MAX_MEMO_DECISIONS = 4096
# id(decision) → (decision, facts), for every session of the process; holding the decision
# keeps its id from being reused while the entry lives.
_facts_memo: dict[int, tuple[Decision, _DecisionFacts]] = {}


def decision_facts(d: Decision) -> _DecisionFacts:
    """What the metrics and a statement's audit event take from a decision.

    Derived once per decision object. Decisions are frozen and the engine returns the same
    object on every cache hit (and a prepared statement reuses its Parse's), so a memo by
    identity is exact. Bounded; a full memo starts again empty.
    """
    entry = _facts_memo.get(id(d))
    if entry is not None and entry[0] is d:
        return entry[1]
    types = d.statement_types
    hit = d.primary_hit
    action = d.action.value
    stype = statement_type_label(types[0]) if len(types) == 1 else ("multi" if types else "unknown")
    sensitive = tuple(str(c) for c in d.sensitive_columns)
    fields: dict[str, object] = {
        "decision": action,
        "rule_ids": d.rule_ids,
        "reason": d.reason,
        "statement_types": types,
        "fingerprint": d.fingerprint,
        "objects_read": d.objects_read,
        "objects_written": d.objects_written,
        "columns_read": tuple(str(c) for c in d.columns_read),
        "sensitive_columns": sensitive,
        "policy_version": d.policy_version,
    }
    facts: _DecisionFacts = (
        d.allowed,
        (stype, action, hit.rule_id if hit is not None else "none"),
        len(sensitive),
        fields,
    )
    if len(_facts_memo) >= _MAX_MEMO_DECISIONS:
        _facts_memo.clear()
    _facts_memo[id(d)] = (d, facts)
    return facts


@dataclass(frozen=True, kw_only=True, slots=True, init=False)
class Verdict:
    """The session's answer for one client message."""

    decision: Decision
    event_id: str
    started_ns: int
    sql_text: str
    message: str = ""  # the client-facing error text when not allowed
    # decision.allowed, kept as a field: the proxies ask it several times per statement.
    allowed: bool = field(default=False, compare=False)

    def __init__(self, *, decision: Decision, event_id: str, started_ns: int, sql_text: str, message: str = "") -> None:
        # Made for every statement. A frozen dataclass's own __init__ assigns each field through
        # object.__setattr__; the slots' own setters do the same in about half the time, and
        # the instance stays frozen (assignment still raises FrozenInstanceError).
        action = decision.action
        _set_decision(self, decision)
        _set_event_id(self, event_id)
        _set_started_ns(self, started_ns)
        _set_sql_text(self, sql_text)
        _set_message(self, message)
        _set_allowed(self, action is Action.ALLOW or action is Action.ALERT)


# The slot descriptors' setters of the class the decorator built (slots=True makes a new class).
_set_decision = Verdict.__dict__["decision"].__set__
_set_event_id = Verdict.__dict__["event_id"].__set__
_set_started_ns = Verdict.__dict__["started_ns"].__set__
_set_sql_text = Verdict.__dict__["sql_text"].__set__
_set_message = Verdict.__dict__["message"].__set__
_set_allowed = Verdict.__dict__["allowed"].__set__


@dataclass(kw_only=True, slots=True)
class StatementOutcome:
    rows: int = 0
    affected: int = 0
    bytes_sent: int = 0
    backend_error: str | None = None
    backend_us: int = 0
    masked_values: int = 0


class DecisionEngine(Protocol):
    """What the policy layer offers the session (policies.engine implements it)."""

    @property
    def version(self) -> str: ...

    def roles_of(self, person: str) -> tuple[str, ...]: ...

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        """At login: None to admit, else the refusal reason (``network``, ``time_window``,
        ``expired``, ``unknown_person``, ``max_sessions``). Called after the password check."""
        ...

    def decide(self, sql: str, ctx: StatementContext) -> Decision: ...


class MaskPlanner(Protocol):
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan: ...


class AuditHook(Protocol):
    """Non-blocking audit emission (audit.pipeline implements it)."""

    def emit(self, event: dict[str, object]) -> None: ...

    def accepting(self) -> bool:
        """False when the spool cannot take events and the policy is fail_closed."""
        ...


class PassThroughEngine:
    """Allows everything. Used only where no policy is configured and in codec tests."""

    version = "none"

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    _allowed: Decision | None = None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        # One decision object for every statement: decisions are frozen, and the session
        # derives what it needs from a decision once per object.
        d = self._allowed
        if d is None or d.policy_version != self.version:
            d = Decision(action=Action.ALLOW, reason="no policy configured", policy_version=self.version)
            self._allowed = d
        return d


class NoMasking:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        return EMPTY_MASK_PLAN


class DiscardAudit:
    def emit(self, event: dict[str, object]) -> None:
        return None

    def accepting(self) -> bool:
        return True


@dataclass(kw_only=True, slots=True)
class SessionState:
    """Session state that changes what a statement means (DESIGN.md, decision 4)."""

    database: str | None = None
    search_path: tuple[str, ...] = ()
    ansi_quotes: bool = False
    no_backslash_escapes: bool = False
    standard_conforming_strings: bool = True
    client_encoding: str = "utf8"
    in_transaction: bool = False


@dataclass(kw_only=True, slots=True)
class Runtime:
    """The process-wide services a session uses."""

    engine: DecisionEngine = field(default_factory=PassThroughEngine)
    masking: MaskPlanner = field(default_factory=NoMasking)
    audit: AuditHook = field(default_factory=DiscardAudit)


def blocked_message(decision: Decision, event_id: str) -> str:
    """The client-facing text for a refused statement (DESIGN.md)."""
    hit = decision.primary_hit
    verb = "held for review" if decision.action is Action.REVIEW else "blocked"
    if hit is None:
        return f"sqlbastion: statement {verb}: {decision.reason or 'not allowed'}. Audit ref {event_id}."
    return f"sqlbastion: statement {verb} by rule {hit.rule_id} ({hit.title}): {hit.why}. Audit ref {event_id}."


class Session:
    """One authenticated person's connection through one backend."""

    def __init__(
        self,
        *,
        runtime: Runtime,
        backend: BackendSettings,
        person: str,
        client: ClientInfo,
        session_id: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.backend = backend
        self.person = person
        self.client = client
        self.session_id = session_id or new_event_id()
        self.roles = runtime.engine.roles_of(person)
        self.state = SessionState(database=backend.database)
        self.statements = 0
        self._metrics = METRICS.recorder(protocol=client.protocol, backend=backend.name, person=person)
        self._masks_applied: dict[str, list[dict[str, str]]] = {}
        self._context_key: tuple[object, ...] = ()
        self._context: StatementContext | None = None
        self._last_decision: Decision | None = None
        self._last_facts: _DecisionFacts = (False, ("", "", ""), 0, {})
        self._event_template: dict[str, object] | None = None

    def _decision_facts(self, d: Decision) -> _DecisionFacts:
        if d is self._last_decision:  # the usual case: the same statement shape again
            return self._last_facts
        facts = decision_facts(d)
        self._last_decision, self._last_facts = d, facts
        return facts

    def _template(self) -> dict[str, object]:
        """Every key of a statement event in its order, with this session's values (made on first use)."""
        template = self._event_template
        if template is None:
            template = self._event_template = {
                "kind": "statement",
                "event_id": "",
                "session_id": self.session_id,
                "person": self.person,
                "roles": self.roles,
                "client_address": self.client.address,
                "application_name": self.client.application_name,
                "protocol": self.client.protocol,
                "backend": self.backend.name,
                "database": None,
                "sql_text": "",
                "decision": "",
                "rule_ids": (),
                "reason": "",
                "statement_types": (),
                "fingerprint": "",
                "objects_read": (),
                "objects_written": (),
                "columns_read": (),
                "sensitive_columns": (),
                "rows": 0,
                "affected": 0,
                "bytes_sent": 0,
                "backend_error": None,
                "proxy_us": 0,
                "backend_us": 0,
                "masked_values": 0,
                "policy_version": "",
                "masks_applied": (),
            }
        return template

    def context(self) -> StatementContext:
        """The statement context for the current session state.

        Rebuilt only when the state changed or the clock moved to another
        second: time windows are judged to the second, and building the
        context is a measurable share of a cached decision's cost.
        """
        s = self.state
        key = (
            s.database,
            s.search_path,
            s.ansi_quotes,
            s.no_backslash_escapes,
            s.standard_conforming_strings,
            s.client_encoding,
            s.in_transaction,
            int(time.time()),
        )
        if key == self._context_key and self._context is not None:
            return self._context
        ctx = StatementContext(
            person=self.person,
            roles=self.roles,
            backend=self.backend.name,
            dialect=self.client.protocol,
            database=s.database,
            search_path=s.search_path,
            ansi_quotes=s.ansi_quotes,
            no_backslash_escapes=s.no_backslash_escapes,
            standard_conforming_strings=s.standard_conforming_strings,
            client_encoding=s.client_encoding,
            client_address=self.client.address,
            now=datetime.now(UTC),
            in_transaction=s.in_transaction,
        )
        self._context_key = key
        self._context = ctx
        return ctx

    def authorize(self, sql: str) -> Verdict:
        """Decide on one client message. Never raises for bad SQL: that is a block."""
        started = time.perf_counter_ns()
        event_id = new_event_id()
        self.statements += 1
        if not self.runtime.audit.accepting():
            METRICS.audit_refusals.inc()
            decision = Decision(
                action=Action.BLOCK,
                reason="the audit spool cannot record statements (on_audit_failure = fail_closed)",
                policy_version=self.runtime.engine.version,
            )
        else:
            decision = self.runtime.engine.decide(sql, self.context())
        action = decision.action
        message = "" if action is Action.ALLOW or action is Action.ALERT else blocked_message(decision, event_id)
        return Verdict(decision=decision, event_id=event_id, started_ns=started, sql_text=sql, message=message)

    def mask_plan(self, verdict: Verdict, columns: Sequence[ResultColumn]) -> MaskPlan:
        plan = self.runtime.masking.plan(verdict.decision, self.context(), columns)
        if not plan.empty:
            self._metrics.masked_result(plan.refuse is not None)
            # Which columns were masked with what goes into the statement's audit event.
            applied = self._masks_applied.setdefault(verdict.event_id, [])
            for rc, function in zip(columns, plan.functions, strict=False):
                if function is not None and len(applied) < 64:
                    schema, table, column = rc.schema, rc.table, rc.column
                    if schema and table and column:  # the usual case, without a generator
                        source = f"{schema}.{table}.{column}"
                    else:
                        source = ".".join(p for p in (schema, table, column) if p) or rc.name
                    applied.append({"column": source, "function": function})
        return plan

    def finish(self, verdict: Verdict, outcome: StatementOutcome) -> None:
        """Count the statement in the metrics and record its audit event.

        Array values are tuples (the decision's own, shared by every statement it
        decides): the audit hook reads the event and must not change it.
        """
        backend_us = outcome.backend_us
        elapsed_us = (time.perf_counter_ns() - verdict.started_ns) // 1000
        proxy_us = elapsed_us - backend_us if elapsed_us > backend_us else 0
        allowed, key, sensitive, decided = self._decision_facts(verdict.decision)
        rows = outcome.rows
        backend_error = outcome.backend_error
        self._metrics.count(key, allowed, sensitive, proxy_us, backend_us, rows, bool(backend_error))
        # Every key already in place, in order: only values change below.
        event = (self._event_template or self._template()).copy()
        event.update(decided)
        event_id = event["event_id"] = verdict.event_id
        event["database"] = self.state.database
        event["sql_text"] = verdict.sql_text
        event["rows"] = rows
        event["affected"] = outcome.affected
        event["bytes_sent"] = outcome.bytes_sent
        event["backend_error"] = backend_error
        event["proxy_us"] = proxy_us
        event["backend_us"] = backend_us
        event["masked_values"] = outcome.masked_values
        if self._masks_applied:
            event["masks_applied"] = self._masks_applied.pop(event_id, ())
        self.runtime.audit.emit(event)

    def opened(self) -> None:
        """Count the connection; call once authentication succeeded."""
        METRICS.connections_total.labels(self.client.protocol, self.backend.name).inc()
        METRICS.connections_active.labels(self.client.protocol, self.backend.name).inc()
        # The policy engine counts sessions per person for max_sessions (optional hook).
        hook = getattr(self.runtime.engine, "session_opened", None)
        if hook is not None:
            hook(self.person)
        self.runtime.audit.emit(self._connection_event("connection_opened"))

    def closed(self, reason: str = "") -> None:
        """Call once when the client connection ends (after ``opened``)."""
        METRICS.connections_active.labels(self.client.protocol, self.backend.name).dec()
        hook = getattr(self.runtime.engine, "session_closed", None)
        if hook is not None:
            hook(self.person)
        event = self._connection_event("connection_closed")
        event["reason"] = reason
        event["statements"] = self.statements
        self.runtime.audit.emit(event)

    def _connection_event(self, kind: str) -> dict[str, object]:
        return {
            "kind": kind,
            "event_id": new_event_id(),
            "session_id": self.session_id,
            "person": self.person,
            "roles": list(self.roles),
            "client_address": self.client.address,
            "application_name": self.client.application_name,
            "protocol": self.client.protocol,
            "backend": self.backend.name,
            "database": self.state.database,
            "tls": self.client.tls,
        }


def auth_failed(
    runtime: Runtime, *, protocol: Protocol_, backend: str, person: str, client_address: str, reason: str
) -> None:
    """Record a failed authentication (metric + audit event). ``reason`` is a closed set:
    ``bad_credentials``, ``network``, ``time_window``, ``expired``, ``tls_required``, ``timeout``, ``protocol``."""
    METRICS.auth_failures.labels(protocol, backend, reason).inc()
    runtime.audit.emit(
        {
            "kind": "auth_failed",
            "event_id": new_event_id(),
            "person": person,
            "client_address": client_address,
            "protocol": protocol,
            "backend": backend,
            "reason": reason,
        }
    )
