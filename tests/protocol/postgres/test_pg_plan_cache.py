"""The relay's mask-plan reuse keeps every check.

A Query's result is planned once per (RowDescription bytes, decision object,
policy version, session state) when its plan masks nothing; any change of
those, or a plan that masks or refuses, asks the masking planner again. A
described portal's result is planned at its RowDescription, so the rows of
the Execute that follows take the fast path from the first one — masked and
capped exactly as before.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, Decision, StatementContext
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.tracking import ColumnMeta
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, ClientInfo, MaskPlan, ResultColumn, Runtime, Session

SETTINGS = loads(
    """
[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
host = "127.0.0.1"
port = 5432
user = "svc"
"""
)


class SameDecisionEngine:
    """One decision object per text, as the policy engine's cache returns."""

    def __init__(self, max_rows: int | None = None) -> None:
        self.version = "v1"
        self.max_rows = max_rows
        self._decisions: dict[tuple[str, str], Decision] = {}

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        key = (sql, self.version)
        if key not in self._decisions:
            self._decisions[key] = Decision(action=Action.ALLOW, policy_version=self.version, max_rows=self.max_rows)
        return self._decisions[key]


class CountingPlanner:
    """Masks columns called ``secret``; counts every plan asked for."""

    def __init__(self) -> None:
        self.calls = 0

    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        self.calls += 1
        if not any(c.column == "secret" for c in columns):
            return EMPTY_MASK_PLAN
        return MaskPlan(
            columns=tuple((lambda v: None if v is None else b"#") if c.column == "secret" else None for c in columns),
            functions=tuple("hash" if c.column == "secret" else None for c in columns),
        )


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


class Resolver:
    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        return [ColumnMeta(schema="s", table="t", column=c.name.decode(), type_name="text") for c in columns]


def make_relay(max_rows: int | None = None) -> tuple[QueryRelay, SameDecisionEngine, CountingPlanner, Audit]:
    engine, planner, audit = SameDecisionEngine(max_rows), CountingPlanner(), Audit()
    session = Session(
        runtime=Runtime(engine=engine, masking=planner, audit=audit),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, Resolver()), engine, planner, audit


def Q(sql: str) -> bytes:
    return p.encode_message(p.QUERY, sql.encode() + b"\x00")


def T(*names: str) -> bytes:
    body = struct.pack("!h", len(names))
    for i, n in enumerate(names):
        body += n.encode() + b"\x00" + struct.pack("!ihihih", 16384, i + 1, 25, -1, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


def D(*values: bytes) -> bytes:
    return p.encode_data_row(list(values))


def C(tag: str) -> bytes:
    return p.encode_message(p.COMMAND_COMPLETE, tag.encode() + b"\x00")


Z = p.encode_ready_for_query(b"I")


def query(relay: QueryRelay, sql: str, answer: bytes) -> bytes:
    relay.client_data(Q(sql))
    relay.take_to_backend()
    relay.backend_data(answer)
    relay.take_to_backend()
    return relay.take_to_client()


def data_rows(data: bytes) -> list[list[bytes | None]]:
    r = p.MessageReader()
    r.feed(data)
    out = []
    while isinstance(got := r.next(), tuple):
        if got[0] == p.DATA_ROW:
            out.append(p.decode_data_row(got[1]))
    return out


def test_an_empty_plan_is_reused_for_the_same_decision_and_columns() -> None:
    relay, _, planner, audit = make_relay()
    answer = T("a") + D(b"1") + C("SELECT 1") + Z
    assert query(relay, "SELECT a FROM t", answer) == answer
    assert query(relay, "SELECT a FROM t", answer) == answer
    assert planner.calls == 1
    assert len(audit.events) == 2  # every statement still audited
    # Other columns under the same decision: planned.
    other = T("b") + D(b"2") + C("SELECT 1") + Z
    assert query(relay, "SELECT a FROM t", other) == other
    assert planner.calls == 2
    # Another statement (another decision object): planned.
    assert query(relay, "SELECT a FROM t WHERE true", answer) == answer
    assert planner.calls == 3


def test_a_masking_plan_is_asked_for_every_time() -> None:
    relay, _, planner, audit = make_relay()
    answer = T("id", "secret") + D(b"1", b"pin") + C("SELECT 1") + Z
    for _ in range(3):
        assert data_rows(query(relay, "SELECT id, secret FROM t", answer)) == [[b"1", b"#"]]
    assert planner.calls == 3
    assert all(e["masks_applied"] for e in audit.events)


def test_a_policy_version_change_plans_again() -> None:
    relay, engine, planner, _ = make_relay()
    answer = T("a") + D(b"1") + C("SELECT 1") + Z
    query(relay, "SELECT a FROM t", answer)
    engine.version = "v2"
    query(relay, "SELECT a FROM t", answer)
    assert planner.calls == 2


def test_a_session_state_change_plans_again() -> None:
    relay, _, planner, _ = make_relay()
    answer = T("a") + D(b"1") + C("SELECT 1") + Z
    query(relay, "SELECT a FROM t", answer)
    relay.backend_data(p.encode_parameter_status("standard_conforming_strings", "on"))
    relay.take_to_client()
    query(relay, "SELECT a FROM t", answer)
    assert planner.calls == 2


def test_reused_plans_still_enforce_the_row_cap() -> None:
    relay, _, planner, audit = make_relay(max_rows=2)
    answer = T("a") + D(b"1") + D(b"2") + D(b"3") + C("SELECT 3") + Z
    for _ in range(2):
        out = query(relay, "SELECT a FROM t", answer)
        assert data_rows(out) == [[b"1"], [b"2"]]
        assert b"row cap of 2 rows" in out
    assert planner.calls == 1
    assert [e["rows"] for e in audit.events] == [2, 2]


S = p.encode_message(p.SYNC)


def _execute_described(relay: QueryRelay, columns: tuple[str, ...], values: list[tuple[bytes, ...]]) -> bytes:
    relay.client_data(
        p.encode_parse(b"", b"SELECT x FROM t")
        + p.encode_message(p.BIND, b"\x00\x00" + b"\x00" * 6)
        + p.encode_message(p.DESCRIBE, b"P\x00")
        + p.encode_message(p.EXECUTE, b"\x00\x00\x00\x00\x00")
        + S
    )
    relay.take_to_backend()
    answer = (
        p.encode_message(p.PARSE_COMPLETE)
        + p.encode_message(p.BIND_COMPLETE)
        + T(*columns)
        + b"".join(D(*v) for v in values)
        + C(f"SELECT {len(values)}")
        + Z
    )
    relay.backend_data(answer)
    return relay.take_to_client()


def test_a_described_portal_masks_from_the_first_row() -> None:
    relay, _, _, audit = make_relay()
    out = _execute_described(relay, ("id", "secret"), [(b"1", b"pin"), (b"2", b"pan")])
    assert data_rows(out) == [[b"1", b"#"], [b"2", b"#"]]
    assert audit.events[-1]["masked_values"] == 2


def test_a_described_portal_is_capped_from_the_first_row() -> None:
    relay, _, _, audit = make_relay(max_rows=1)
    out = _execute_described(relay, ("a",), [(b"1",), (b"2",), (b"3",)])
    assert data_rows(out) == [[b"1"]]
    assert b"row cap of 1 rows" in out
    assert audit.events[-1]["rows"] == 1
