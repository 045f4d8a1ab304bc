"""Audit before the reply: a statement's audit event is emitted before the bytes that complete
its reply reach the client, however the backend's bytes are split.

The audit hook records how many bytes the client had been given when each
event was emitted; each event's completing frame (a Query's last
CommandComplete or ErrorResponse, an Execute's CommandComplete) must start at
or after that point. One write per round trip stays: a reply that arrives
whole leaves in one piece.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import loads
from sqlbastion.policies.model import Action, Decision, RuleHit, StatementContext
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
        return Decision(action=Action.ALLOW, policy_version=self.version, max_rows=4)


class NoMasks:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        return EMPTY_MASK_PLAN


class Resolver:
    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta] | None:
        return [ColumnMeta(schema="s", table="t", column=c.name.decode(), type_name="text") for c in columns]


class OrderAudit:
    """Records, per statement event, how many bytes the client had received when it was emitted."""

    def __init__(self) -> None:
        self.delivered = 0
        self.at_emit: list[int] = []

    def emit(self, event: dict[str, object]) -> None:
        if event["kind"] == "statement":
            self.at_emit.append(self.delivered)

    def accepting(self) -> bool:
        return True


def make_relay(status: bytes = b"I") -> tuple[QueryRelay, OrderAudit]:
    audit = OrderAudit()
    session = Session(
        runtime=Runtime(engine=Engine(), masking=NoMasks(), audit=audit),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, Resolver(), transaction_status=status), audit


def Q(sql: str) -> bytes:
    return p.encode_message(p.QUERY, sql.encode() + b"\x00")


def T(name: str) -> bytes:
    body = struct.pack("!h", 1) + name.encode() + b"\x00" + struct.pack("!ihihih", 16384, 1, 25, -1, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


def rows(n: int) -> bytes:
    return b"".join(p.encode_data_row([str(i).encode()]) for i in range(n))


def C(tag: str) -> bytes:
    return p.encode_message(p.COMMAND_COMPLETE, tag.encode() + b"\x00")


def Z(status: bytes = b"I") -> bytes:
    return p.encode_ready_for_query(status)


def E_error(code: str) -> bytes:
    return p.encode_error("ERROR", code, "error")


PARSE = p.encode_parse(b"", b"SELECT a FROM t")
BIND = p.encode_message(p.BIND, b"\x00\x00" + b"\x00" * 6)
DESCRIBE = p.encode_message(p.DESCRIBE, b"P\x00")
EXECUTE = p.encode_message(p.EXECUTE, b"\x00" + struct.pack("!i", 0))
SYNC = p.encode_message(p.SYNC)

CLIENT = (
    Q("SELECT a FROM t")
    + PARSE + BIND + DESCRIBE + EXECUTE + SYNC
    + Q("SELECT a FROM t; SELECT b FROM t")
    + Q("DROP TABLE t")  # refused behind the others: a stand-in the server rejects
    + Q("SELECT 1/0")
    + Q("SELECT a FROM t")  # over the row cap of 4
)  # fmt: skip
BACKEND = (
    T("a") + rows(2) + C("SELECT 2") + Z()
    + p.encode_message(p.PARSE_COMPLETE) + p.encode_message(p.BIND_COMPLETE) + T("a") + rows(1) + C("SELECT 1") + Z()
    + T("a") + rows(1) + C("SELECT 1") + T("b") + rows(2) + C("SELECT 2") + Z()
    + E_error("42601") + Z()
    + E_error("22012") + Z()
    + T("a") + rows(6) + C("SELECT 6") + Z()
)  # fmt: skip


def _frame_starts(data: bytes) -> list[tuple[str, int]]:
    out = []
    pos = 0
    while pos < len(data):
        length = struct.unpack_from("!i", data, pos + 1)[0]
        out.append((chr(data[pos]), pos))
        pos += 1 + length
    return out


def _completions(output: bytes) -> list[int]:
    """Per statement, in audit order, where its completing frame starts in the client's stream:
    the last CommandComplete/ErrorResponse before each ReadyForQuery of a Query, and the
    Execute's CommandComplete."""
    starts = _frame_starts(output)
    out = []
    last = -1
    for letter, pos in starts:
        if letter in "CE":
            last = pos
        elif letter == "Z":
            out.append(last)
    # The extended batch (the second ReadyForQuery) is audited at its CommandComplete, which
    # is also the last completion before that ReadyForQuery.
    return out


def _run(chunks: list[bytes]) -> tuple[bytes, OrderAudit]:
    relay, audit = make_relay()
    relay.client_data(CLIENT)
    relay.take_to_backend()
    out = b""
    for chunk in chunks:
        relay.backend_data(chunk)
        got = relay.take_to_client()
        out += got
        audit.delivered = len(out)
        relay.take_to_backend()
    return out, audit


def _check(chunks: list[bytes]) -> None:
    out, audit = _run(chunks)
    whole, _ = _run([BACKEND])
    assert len(out) == len(whole)
    completions = _completions(out)
    assert len(audit.at_emit) == len(completions) == 6
    for emitted_at, completion in zip(audit.at_emit, completions, strict=True):
        assert emitted_at <= completion


def test_reply_arriving_whole_leaves_in_one_piece_after_its_event() -> None:
    _check([BACKEND])


def test_byte_by_byte_every_event_precedes_its_reply() -> None:
    _check([BACKEND[i : i + 1] for i in range(len(BACKEND))])


def test_command_complete_waits_for_ready_for_query() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(2) + C("SELECT 2"))
    assert relay.take_to_client() == T("a") + rows(2)  # the rows stream; the completion waits
    assert audit.at_emit == []
    relay.backend_data(Z())
    assert audit.at_emit == [0]
    assert relay.take_to_client() == C("SELECT 2") + Z()


def test_a_further_result_releases_the_held_completion() -> None:
    relay, _ = make_relay()
    relay.client_data(Q("SELECT a FROM t; SELECT b FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(1) + C("SELECT 1"))
    assert relay.take_to_client() == T("a") + rows(1)
    relay.backend_data(T("b") + rows(1))
    assert relay.take_to_client() == C("SELECT 1") + T("b") + rows(1)


def test_backend_loss_releases_what_was_held() -> None:
    relay, audit = make_relay()
    relay.client_data(Q("SELECT a FROM t"))
    relay.take_to_backend()
    relay.backend_data(T("a") + rows(1) + C("SELECT 1"))
    relay.take_to_client()
    relay.abort_pending("backend connection lost")
    assert audit.at_emit == [0]
    assert relay.take_to_client() == C("SELECT 1")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(BACKEND) - 1), max_size=12))
def test_random_splits_every_event_precedes_its_reply(cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(BACKEND)]
    _check([BACKEND[a:b] for a, b in itertools.pairwise(points)])
