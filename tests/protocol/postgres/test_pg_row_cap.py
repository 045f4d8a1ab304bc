"""The per-person row cap in the PostgreSQL relay, sans-IO: exact bytes both ways.

A decision with ``max_rows = N`` lets the first N rows of a result through
(masked as usual), then the client gets ErrorResponse 42501 with the cap's
text in place of the next row; the remaining DataRows and the CommandComplete
(or PortalSuspended) are dropped, and the client sees nothing more until
ReadyForQuery. One Query message counts all its results together; Execute
counts on across a portal's Executes. Inside a transaction block the server's
transaction is made to fail too. The audit event keeps the rows sent and
``backend_error = "row cap exceeded"``.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, ColumnRef, Decision, StatementContext
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import ProtocolViolation, RowColumn
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.tracking import REFUSED_SQL, ROW_CAP_EXCEEDED, ColumnMeta
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
CAP = 3
CAP_TEXT = b"result exceeds the row cap of 3 rows for this person"


class CappingEngine:
    """Allows everything with ``max_rows = cap``; statements naming ``secret`` are sensitive."""

    version = "v1"

    def __init__(self, cap: int | None) -> None:
        self.cap = cap

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        sensitive = (ColumnRef(database=None, schema="s", table="t", column="secret"),) if "secret" in sql else ()
        return Decision(
            action=Action.ALLOW, sensitive_columns=sensitive, policy_version=self.version, max_rows=self.cap
        )


class Masker:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
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
    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        return [ColumnMeta(schema="s", table="t", column=c.name.decode(), type_name="text") for c in columns]


def make_relay(cap: int | None = CAP, status: bytes = b"I") -> tuple[QueryRelay, Audit]:
    audit = Audit()
    session = Session(
        runtime=Runtime(engine=CappingEngine(cap), masking=Masker(), audit=audit),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, Resolver(), transaction_status=status), audit


def Q(sql: str) -> bytes:
    return p.encode_message(p.QUERY, sql.encode() + b"\x00")


def T(*names: str) -> bytes:
    body = struct.pack("!h", len(names))
    for i, n in enumerate(names):
        body += n.encode() + b"\x00" + struct.pack("!ihihih", 16384, i + 1, 25, -1, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


def rows(n: int, start: int = 1, width: int = 1) -> bytes:
    return b"".join(p.encode_data_row([str(i).encode()] * width) for i in range(start, start + n))


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
SUSPENDED = p.encode_message(p.PORTAL_SUSPENDED)


def frames(data: bytes) -> list[tuple[str, bytes]]:
    r = p.MessageReader()
    r.feed(data)
    out = []
    while isinstance(got := r.next(), tuple):
        out.append((chr(got[0]), got[1]))
    return out


def letters(data: bytes) -> str:
    return "".join(k for k, _ in frames(data))


def errors(data: bytes) -> list[tuple[str, str]]:
    out = []
    for k, b in frames(data):
        if k == "E":
            fields = dict(p.decode_error_fields(b))
            out.append((fields[b"C"], fields[b"M"]))
    return out


def data_rows(data: bytes) -> list[list[bytes | None]]:
    return [p.decode_data_row(b) for k, b in frames(data) if k == "D"]


def statement_events(audit: Audit) -> list[dict[str, object]]:
    return [e for e in audit.events if e["kind"] == "statement"]


def test_simple_query_over_the_cap_sends_the_first_rows_then_the_error() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(10) + C("SELECT 10") + Z())
    out = relay.take_to_client()
    assert letters(out) == "TDDDEZ"
    assert data_rows(out) == [[b"1"], [b"2"], [b"3"]]
    ((code, message),) = errors(out)
    assert code == "42501"
    (event,) = statement_events(audit)
    assert message == (
        "sqlbastion: result exceeds the row cap of 3 rows for this person; "
        f"exporting larger results needs the export action. Audit ref {event['event_id']}."
    )
    assert event["rows"] == 3
    assert event["backend_error"] == ROW_CAP_EXCEEDED
    assert out.startswith(T("a") + rows(3))  # the allowed rows are the server's bytes
    assert relay.take_to_backend() == b""  # outside a transaction nothing more is needed


def test_a_result_of_exactly_the_cap_passes_untouched() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    answer = T("a") + rows(CAP) + C("SELECT 3") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer
    (event,) = statement_events(audit)
    assert event["rows"] == CAP
    assert event["backend_error"] is None


def test_no_cap_relays_every_row() -> None:
    relay, audit = make_relay(cap=None)
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    answer = T("a") + rows(50) + C("SELECT 50") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer
    assert statement_events(audit)[0]["rows"] == 50


def test_masked_rows_count_against_the_cap() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT id, secret FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("id", "secret") + rows(6, width=2) + C("SELECT 6") + Z())
    out = relay.take_to_client()
    assert data_rows(out) == [[b"1", b"#"], [b"2", b"#"], [b"3", b"#"]]
    assert letters(out).endswith("EZ")
    (event,) = statement_events(audit)
    assert event["rows"] == 3
    assert event["masked_values"] == 3
    assert event["backend_error"] == ROW_CAP_EXCEEDED


def test_the_rows_of_one_query_message_are_counted_together() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t; SELECT b FROM t; SELECT c FROM t"))
    relay.take_to_backend()
    relay.backend_data(
        T("a") + rows(2) + C("SELECT 2") + T("b") + rows(2) + C("SELECT 2") + T("c") + rows(1) + C("SELECT 1") + Z()
    )
    out = relay.take_to_client()
    # Two rows, their CommandComplete, one more row, then the cap; the third result is not relayed.
    assert letters(out) == "TDDCTDEZ"
    (event,) = statement_events(audit)
    assert event["rows"] == 3


def test_inside_a_transaction_the_server_transaction_fails_too() -> None:
    relay, audit = make_relay(status=b"T")
    relay.client_data(Q("SELECT a FROM t"))
    assert relay.take_to_backend() == Q("SELECT a FROM t")
    relay.backend_data(T("a") + rows(5) + C("SELECT 5") + Z(b"T"))
    out = relay.take_to_client()
    assert letters(out) == "TDDDE"  # ReadyForQuery waits for the server's failed transaction
    assert relay.take_to_backend() == Q(REFUSED_SQL.decode())
    relay.backend_data(p.encode_error("ERROR", "42601", "syntax error") + Z(b"E"))
    assert relay.take_to_client() == Z(b"E")
    # A later COMMIT is the server's to answer: ROLLBACK.
    relay.client_data(Q("COMMIT"))
    assert relay.take_to_backend() == Q("COMMIT")
    relay.backend_data(C("ROLLBACK") + Z())
    assert relay.take_to_client() == C("ROLLBACK") + Z()
    assert statement_events(audit)[0]["rows"] == 3


def test_extended_query_caps_an_execute() -> None:
    relay, audit = make_relay()
    relay.client_data(P(b"", "SELECT a FROM t") + B() + D_portal() + E() + S)
    relay.take_to_backend()
    relay.backend_data(ONE + TWO + T("a") + rows(4) + C("SELECT 4") + Z())
    out = relay.take_to_client()
    assert letters(out) == "12TDDDEZ"
    assert errors(out)[0][0] == "42501"
    assert statement_events(audit)[0]["rows"] == 3


def test_portal_suspension_counts_across_the_portals_executes() -> None:
    relay, audit = make_relay()
    relay.client_data(P(b"", "SELECT a FROM t") + B(b"c") + D_portal(b"c") + E(b"c", 2) + S)
    relay.take_to_backend()
    relay.backend_data(ONE + TWO + T("a") + rows(2) + SUSPENDED + Z(b"T"))
    assert letters(relay.take_to_client()) == "12TDDsZ"
    relay.client_data(E(b"c", 2) + S)
    relay.take_to_backend()
    relay.backend_data(rows(2, start=3) + SUSPENDED + Z(b"T"))
    out = relay.take_to_client()
    assert data_rows(out) == [[b"3"]]
    assert letters(out) == "DE"  # ReadyForQuery waits for the server's failed transaction
    assert errors(out)[0][0] == "42501"
    relay.backend_data(p.encode_error("ERROR", "42601", "syntax error") + Z(b"E"))
    assert relay.take_to_client() == Z(b"E")
    first, second = statement_events(audit)
    assert (first["rows"], second["rows"]) == (2, 1)
    assert first["backend_error"] is None
    assert second["backend_error"] == ROW_CAP_EXCEEDED


def test_an_execute_after_the_portal_used_up_its_cap_sends_no_row() -> None:
    relay, _ = make_relay()
    relay.client_data(P(b"", "SELECT a FROM t") + B(b"c") + D_portal(b"c") + E(b"c", 3) + S)
    relay.take_to_backend()
    relay.backend_data(ONE + TWO + T("a") + rows(3) + SUSPENDED + Z(b"T"))
    assert data_rows(relay.take_to_client()) == [[b"1"], [b"2"], [b"3"]]
    relay.client_data(E(b"c", 3) + S)
    relay.take_to_backend()
    relay.backend_data(rows(3, start=4) + SUSPENDED + Z(b"T"))
    out = relay.take_to_client()
    assert data_rows(out) == []
    assert letters(out) == "E"


def test_the_connection_stays_usable_after_the_cap() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(5) + C("SELECT 5") + Z())
    relay.take_to_client()
    relay.client_data(Q("SELECT b FROM t"))
    assert relay.take_to_backend() == Q("SELECT b FROM t")
    answer = T("b") + rows(2) + C("SELECT 2") + Z()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer
    assert [e["rows"] for e in statement_events(audit)] == [3, 2]


def test_copy_out_rows_count_against_the_cap() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("COPY t TO STDOUT"))
    relay.take_to_backend()
    copy_out = p.encode_message(p.COPY_OUT_RESPONSE, b"\x00\x00\x01\x00\x00")
    data = b"".join(p.encode_message(p.COPY_DATA, f"{i}\n".encode()) for i in range(5))
    relay.backend_data(copy_out + data + p.encode_message(p.COPY_DONE) + C("COPY 5") + Z())
    out = relay.take_to_client()
    assert letters(out) == "HdddEZ"
    (event,) = statement_events(audit)
    assert event["rows"] == 3
    assert event["backend_error"] == ROW_CAP_EXCEEDED


def _conversation() -> tuple[bytes, bytes]:
    client = Q("SELECT a FROM t") + P(b"", "SELECT id, secret FROM t") + B() + D_portal() + E() + S + Q("SELECT 1")
    backend = (
        T("a") + rows(7) + C("SELECT 7") + Z()
        + ONE + TWO + T("id", "secret") + rows(5, width=2) + C("SELECT 5") + Z()
        + T("x") + rows(1) + C("SELECT 1") + Z()
    )  # fmt: skip
    return client, backend


def test_byte_by_byte_feeding_gives_the_same_bytes() -> None:
    client, backend = _conversation()
    whole, _ = make_relay()
    whole.client_data(client)
    whole.backend_data(backend)
    expected = (whole.take_to_backend(), whole.take_to_client())
    assert letters(expected[1]) == "TDDDEZ" + "12TDDDEZ" + "TDCZ"
    split, audit = make_relay()
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
    assert [e["rows"] for e in statement_events(audit)] == [3, 3, 1]


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=8),
    results=st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=6),
)
def test_never_more_rows_than_the_cap(cap: int, results: list[int], cuts: list[int]) -> None:
    """Whatever the result sizes and however the backend's bytes are split: at most ``cap`` rows,
    exactly min(total, cap), and the error exactly when the total is over."""
    relay, audit = make_relay(cap=cap)
    relay.client_data(Q("; ".join("SELECT a FROM t" for _ in results)))
    relay.take_to_backend()
    backend = b"".join(T("a") + rows(n) + C(f"SELECT {n}") for n in results) + Z()
    out = b""
    pos = 0
    for cut in sorted(cuts):
        try:
            relay.backend_data(backend[pos:cut])
        except ProtocolViolation:  # never: the conversation is valid
            pytest.fail("valid conversation refused")
        out += relay.take_to_client()
        pos = max(pos, min(cut, len(backend)))
    relay.backend_data(backend[pos:])
    out += relay.take_to_client()
    total = sum(results)
    assert len(data_rows(out)) == min(total, cap)
    assert [c for c, _ in errors(out)] == (["42501"] if total > cap else [])
    assert out.endswith(Z())
    assert statement_events(audit)[0]["rows"] == min(total, cap)


def test_a_server_error_after_the_cap_is_answered_with_the_cap() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT 1 / (5 - a) FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(4) + p.encode_error("ERROR", "22012", "division by zero") + Z())
    out = relay.take_to_client()
    assert letters(out) == "TDDDEZ"
    ((code, message),) = errors(out)
    assert code == "42501"
    assert "row cap of 3 rows" in message
    (event,) = statement_events(audit)
    assert event["rows"] == 3
    assert str(event["backend_error"]).startswith("row cap exceeded; then SQLSTATE 22012")


def test_a_later_statement_of_the_capped_message_is_not_relayed_but_its_error_is_audited() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t; SELECT 1/0"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(5) + C("SELECT 5") + p.encode_error("ERROR", "22012", "division by zero") + Z())
    out = relay.take_to_client()
    assert letters(out) == "TDDDEZ"
    assert [c for c, _ in errors(out)] == ["42501"]
    (event,) = statement_events(audit)
    assert str(event["backend_error"]).startswith("row cap exceeded; then SQLSTATE 22012")


def test_after_a_capped_execute_the_rest_of_the_batch_is_answered_but_not_relayed() -> None:
    relay, audit = make_relay()
    relay.client_data(
        P(b"", "SELECT a FROM t") + B() + D_portal() + E() + P(b"", "SELECT b FROM t") + B() + D_portal() + E() + S
    )
    relay.take_to_backend()
    relay.backend_data(
        ONE + TWO + T("a") + rows(5) + C("SELECT 5") + ONE + TWO + T("b") + rows(1) + C("SELECT 1") + Z()
    )
    out = relay.take_to_client()
    assert letters(out) == "12TDDDEZ"  # as after a server error: nothing more until ReadyForQuery
    first, second = statement_events(audit)
    assert (first["rows"], first["backend_error"]) == (3, ROW_CAP_EXCEEDED)
    assert second["rows"] == 1  # the server ran it; the audit says so


@settings(max_examples=150, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=6),
    count=st.integers(min_value=0, max_value=9),
    cuts=st.lists(st.integers(min_value=1, max_value=600), max_size=8),
)
def test_masked_rows_never_exceed_the_cap_however_split(cap: int, count: int, cuts: list[int]) -> None:
    relay, audit = make_relay(cap=cap)
    relay.client_data(Q("SELECT id, secret FROM t"))
    relay.take_to_backend()
    backend = T("id", "secret") + rows(count, width=2) + C(f"SELECT {count}") + Z()
    points = [0, *sorted({min(c, len(backend)) for c in cuts}), len(backend)]
    out = b""
    for a, b in itertools.pairwise(points):
        relay.backend_data(backend[a:b])
        out += relay.take_to_client()
    got = data_rows(out)
    assert len(got) == min(count, cap)
    assert all(r[1] == b"#" for r in got)  # masked, every one
    assert [c for c, _ in errors(out)] == (["42501"] if count > cap else [])
    assert statement_events(audit)[0]["rows"] == min(count, cap)


_BACKEND_FRAMES = [
    T("a"),
    T("id", "secret"),
    p.encode_data_row([b"1"]),
    p.encode_data_row([b"1", b"pin"]),
    C("SELECT 1"),
    C("SELECT 9"),
    p.encode_error("ERROR", "22012", "division by zero"),
    p.encode_message(p.NOTICE_RESPONSE, b"SNOTICE\x00Mhello\x00\x00"),
    Z(),
    Z(b"T"),
]


@settings(max_examples=300, deadline=None)
@given(
    cap=st.integers(min_value=1, max_value=4),
    queries=st.integers(min_value=1, max_value=3),
    answer=st.lists(st.sampled_from(_BACKEND_FRAMES), max_size=40),
    cut=st.integers(min_value=0, max_value=2000),
)
def test_fuzzed_answers_never_carry_more_rows_than_the_cap(
    cap: int, queries: int, answer: list[bytes], cut: int
) -> None:
    """Whatever the backend sends in answer to a few Queries: the relay either rejects it as a
    ProtocolViolation or gives the client at most ``cap`` DataRows per Query, and no secret in
    clear in a result described with the secret column."""
    relay, _ = make_relay(cap=cap)
    relay.client_data(Q("SELECT id, secret FROM t") * queries)
    relay.take_to_backend()
    data = b"".join(answer)
    out = b""
    try:
        relay.backend_data(data[:cut])
        out += relay.take_to_client()
        relay.backend_data(data[cut:])
        out += relay.take_to_client()
    except ProtocolViolation:
        return
    rows_since_ready = 0
    described_secret = False
    for kind, body in frames(out):
        if kind == "D":
            rows_since_ready += 1
            assert rows_since_ready <= cap
            if described_secret:  # rows of an unmasked result are relayed as the server sent them
                assert b"pin" not in p.decode_data_row(body)
        elif kind == "T":
            described_secret = b"secret" in body
        elif kind == "Z":
            rows_since_ready = 0
