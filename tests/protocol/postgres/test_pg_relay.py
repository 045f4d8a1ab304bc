"""The PostgreSQL relay without sockets: playbooks of exact bytes, byte-by-byte feeding, fuzzing."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, ColumnRef, Decision, RuleHit, StatementContext
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import ProtocolViolation, RowColumn
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.tracking import REFUSED_SQL, ColumnMeta, may_change_state
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
HIT = RuleHit(rule_id="T-DROP", title="drop", severity="high", action=Action.BLOCK, why="DROP")


class Engine:
    version = "v1"

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        if "drop" in sql.lower():
            return Decision(action=Action.BLOCK, rule_hits=(HIT,), policy_version=self.version)
        sensitive = (ColumnRef(database=None, schema="s", table="t", column="secret"),) if "secret" in sql else ()
        return Decision(action=Action.ALLOW, sensitive_columns=sensitive, policy_version=self.version)


class Masker:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        if any(c.column == "hidden" for c in columns):
            return MaskPlan(refuse="sqlbastion: the column hidden may not be read")
        if not any(c.column == "secret" for c in columns):
            return EMPTY_MASK_PLAN
        return MaskPlan(
            columns=tuple((lambda v: None if v is None else b"#") if c.column == "secret" else None for c in columns)
        )


class Audit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


class Resolver:
    def __init__(self, known: bool = True) -> None:
        self.known = known

    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        if not self.known:
            return None
        return [
            ColumnMeta(schema="s", table="t", column=c.name.decode(), type_name="text")
            if c.table_oid
            else ColumnMeta(schema=None, table=None, column=None, type_name="text")
            for c in columns
        ]


def make_relay(status: bytes = b"I", resolver: Resolver | None = None) -> tuple[QueryRelay, Audit]:
    audit = Audit()
    session = Session(
        runtime=Runtime(engine=Engine(), masking=Masker(), audit=audit),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, resolver or Resolver(), transaction_status=status, max_statement_bytes=1 << 16), audit


def Q(sql: str) -> bytes:  # message letters as in the protocol documentation
    return p.encode_message(p.QUERY, sql.encode() + b"\x00")


def row_description(*names: str, table: int = 16384) -> bytes:
    body = struct.pack("!h", len(names))
    for i, n in enumerate(names):
        body += n.encode() + b"\x00" + struct.pack("!ihihih", table, i + 1, 25, -1, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


def C(tag: str) -> bytes:
    return p.encode_message(p.COMMAND_COMPLETE, tag.encode() + b"\x00")


def Z(status: bytes = b"I") -> bytes:
    return p.encode_ready_for_query(status)


def P(name: bytes, sql: str) -> bytes:
    return p.encode_parse(name, sql.encode())


def B(portal: bytes = b"", stmt: bytes = b"") -> bytes:
    return p.encode_message(p.BIND, portal + b"\x00" + stmt + b"\x00" + b"\x00" * 6)


def E(portal: bytes = b"", limit: int = 0) -> bytes:
    return p.encode_message(p.EXECUTE, portal + b"\x00" + struct.pack("!i", limit))


def D_portal(portal: bytes = b"") -> bytes:
    return p.encode_message(p.DESCRIBE, b"P" + portal + b"\x00")


S = p.encode_message(p.SYNC)
ONE = p.encode_message(p.PARSE_COMPLETE)
TWO = p.encode_message(p.BIND_COMPLETE)


def server_error(code: str = "42601", message: str = "syntax error") -> bytes:
    return p.encode_error("ERROR", code, message)


def frames(data: bytes) -> list[tuple[str, bytes]]:
    r = p.MessageReader()
    r.feed(data)
    out = []
    while isinstance(got := r.next(), tuple):
        out.append((chr(got[0]), got[1]))
    return out


def sqlstates(data: bytes) -> list[str]:
    return [dict(p.decode_error_fields(b))[b"C"] for k, b in frames(data) if k == "E"]


def test_allowed_simple_query_is_relayed_byte_for_byte() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    assert relay.take_to_backend() == Q("SELECT a FROM t")
    answer = row_description("a") + p.encode_data_row([b"1"]) + p.encode_data_row([None]) + C("SELECT 2") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer
    (event,) = audit.events
    assert event["rows"] == 2
    assert event["decision"] == "allow"


def test_blocked_query_when_idle_never_reaches_the_backend() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("DROP TABLE t"))
    assert relay.take_to_backend() == b""
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["E", "Z"]
    assert sqlstates(out) == ["42501"]
    assert out.endswith(Z(b"I"))
    assert audit.events[0]["decision"] == "block"


def test_blocked_query_in_transaction_fails_the_backend_transaction() -> None:
    relay, _ = make_relay(status=b"T")
    relay.client_data(Q("DROP TABLE t"))
    sent = relay.take_to_backend()
    assert sent == Q(REFUSED_SQL.decode())
    assert b"DROP" not in sent
    relay.backend_data(server_error() + Z(b"E"))
    out = relay.take_to_client()
    assert sqlstates(out) == ["42501"]
    assert b"T-DROP" in out
    assert out.endswith(Z(b"E"))
    assert relay.session.state.in_transaction


def test_blocked_query_behind_a_pending_one_keeps_order() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SELECT 1") + Q("DROP TABLE t"))
    assert relay.take_to_backend() == Q("SELECT 1") + Q(REFUSED_SQL.decode())
    first = row_description("x", table=0) + p.encode_data_row([b"1"]) + C("SELECT 1") + Z()
    relay.backend_data(first + server_error() + Z())
    out = relay.take_to_client()
    assert out.startswith(first)
    assert sqlstates(out) == ["42501"]


def test_pipeline_with_blocked_parse_skips_to_sync() -> None:
    relay, audit = make_relay()
    relay.client_data(
        P(b"", "SELECT a FROM t") + B() + D_portal() + E() + P(b"s2", "DROP TABLE t") + B(b"", b"s2") + E() + S
    )
    sent = relay.take_to_backend()
    assert sent == P(b"", "SELECT a FROM t") + B() + D_portal() + E() + P(b"s2", REFUSED_SQL.decode()) + S
    answer = ONE + TWO + row_description("a") + p.encode_data_row([b"v"]) + C("SELECT 1")
    relay.backend_data(answer + server_error() + Z())
    out = relay.take_to_client()
    assert out.startswith(answer)
    assert [k for k, _ in frames(out)][-2:] == ["E", "Z"]
    assert sqlstates(out) == ["42501"]
    decisions = [e["decision"] for e in audit.events]
    assert decisions == ["allow", "block"]


def test_backend_error_drops_pending_answers_up_to_sync() -> None:
    relay, audit = make_relay()
    relay.client_data(P(b"", "SELECT 1/0") + B() + E() + P(b"n", "SELECT 2") + B(b"", b"n") + E() + S + Q("SELECT 3"))
    relay.backend_data(ONE + TWO + row_description("x", table=0) + server_error("22012", "division by zero") + Z())
    out = relay.take_to_client()
    assert sqlstates(out) == ["22012"]
    # The named statement was skipped by the server: the proxy forgot it too.
    relay.backend_data(row_description("x", table=0) + p.encode_data_row([b"3"]) + C("SELECT 1") + Z())
    relay.take_to_client()
    relay.client_data(B(b"", b"n") + E() + S)
    assert REFUSED_SQL not in relay.take_to_backend()  # a refused Bind uses a stand-in name
    errors = [str(e["backend_error"]) for e in audit.events if e["backend_error"]]
    assert errors[0].startswith("SQLSTATE 22012")


def test_masked_text_rows_are_rewritten() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT id, secret FROM t"))
    relay.take_to_backend()
    relay.backend_data(
        row_description("id", "secret")
        + p.encode_data_row([b"1", b"pin"])
        + p.encode_data_row([b"2", None])
        + C("SELECT 2")
        + Z()
    )
    rows = [p.decode_data_row(b) for k, b in frames(relay.take_to_client()) if k == "D"]
    assert rows == [[b"1", b"#"], [b"2", None]]
    assert audit.events[-1]["masked_values"] == 2


def test_sensitive_statement_errors_are_withheld() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SELECT secret::int FROM t"))
    relay.take_to_backend()
    relay.backend_data(p.encode_error("ERROR", "22P02", 'invalid input syntax for type integer: "pin-1234"') + Z())
    out = relay.take_to_client()
    assert b"pin-1234" not in out
    assert b"withheld" in out
    assert sqlstates(out) == ["22P02"]


def test_rows_wait_for_the_catalog() -> None:
    resolver = Resolver(known=False)
    relay, _ = make_relay(resolver=resolver)
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    answer = row_description("a") + p.encode_data_row([b"1"]) + C("SELECT 1") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == b""
    assert relay.need_catalog is not None
    resolver.known = True
    relay.resume()
    assert relay.take_to_client() == answer


def test_search_path_refresh_holds_the_next_statement() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SET search_path TO x") + Q("SELECT 1"))
    assert relay.take_to_backend() == Q("SET search_path TO x")
    relay.backend_data(C("SET") + Z())
    assert relay.take_to_client() == C("SET") + Z()
    assert relay.take_to_backend() == Q("SHOW search_path")
    relay.backend_data(row_description("search_path", table=0) + p.encode_data_row([b"x, public"]) + C("SHOW") + Z())
    assert relay.take_to_client() == b""
    assert relay.session.state.search_path == ("x", "public")
    assert relay.take_to_backend() == Q("SELECT 1")


def test_function_call_is_refused_through_a_stand_in() -> None:
    relay, _ = make_relay()
    relay.client_data(p.encode_message(p.FUNCTION_CALL, struct.pack("!ihhi", 1317, 0, 1, 1) + b"a" + b"\x00\x00"))
    assert relay.take_to_backend() == Q(REFUSED_SQL.decode())
    relay.backend_data(server_error() + Z())
    assert sqlstates(relay.take_to_client()) == ["42501"]


def test_execute_of_an_undescribed_portal_gets_an_injected_describe() -> None:
    relay, _ = make_relay()
    relay.client_data(P(b"", "SELECT secret FROM t") + B() + E() + S)
    sent = relay.take_to_backend()
    assert sent == P(b"", "SELECT secret FROM t") + B() + D_portal() + E() + S
    relay.backend_data(ONE + TWO + row_description("secret") + p.encode_data_row([b"pin"]) + C("SELECT 1") + Z())
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["1", "2", "D", "C", "Z"]  # the injected answer is swallowed
    assert p.decode_data_row(frames(out)[2][1]) == [b"#"]


def test_byte_by_byte_feeding_gives_the_same_bytes() -> None:
    client = Q("SELECT a FROM t") + P(b"", "SELECT secret FROM t") + B() + D_portal() + E() + S + Q("DROP x")
    backend = (
        row_description("a") + p.encode_data_row([b"1"]) + C("SELECT 1") + Z()
        + ONE + TWO + row_description("secret") + p.encode_data_row([b"pin"]) + C("SELECT 1") + Z()
        + server_error() + Z()
    )  # fmt: skip
    whole, _ = make_relay()
    whole.client_data(client)
    whole.backend_data(backend)
    expected = (whole.take_to_backend(), whole.take_to_client())
    split, _ = make_relay()
    to_backend, to_client = b"", b""
    for i in range(len(client)):
        split.client_data(client[i : i + 1])
        to_backend += split.take_to_backend()
    for i in range(len(backend)):
        split.backend_data(backend[i : i + 1])
        to_client += split.take_to_client()
    audit_ref = re.compile(rb"Audit ref [0-9a-f-]+")
    assert to_backend == expected[0]
    assert audit_ref.sub(b"", to_client) == audit_ref.sub(b"", expected[1])


@pytest.mark.parametrize(
    "garbage",
    [
        b"Q\x00\x00\x00\x03",  # length below 4
        b"?\x00\x00\x00\x04",  # unknown message type
        b"P\x00\x00\x00\x06ab",  # unterminated strings
        b"B\x00\x00\x00\x05\x00",  # truncated Bind
        b"D\x00\x00\x00\x06X\x00",  # Describe of neither statement nor portal
    ],
)
def test_malformed_client_messages_raise_protocol_violation(garbage: bytes) -> None:
    relay, _ = make_relay()
    with pytest.raises(ProtocolViolation):
        relay.client_data(garbage)


def test_unexpected_backend_message_is_a_violation() -> None:
    relay, _ = make_relay()
    with pytest.raises(ProtocolViolation):
        relay.backend_data(p.encode_data_row([b"1"]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([Q("SELECT 1"), P(b"", "SELECT 1"), B(), E(), S, D_portal(), Q("DROP t")]), max_size=12),
    st.binary(max_size=40),
)
def test_fuzz_client_messages(messages: list[bytes], tail: bytes) -> None:
    relay, _ = make_relay()
    try:
        relay.client_data(b"".join(messages) + tail)
    except ProtocolViolation:
        return
    sent = relay.take_to_backend()
    assert b"DROP" not in sent


def test_state_words() -> None:
    assert may_change_state(b"set search_path = x")
    assert may_change_state(b'SELECT U&"\\0073et_config"(1)')
    # A prepared statement or a cursor's query runs at EXECUTE / FETCH / MOVE time.
    assert may_change_state(b"EXECUTE p1")
    assert may_change_state(b"FETCH 10 FROM c")
    assert may_change_state(b"MOVE FORWARD 5 IN c")
    assert not may_change_state(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1")


def test_failed_parse_forgets_the_statement() -> None:
    relay, _ = make_relay()
    relay.client_data(P(b"dup", "SELECT 1") + S)
    relay.take_to_backend()
    relay.backend_data(server_error("42P05", 'prepared statement "dup" already exists') + Z())
    relay.take_to_client()
    relay.client_data(B(b"", b"dup") + E() + S)
    sent = relay.take_to_backend()
    assert b"dup" not in sent  # the proxy never saw "dup" prepared: a stand-in goes instead
    relay.backend_data(server_error("26000", "no such statement") + Z())
    assert sqlstates(relay.take_to_client()) == ["42501"]


def test_closed_statement_cannot_be_bound() -> None:
    relay, _ = make_relay()
    relay.client_data(P(b"s", "SELECT 1") + p.encode_message(p.CLOSE, b"Ss\x00") + B(b"", b"s") + S)
    sent = relay.take_to_backend()
    assert sent.count(b"SELECT 1") == 1
    assert b"\x00s\x00" not in sent[sent.index(b"B") :]


def test_statements_over_the_size_limit_are_refused_before_analysis() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT '" + "x" * 70000 + "'"))
    assert relay.take_to_backend() == b""
    out = relay.take_to_client()
    assert sqlstates(out) == ["42501"]
    assert b"longer than" in out
    assert audit.events[-1]["decision"] == "block"


def test_terminate_is_forwarded_and_closes() -> None:
    relay, _ = make_relay()
    relay.client_data(p.encode_message(p.TERMINATE) + Q("SELECT 1"))
    assert relay.take_to_backend() == p.encode_message(p.TERMINATE)
    assert relay.close_reason == "client terminated"


def test_unsafe_client_encoding_from_the_server_closes_the_session() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SET client_encoding TO 'SJIS'"))
    relay.take_to_backend()
    relay.backend_data(p.encode_parameter_status("client_encoding", "SJIS") + C("SET") + Z())
    out = relay.take_to_client()
    assert sqlstates(out) == ["0A000"]
    assert relay.close_reason == "unsafe client_encoding"


def test_copy_in_data_flows_while_statements_wait() -> None:
    relay, _ = make_relay()
    # The word "set" (a table name here) makes the proxy refresh search_path after this statement, so the
    # relay holds later statements; the COPY data must still reach the server.
    relay.client_data(Q('COPY "set" FROM STDIN'))
    assert relay.take_to_backend() == Q('COPY "set" FROM STDIN')
    relay.backend_data(p.encode_message(p.COPY_IN_RESPONSE, b"\x00\x00\x01\x00\x00"))
    copy = p.encode_message(p.COPY_DATA, b"1\n") + p.encode_message(p.COPY_DONE)
    relay.client_data(copy + Q("SELECT 2"))
    assert relay.take_to_backend() == copy
    relay.backend_data(C("COPY 1") + Z())
    assert relay.take_to_backend() == Q("SHOW search_path")


def test_portal_suspension_gives_one_event_per_execute() -> None:
    relay, audit = make_relay()
    relay.client_data(P(b"", "SELECT g FROM t") + D_portal() + B() + D_portal() + E(b"", 1) + E(b"", 1) + S)
    relay.take_to_backend()
    suspended = p.encode_message(p.PORTAL_SUSPENDED)
    relay.backend_data(
        ONE
        + p.encode_message(p.NO_DATA)
        + TWO
        + row_description("g")
        + p.encode_data_row([b"1"])
        + suspended
        + p.encode_data_row([b"2"])
        + suspended
        + Z()
    )
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["1", "n", "2", "T", "D", "s", "D", "s", "Z"]
    assert [e["rows"] for e in audit.events] == [1, 1]
    assert len({e["event_id"] for e in audit.events}) == 2


def test_refusal_skipped_by_an_earlier_error_is_still_audited() -> None:
    relay, audit = make_relay()
    relay.client_data(P(b"", "SELECT 1/0") + B() + E() + P(b"x", "DROP TABLE t") + S)
    relay.backend_data(ONE + TWO + server_error("22012", "division by zero") + Z())
    out = relay.take_to_client()
    assert sqlstates(out) == ["22012"]  # what the server says first is what the client sees
    blocked = [e for e in audit.events if e["decision"] == "block"]
    assert len(blocked) == 1
    assert "earlier error" in str(blocked[0]["backend_error"])


def test_backend_loss_audits_statements_in_flight() -> None:
    relay, audit = make_relay(status=b"T")
    relay.client_data(Q("SELECT pg_sleep(10)") + Q("DROP TABLE t"))
    relay.abort_pending("backend connection lost")
    assert [(e["decision"], e["backend_error"]) for e in audit.events] == [
        ("allow", "backend connection lost"),
        ("block", "backend connection lost"),
    ]


def test_malformed_message_held_behind_a_refresh_closes_as_the_clients_fault() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SET search_path TO x") + b"P\x00\x00\x00\x06ab")
    relay.take_to_backend()
    relay.backend_data(C("SET") + Z())
    relay.backend_data(row_description("search_path", table=0) + p.encode_data_row([b"x"]) + C("SHOW") + Z())
    out = relay.take_to_client()
    assert sqlstates(out) == ["08P01"]
    assert relay.close_reason is not None
    assert relay.close_reason.startswith("client protocol violation")


BACKEND_MESSAGES = [
    ONE,
    TWO,
    p.encode_message(p.CLOSE_COMPLETE),
    p.encode_message(p.NO_DATA),
    p.encode_message(p.PARAMETER_DESCRIPTION, b"\x00\x00"),
    row_description("a"),
    row_description("secret"),
    p.encode_data_row([b"1"]),
    p.encode_data_row([b"1", b"2"]),
    C("SELECT 1"),
    p.encode_message(p.EMPTY_QUERY),
    p.encode_message(p.PORTAL_SUSPENDED),
    server_error(),
    p.encode_message(p.NOTICE_RESPONSE, b"SNOTICE\x00Mhi\x00\x00"),
    p.encode_parameter_status("standard_conforming_strings", "on"),
    p.encode_message(p.COPY_OUT_RESPONSE, b"\x00\x00\x00"),
    p.encode_message(p.COPY_IN_RESPONSE, b"\x00\x00\x00"),
    p.encode_message(p.COPY_DATA, b"x"),
    p.encode_message(p.COPY_DONE),
    Z(),
    Z(b"T"),
    p.encode_message(p.NOTIFICATION, b"\x00\x00\x00\x01ch\x00pl\x00"),
]
CLIENT_MESSAGES = [
    Q("SELECT a FROM t"),
    Q("SELECT secret FROM t"),
    Q("DROP t"),
    Q("SET search_path TO x"),
    P(b"", "SELECT secret FROM t"),
    P(b"n", "SELECT a FROM t"),
    B(),
    B(b"", b"n"),
    D_portal(),
    E(),
    E(b"", 1),
    S,
    p.encode_message(p.FLUSH),
    p.encode_message(p.CLOSE, b"Sn\x00"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(CLIENT_MESSAGES), max_size=10),
    st.lists(st.sampled_from(BACKEND_MESSAGES), max_size=14),
    st.binary(max_size=12),
)
def test_fuzz_conversations_raise_only_protocol_violation(
    client: list[bytes], backend: list[bytes], tail: bytes
) -> None:
    """Any order of plausible backend answers: either relayed or a ProtocolViolation, never a crash."""
    relay, _ = make_relay()
    try:
        relay.client_data(b"".join(client))
        for message in backend:
            relay.backend_data(message)
        relay.backend_data(tail)
    except ProtocolViolation:
        return
    out = relay.take_to_client()
    assert b"pin" not in out


_frames = st.builds(
    p.encode_message,
    st.sampled_from(b"123ACDEGHIKNRSTVWZnstvBFHPQXcdfp"),
    st.binary(max_size=24),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_frames, max_size=8), st.lists(_frames, max_size=8))
def test_fuzz_random_frames_both_ways(client: list[bytes], backend: list[bytes]) -> None:
    relay, _ = make_relay()
    try:
        relay.client_data(b"".join(client))
        relay.backend_data(b"".join(backend))
    except ProtocolViolation:
        pass


def test_refused_result_in_simple_query_hides_the_rest_until_ready() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT hidden FROM t; SELECT a FROM t"))
    relay.take_to_backend()
    relay.backend_data(
        row_description("hidden") + p.encode_data_row([b"h"]) + C("SELECT 1")
        + row_description("a") + p.encode_data_row([b"1"]) + C("SELECT 1") + Z()
    )  # fmt: skip
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["E", "Z"]
    assert sqlstates(out) == ["42501"]
    assert b"hidden may not be read" in out
    assert b"h" not in b"".join(body for k, body in frames(out) if k == "D")
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    answer = row_description("a") + p.encode_data_row([b"2"]) + C("SELECT 1") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer  # relaying resumes after ReadyForQuery
    assert len(audit.events) == 2


def test_refused_result_in_a_pipeline_hides_the_rest_until_sync() -> None:
    relay, audit = make_relay()
    relay.client_data(
        P(b"", "SELECT hidden FROM t") + B() + D_portal() + E() + P(b"", "SELECT a FROM t") + B() + D_portal() + E() + S
    )
    relay.take_to_backend()
    relay.backend_data(
        ONE + TWO + row_description("hidden") + p.encode_data_row([b"h"]) + C("SELECT 1")
        + ONE + TWO + row_description("a") + p.encode_data_row([b"1"]) + C("SELECT 1") + Z()
    )  # fmt: skip
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["1", "2", "T", "E", "Z"]
    assert sqlstates(out) == ["42501"]
    assert [e["rows"] for e in audit.events] == [1, 1]  # both ran on the server; both are audited


def test_refused_result_inside_a_transaction_fails_it_on_the_server_too() -> None:
    relay, _ = make_relay(status=b"T")
    relay.client_data(Q("SELECT hidden FROM t"))
    relay.take_to_backend()
    relay.backend_data(row_description("hidden") + p.encode_data_row([b"h"]) + C("SELECT 1") + Z(b"T"))
    out = relay.take_to_client()
    assert [k for k, _ in frames(out)] == ["E"]  # ReadyForQuery waits for the server to agree
    assert relay.take_to_backend() == Q(REFUSED_SQL.decode())
    relay.client_data(Q("COMMIT"))
    assert relay.take_to_backend() == b""  # held until the server's transaction has failed
    relay.backend_data(server_error() + Z(b"E"))
    assert relay.take_to_client() == Z(b"E")
    assert relay.take_to_backend() == Q("COMMIT")


def test_a_pipeline_longer_than_the_pending_limit_goes_on_as_answers_drain() -> None:
    """Past MAX_PENDING_ITEMS forwarded messages, the rest wait in the relay; they must go on once
    the backend's answers drain, without more bytes from the client (which waits for results)."""
    relay, audit = make_relay()
    n = 2100  # 1 + 2 × 2100 + 1 messages: more than 4096
    relay.client_data(P(b"s", "SELECT 1") + (B(b"", b"s") + E()) * n + S)
    answers = {
        "P": ONE,
        "B": TWO,
        "D": row_description("x", table=0),
        "E": p.encode_data_row([b"1"]) + C("SELECT 1"),
        "S": Z(),
    }
    rounds = 0
    while sent := relay.take_to_backend():
        rounds += 1
        relay.backend_data(b"".join(answers[k] for k, _ in frames(sent)))
        relay.take_to_client()
    assert rounds == 2
    assert relay.pending == 0
    assert relay.client_buffered == 0
    assert len(audit.events) == n  # every Execute answered and audited
