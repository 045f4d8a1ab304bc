"""The protocol-neutral session: decisions, client-facing messages, audit events, fail-closed audit."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, Decision, RuleHit, StatementContext
from sqlbastion.proxy.session import (
    ClientInfo,
    MaskPlan,
    PassThroughEngine,
    ResultColumn,
    Runtime,
    Session,
    StatementOutcome,
    Verdict,
    auth_failed,
    blocked_message,
    new_event_id,
)

SETTINGS = loads(
    """
[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:3307"
host = "127.0.0.1"
port = 3306
user = "svc"
password = "env:X"
database = "bank"
"""
)

DROP_HIT = RuleHit(
    rule_id="HR-DDL-DROP", title="DROP of a table", severity="critical", action=Action.BLOCK, why="DROP TABLE bank.t"
)


class RecordingAudit:
    def __init__(self, accepting: bool = True) -> None:
        self.events: list[dict[str, object]] = []
        self._accepting = accepting

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return self._accepting


class DropBlocker(PassThroughEngine):
    version = "v-test"

    def __init__(self) -> None:
        self.contexts: list[StatementContext] = []

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ("developer",)

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        self.contexts.append(ctx)
        if "drop" in sql.lower():
            return Decision(action=Action.BLOCK, rule_hits=(DROP_HIT,), policy_version=self.version)
        return Decision(action=Action.ALLOW, statement_types=("select",), policy_version=self.version)


def _session(audit: RecordingAudit, engine: DropBlocker | None = None) -> Session:
    runtime = Runtime(engine=engine or DropBlocker(), audit=audit)
    client = ClientInfo(address="10.1.2.3", port=5555, protocol="mysql", application_name="pytest")
    return Session(runtime=runtime, backend=SETTINGS.backends[0], person="alice", client=client)


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(200)]
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    prefixes = [i[:13] for i in ids]
    assert prefixes == sorted(prefixes)


def test_allowed_statement_and_its_audit_event() -> None:
    audit = RecordingAudit()
    engine = DropBlocker()
    s = _session(audit, engine)
    s.opened()
    v = s.authorize("SELECT 1")
    assert v.allowed
    assert v.message == ""
    assert engine.contexts[0].database == "bank"
    assert engine.contexts[0].roles == ("developer",)
    s.finish(v, StatementOutcome(rows=1, backend_us=10))
    s.closed("client quit")
    kinds = [e["kind"] for e in audit.events]
    assert kinds == ["connection_opened", "statement", "connection_closed"]
    stmt = audit.events[1]
    assert stmt["event_id"] == v.event_id
    assert stmt["decision"] == "allow"
    assert stmt["person"] == "alice"
    assert stmt["rows"] == 1
    assert stmt["policy_version"] == "v-test"
    assert audit.events[2]["statements"] == 1


def test_blocked_message_follows_the_design() -> None:
    s = _session(RecordingAudit())
    v = s.authorize("DROP TABLE t")
    assert not v.allowed
    assert v.message == (
        "sqlbastion: statement blocked by rule HR-DDL-DROP (DROP of a table): DROP TABLE bank.t. "
        f"Audit ref {v.event_id}."
    )


def test_review_wording() -> None:
    d = Decision(action=Action.REVIEW, rule_hits=(DROP_HIT,))
    assert blocked_message(d, "E1").startswith("sqlbastion: statement held for review by rule HR-DDL-DROP")
    assert blocked_message(Decision(action=Action.BLOCK, reason="nope"), "E2") == (
        "sqlbastion: statement blocked: nope. Audit ref E2."
    )


def test_audit_that_cannot_record_refuses_statements() -> None:
    s = _session(RecordingAudit(accepting=False))
    v = s.authorize("SELECT 1")
    assert not v.allowed
    assert "audit spool cannot record" in v.message


def test_auth_failure_is_audited() -> None:
    audit = RecordingAudit()
    auth_failed(
        Runtime(audit=audit),
        protocol="postgres",
        backend="core",
        person="mallory",
        client_address="10.0.0.9",
        reason="bad_credentials",
    )
    assert audit.events[0]["kind"] == "auth_failed"
    assert audit.events[0]["reason"] == "bad_credentials"


def test_mask_plan_hook_defaults_to_empty() -> None:
    s = _session(RecordingAudit())
    v = s.authorize("SELECT 1")
    plan = s.mask_plan(v, [ResultColumn(name="x")])
    assert plan.empty


class UpperMasker:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        return MaskPlan(
            columns=tuple(None if c.column != "mobile" else (lambda v: b"***") for c in columns),
            functions=tuple(None if c.column != "mobile" else "mobile" for c in columns),
        )


def test_mask_plan_hook_reaches_the_planner() -> None:
    audit = RecordingAudit()
    runtime = Runtime(engine=DropBlocker(), masking=UpperMasker(), audit=audit)
    s = Session(
        runtime=runtime,
        backend=SETTINGS.backends[0],
        person="alice",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="mysql"),
    )
    v = s.authorize("SELECT mobile FROM customers")
    plan = s.mask_plan(
        v, [ResultColumn(name="id", column="id"), ResultColumn(name="m", table="customers", column="mobile")]
    )
    assert not plan.empty
    assert plan.columns[0] is None
    masker = plan.columns[1]
    assert masker is not None
    assert masker(b"13800001111") == b"***"
    s.finish(v, StatementOutcome(rows=1))
    assert audit.events[-1]["masks_applied"] == [{"column": "customers.mobile", "function": "mobile"}]
    # The next statement starts with no masks recorded.
    v2 = s.authorize("SELECT 1")
    s.finish(v2, StatementOutcome())
    assert not audit.events[-1]["masks_applied"]


def test_event_ids_carry_the_current_millisecond_version_and_variant() -> None:
    import time
    import uuid

    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for i in ids[:: len(ids) // 50]:
        u = uuid.UUID(i)
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after
    # 74 random bits: every hex digit outside the fixed ones takes many values
    assert len({i[15] for i in ids}) == 16
    assert {i[19] for i in ids} == set("89ab")


def test_event_ids_differ_in_a_forked_child() -> None:
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids come from a generator seeded again after the fork
        os.write(write, "".join(new_event_id()[-12:] for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 1000).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = "".join(new_event_id()[-12:] for _ in range(8))
    assert len(child) == 96
    assert child != parent


def test_mask_plan_emptiness_is_computed_once_at_construction() -> None:
    import dataclasses

    def masker(value: bytes | None) -> bytes | None:
        return value

    assert MaskPlan().empty
    assert MaskPlan(columns=(None, None)).empty
    assert not MaskPlan(columns=(None, masker)).empty
    assert not MaskPlan(refuse="withheld").empty
    assert not dataclasses.replace(MaskPlan(columns=(None,)), refuse="withheld").empty
    assert MaskPlan(columns=(None,)) == MaskPlan(columns=(None,))


def test_verdict_allowed_follows_the_action() -> None:
    for action, allowed in ((Action.ALLOW, True), (Action.ALERT, True), (Action.REVIEW, False), (Action.BLOCK, False)):
        v = Verdict(decision=Decision(action=action), event_id="e", started_ns=0, sql_text="x")
        assert v.allowed is allowed


def test_statement_events_encode_as_the_audit_schema_expects() -> None:
    """Arrays are the decision's tuples (shared, immutable); encoded they are JSON arrays."""
    from sqlbastion.audit import jsontext

    audit = RecordingAudit()
    s = _session(audit)
    for sql in ("SELECT 1", "SELECT 2", "DROP TABLE t"):
        s.finish(s.authorize(sql), StatementOutcome(rows=2, backend_us=5))
    allowed, _, blocked = (jsontext.loads(jsontext.dumps(e)) for e in audit.events)
    assert allowed["roles"] == ["developer"]
    assert allowed["statement_types"] == ["select"]
    assert allowed["rule_ids"] == []
    assert allowed["masks_applied"] == []
    assert blocked["rule_ids"] == ["HR-DDL-DROP"]
    assert blocked["decision"] == "block"
    assert audit.events[0]["event_id"] != audit.events[1]["event_id"]
    assert all(isinstance(e["proxy_us"], int) and e["proxy_us"] >= 0 for e in audit.events)


def test_metrics_count_each_statement_once_and_by_its_decision() -> None:
    from sqlbastion.observability.metrics import METRICS

    backend = SETTINGS.backends[0].name
    labels = {"protocol": "mysql", "backend": backend, "statement_type": "select", "decision": "allow"}
    get = METRICS.registry.get_sample_value
    before = get("sqlbastion_statements_total", {**labels, "rule_id": "none"}) or 0
    blocked_before = (
        get(
            "sqlbastion_statements_total",
            {**labels, "statement_type": "unknown", "decision": "block", "rule_id": "HR-DDL-DROP"},
        )
        or 0
    )
    s = _session(RecordingAudit())
    for sql in ("SELECT 1", "SELECT 2", "DROP TABLE t"):
        s.finish(s.authorize(sql), StatementOutcome(rows=1))
    assert get("sqlbastion_statements_total", {**labels, "rule_id": "none"}) == before + 2
    assert (
        get(
            "sqlbastion_statements_total",
            {**labels, "statement_type": "unknown", "decision": "block", "rule_id": "HR-DDL-DROP"},
        )
        == blocked_before + 1
    )


def test_event_ids_from_many_threads_name_the_millisecond_they_were_made_in() -> None:
    """The per-millisecond prefix is shared by threads (the audit writer makes ids too)."""
    import threading
    import time
    import uuid

    made: list[tuple[int, str, int]] = []
    lock = threading.Lock()

    def work() -> None:
        local = []
        for _ in range(3000):
            before = time.time_ns() // 1_000_000
            i = new_event_id()
            local.append((before, i, time.time_ns() // 1_000_000))
        with lock:
            made.extend(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({i for _, i, _ in made}) == len(made)
    for before, i, after in made:
        assert before <= uuid.UUID(i).int >> 80 <= after, i


def test_statement_types_a_client_names_never_become_metric_labels() -> None:
    from sqlbastion.observability.metrics import METRICS

    class Minting(PassThroughEngine):
        def decide(self, sql: str, ctx: StatementContext) -> Decision:
            return Decision(action=Action.ALLOW, statement_types=(sql.split(maxsplit=1)[0].lower(),))

    s = Session(
        runtime=Runtime(engine=Minting(), audit=RecordingAudit()),
        backend=SETTINGS.backends[0],
        person="alice",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="mysql"),
    )
    for i in range(50):
        s.finish(s.authorize(f"FROB{i} x"), StatementOutcome())
        s.finish(s.authorize(f"CREATE_GIZMO{i} x"), StatementOutcome())
    types = {
        sample.labels["statement_type"]
        for family in METRICS.registry.collect()
        if family.name == "sqlbastion_statements"
        for sample in family.samples
    }
    assert not any("frob" in t or "gizmo" in t for t in types)
    assert {"other", "create_other"} <= types


def test_the_allow_all_engine_answers_with_one_decision_object() -> None:
    engine = PassThroughEngine()
    ctx = StatementContext(person="p", roles=(), backend="core", dialect="mysql", database=None)
    first = engine.decide("SELECT 1", ctx)
    assert first.allowed
    assert first.policy_version == "none"
    assert engine.decide("DELETE FROM t", ctx) is first
    assert DropBlocker().decide("SELECT 1", ctx).policy_version == "v-test"


def test_verdicts_stay_frozen_keyword_only_values() -> None:
    import dataclasses

    import pytest

    d = Decision(action=Action.BLOCK, reason="no")
    v = Verdict(decision=d, event_id="e1", started_ns=5, sql_text="DROP TABLE t", message="refused")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.allowed = True  # type: ignore[misc]  # the point: assignment must fail
    with pytest.raises(TypeError):
        Verdict(d, "e1", 5, "DROP TABLE t")  # type: ignore[call-arg]  # keyword-only
    assert v == Verdict(decision=d, event_id="e1", started_ns=5, sql_text="DROP TABLE t", message="refused")
    assert Verdict(decision=d, event_id="e1", started_ns=5, sql_text="x").message == ""
    assert (v.decision, v.event_id, v.started_ns, v.sql_text, v.message, v.allowed) == (
        d,
        "e1",
        5,
        "DROP TABLE t",
        "refused",
        False,
    )


EVENT_KEYS = [
    "kind", "event_id", "session_id", "person", "roles", "client_address", "application_name", "protocol",
    "backend", "database", "sql_text", "decision", "rule_ids", "reason", "statement_types", "fingerprint",
    "objects_read", "objects_written", "columns_read", "sensitive_columns", "rows", "affected", "bytes_sent",
    "backend_error", "proxy_us", "backend_us", "masked_values", "policy_version", "masks_applied",
]  # fmt: skip


class OneDecision(PassThroughEngine):
    """Returns one decision object for every statement, as the policy engine does on cache hits."""

    version = "v-one"

    def __init__(self) -> None:
        self.decision = Decision(
            action=Action.ALERT,
            statement_types=("select",),
            objects_read=("bank.customers",),
            columns_read=(),
            reason="alerting",
            fingerprint="f00d",
            policy_version=self.version,
        )

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        return self.decision


def test_sessions_sharing_a_decision_object_each_audit_their_own_identity() -> None:
    engine = OneDecision()
    audits = [RecordingAudit(), RecordingAudit()]
    sessions = [
        Session(
            runtime=Runtime(engine=engine, audit=audit),
            backend=SETTINGS.backends[0],
            person=person,
            client=ClientInfo(address=address, port=1, protocol="mysql", application_name=app),
        )
        for audit, person, address, app in zip(
            audits, ("alice", "bob"), ("10.0.0.1", "10.0.0.2"), ("a", None), strict=True
        )
    ]
    for round_ in range(3):
        for i, s in enumerate(sessions):
            s.state.database = f"db{i}{round_}"
            s.finish(s.authorize(f"SELECT {round_}"), StatementOutcome(rows=round_, backend_us=7, affected=i))
    for i, (audit, s) in enumerate(zip(audits, sessions, strict=True)):
        assert len(audit.events) == 3
        for round_, e in enumerate(audit.events):
            assert list(e) == EVENT_KEYS
            assert e["session_id"] == s.session_id
            assert e["person"] == s.person
            assert e["client_address"] == s.client.address
            assert e["application_name"] == s.client.application_name
            assert e["database"] == f"db{i}{round_}"
            assert e["sql_text"] == f"SELECT {round_}"
            assert (e["rows"], e["affected"], e["backend_us"]) == (round_, i, 7)
            assert e["decision"] == "alert"
            assert e["reason"] == "alerting"
            assert e["fingerprint"] == "f00d"
            assert e["objects_read"] == ("bank.customers",)
            assert e["policy_version"] == "v-one"
        assert len({e["event_id"] for e in audit.events}) == 3
    # each event is its own dict: a hook keeping one never sees it change
    assert audits[0].events[0] is not audits[0].events[1]
