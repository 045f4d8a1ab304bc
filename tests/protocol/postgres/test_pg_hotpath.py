"""The relay's fast paths keep every check: pgbench -S conversations, counted.

The hot path caches (RowDescription → columns, mask plans per prepared
statement, command tags) and relays unmasked rows as byte spans. These tests
drive the same conversations as ``bench/postgres_hotpath.py`` and count what
the session was asked: every Query decided and planned, every Execute audited
with its own event id, a masked or refused column never relayed in clear on a
repeated execution, and the bytes the client gets exactly the server's.
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
SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"


class CountingEngine:
    def __init__(self) -> None:
        self.decided: list[str] = []
        self.version = "v1"
        self.block = False
        self.same: Decision | None = None

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        self.decided.append(sql)
        if self.same is not None:
            return self.same  # one object, as the policy engine's cache hit returns
        action = Action.BLOCK if self.block else Action.ALLOW
        return Decision(action=action, reason="test", policy_version=self.version)


class CountingMasking:
    """Masks the column ``abalance`` when ``mask`` is set, refuses it when ``refuse`` is."""

    def __init__(self, *, mask: bool = False, refuse: bool = False) -> None:
        self.planned = 0
        self.mask = mask
        self.refuse = refuse

    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        self.planned += 1
        if self.refuse:
            return MaskPlan(refuse="sqlbastion: abalance may not be read")
        if not self.mask:
            return EMPTY_MASK_PLAN
        return MaskPlan(columns=tuple((lambda v: None if v is None else b"***") for _ in columns))


class Events:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


class Resolver:
    def resolve(self, columns: Sequence[RowColumn]) -> list[ColumnMeta]:
        return [ColumnMeta(schema="public", table="pgbench_accounts", column="abalance", type_name="int4")] * len(
            columns
        )


def make(masking: CountingMasking) -> tuple[QueryRelay, CountingEngine, Events]:
    engine, events = CountingEngine(), Events()
    session = Session(
        runtime=Runtime(engine=engine, masking=masking, audit=events),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    return QueryRelay(session, Resolver()), engine, events


T = p.encode_message(
    p.ROW_DESCRIPTION, struct.pack("!h", 1) + b"abalance\x00" + struct.pack("!ihihih", 16397, 3, 23, 4, -1, 0)
)
D = p.encode_message(p.DATA_ROW, struct.pack("!hi", 1, 4) + b"1234")
MASKED_D = p.encode_data_row([b"***"])
C = p.encode_message(p.COMMAND_COMPLETE, b"SELECT 1\x00")
Z = p.encode_ready_for_query(b"I")
SYNC = p.encode_message(p.SYNC)


def query(aid: int) -> bytes:
    return p.encode_message(p.QUERY, SQL.format(aid).encode() + b"\x00")


def bind_describe_execute_sync(aid: int) -> bytes:
    value = str(aid).encode()
    bind = b"\x00P_0\x00" + struct.pack("!hhi", 0, 1, len(value)) + value + struct.pack("!hh", 1, 0)
    return (
        p.encode_message(p.BIND, bind)
        + p.encode_message(p.DESCRIBE, b"P\x00")
        + p.encode_message(p.EXECUTE, b"\x00\x00\x00\x00\x00")
        + SYNC
    )


def prepare(relay: QueryRelay) -> None:
    relay.client_data(p.encode_parse(b"P_0", SQL.format("$1").encode()) + SYNC)
    relay.take_to_backend()
    relay.backend_data(p.encode_message(p.PARSE_COMPLETE) + Z)
    relay.take_to_client()


def test_every_simple_query_is_decided_planned_audited_and_relayed_unchanged() -> None:
    masking = CountingMasking()
    relay, engine, events = make(masking)
    for aid in range(1, 51):
        relay.client_data(query(aid))
        assert relay.take_to_backend() == query(aid)
        relay.backend_data(T + D + C + Z)
        assert relay.take_to_client() == T + D + C + Z
    assert engine.decided == [SQL.format(aid) for aid in range(1, 51)]
    assert masking.planned == 50
    assert len(events.events) == 50
    assert len({e["event_id"] for e in events.events}) == 50
    assert all(e["rows"] == 1 and e["decision"] == "allow" for e in events.events)


def test_every_prepared_execute_is_audited_with_its_own_event() -> None:
    relay, engine, events = make(CountingMasking())
    prepare(relay)
    answer = p.encode_message(p.BIND_COMPLETE) + T + D + C + Z
    for aid in range(1, 51):
        relay.client_data(bind_describe_execute_sync(aid))
        assert relay.take_to_backend() == bind_describe_execute_sync(aid)
        relay.backend_data(answer)
        assert relay.take_to_client() == answer
    assert engine.decided == [SQL.format("$1")]  # decided once, at Parse
    assert len(events.events) == 50
    assert len({e["event_id"] for e in events.events}) == 50
    assert all(e["rows"] == 1 for e in events.events)


def test_a_policy_reload_decides_prepared_statements_again() -> None:
    relay, engine, events = make(CountingMasking())
    prepare(relay)
    answer = p.encode_message(p.BIND_COMPLETE) + T + D + C + Z
    relay.client_data(bind_describe_execute_sync(1))
    relay.take_to_backend()
    relay.backend_data(answer)
    assert relay.take_to_client() == answer
    engine.version, engine.block = "v2", True  # the reloaded policy refuses the statement
    relay.client_data(bind_describe_execute_sync(2))
    sent = relay.take_to_backend()
    assert b"P_0" not in sent  # the Bind was replaced by a stand-in the server rejects
    assert engine.decided == [SQL.format("$1")] * 2
    relay.backend_data(p.encode_error("ERROR", "26000", "prepared statement does not exist") + Z)
    out = relay.take_to_client()
    assert b"42501" in out
    assert out.endswith(Z)
    assert events.events[-1]["decision"] == "block"


def test_a_masked_column_stays_masked_on_every_execute() -> None:
    masking = CountingMasking(mask=True)
    relay, _, events = make(masking)
    prepare(relay)
    for aid in range(1, 11):
        relay.client_data(bind_describe_execute_sync(aid))
        relay.take_to_backend()
        relay.backend_data(p.encode_message(p.BIND_COMPLETE) + T + D + C + Z)
        out = relay.take_to_client()
        assert b"1234" not in out
        assert MASKED_D in out
    assert all(e["masked_values"] == 1 for e in events.events)
    assert masking.planned == 10  # every masked result is planned again: its event names its masks


def test_a_refused_result_is_refused_on_every_simple_query_and_execute() -> None:
    relay, _, _ = make(CountingMasking(refuse=True))
    for aid in range(1, 6):
        relay.client_data(query(aid))
        relay.take_to_backend()
        relay.backend_data(T + D + C + Z)
        out = relay.take_to_client()
        assert b"1234" not in out
        assert b"42501" in out
    prepare(relay)
    for aid in range(1, 6):
        relay.client_data(bind_describe_execute_sync(aid))
        relay.take_to_backend()
        relay.backend_data(p.encode_message(p.BIND_COMPLETE) + T + D + C + Z)
        out = relay.take_to_client()
        assert b"1234" not in out
        assert b"42501" in out


def test_the_same_conversation_fed_byte_by_byte_gives_the_same_bytes() -> None:
    whole, _, _ = make(CountingMasking())
    prepare(whole)
    by_byte, _, by_byte_events = make(CountingMasking())
    prepare(by_byte)
    client = bind_describe_execute_sync(7) + bind_describe_execute_sync(8)
    answer = (p.encode_message(p.BIND_COMPLETE) + T + D + C + Z) * 2
    whole.client_data(client)
    whole.backend_data(answer)
    sent = b""
    for i in range(len(client)):
        by_byte.client_data(client[i : i + 1])
        sent += by_byte.take_to_backend()
    got = b""
    for i in range(len(answer)):
        by_byte.backend_data(answer[i : i + 1])
        got += by_byte.take_to_client()
    assert sent == whole.take_to_backend()
    assert got == whole.take_to_client() == answer
    assert len(by_byte_events.events) == 2


def test_two_reads_cut_anywhere_give_the_same_bytes_and_events() -> None:
    # A read that starts with an empty buffer is walked in place and its remainder kept; the
    # next read continues from the buffer. Every cut point of both directions, with a masked
    # column (the compiled rewriter reads the received bytes too) and an unmasked one.
    for masking in (CountingMasking(), CountingMasking(mask=True)):
        whole, _, whole_events = make(masking)
        prepare(whole)
        client = bind_describe_execute_sync(7) + query(8)
        answer = p.encode_message(p.BIND_COMPLETE) + T + D + C + Z + T + D + D + C + Z
        whole.client_data(client)
        expect_sent = whole.take_to_backend()
        whole.backend_data(answer)
        expect_got = whole.take_to_client()
        assert len(whole_events.events) == 2
        for cut in range(len(client) + 1):
            relay, _, events = make(masking)
            prepare(relay)
            relay.client_data(client[:cut])
            sent = relay.take_to_backend()
            relay.client_data(client[cut:])
            assert sent + relay.take_to_backend() == expect_sent
            relay.backend_data(answer[: cut % len(answer)])
            got = relay.take_to_client()
            relay.backend_data(answer[cut % len(answer) :])
            assert got + relay.take_to_client() == expect_got
            assert [e["rows"] for e in events.events] == [1, 2]
            assert relay.client_buffered == 0
            assert relay.backend_buffered == 0


def _comparable(event: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in event.items() if k not in ("event_id", "session_id", "proxy_us", "backend_us")}


def test_a_whole_simple_answer_in_one_read_is_audited_as_message_by_message() -> None:
    # One read holding RowDescription … ReadyForQuery takes the one-pass path once the columns
    # were planned empty; fed byte by byte the same conversation goes message by message.
    answers = [T + D + C + Z, T + D + D + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 2\x00") + Z]
    answers.append(T + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 0\x00") + Z)  # no rows
    answers.append(T + D + C + p.encode_ready_for_query(b"T"))  # inside a transaction block
    whole, whole_engine, whole_events = make(CountingMasking())
    by_byte, by_byte_engine, by_byte_events = make(CountingMasking())
    whole_engine.same = by_byte_engine.same = Decision(action=Action.ALLOW, reason="test", policy_version="v1")
    for round_ in range(3):
        for i, answer in enumerate(answers):
            for relay in (whole, by_byte):
                relay.client_data(query(round_ * 10 + i))
                assert relay.take_to_backend() == query(round_ * 10 + i)
            whole.backend_data(answer)
            assert whole.take_to_client() == answer
            got = b""
            for k in range(len(answer)):
                by_byte.backend_data(answer[k : k + 1])
                got += by_byte.take_to_client()
            assert got == answer
            assert whole.session.state.in_transaction == by_byte.session.state.in_transaction
    assert len(whole_events.events) == len(by_byte_events.events) == 12
    assert [_comparable(e) for e in whole_events.events] == [_comparable(e) for e in by_byte_events.events]
    assert [e["rows"] for e in whole_events.events[:4]] == [1, 2, 0, 1]
    assert whole.session.state.in_transaction


def test_a_whole_simple_answer_keeps_the_row_cap_masks_and_protocol_checks() -> None:
    same = Decision(action=Action.ALLOW, reason="test", policy_version="v1")
    # Masked columns: never the one-pass path, every row rewritten.
    relay, engine, events = make(CountingMasking(mask=True))
    engine.same = same
    for aid in range(3):
        relay.client_data(query(aid))
        relay.take_to_backend()
        relay.backend_data(T + D + C + Z)
        out = relay.take_to_client()
        assert b"1234" not in out
        assert MASKED_D in out
    assert all(e["masked_values"] == 1 for e in events.events)
    # A row cap: the general path counts the rows and ends the result at the cap.
    relay, engine, events = make(CountingMasking())
    engine.same = Decision(action=Action.ALLOW, reason="test", policy_version="v1", max_rows=1)
    for aid in range(3):
        relay.client_data(query(aid))
        relay.take_to_backend()
        relay.backend_data(T + D + D + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 2\x00") + Z)
        out = relay.take_to_client()
        assert out.count(D) == 1
        assert b"42501" in out
    assert [e["rows"] for e in events.events] == [1, 1, 1]
    # An invalid ReadyForQuery after a result planned empty is still a protocol violation.
    relay, engine, _ = make(CountingMasking())
    engine.same = same
    relay.client_data(query(1))
    relay.take_to_backend()
    relay.backend_data(T + D + C + Z)
    relay.take_to_client()
    relay.client_data(query(2))
    relay.take_to_backend()
    try:
        relay.backend_data(T + D + C + p.encode_message(p.READY_FOR_QUERY, b"X"))
    except p.ProtocolViolation:
        pass
    else:
        raise AssertionError("an invalid ReadyForQuery was accepted")


def test_a_whole_prepared_answer_in_one_read_is_audited_as_message_by_message() -> None:
    bc = p.encode_message(p.BIND_COMPLETE)
    answers = [bc + T + D + C + Z, bc + T + D + D + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 2\x00") + Z]
    answers.append(bc + T + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 0\x00") + p.encode_ready_for_query(b"T"))
    whole, _, whole_events = make(CountingMasking())
    by_byte, _, by_byte_events = make(CountingMasking())
    prepare(whole)
    prepare(by_byte)
    for round_ in range(3):
        for i, answer in enumerate(answers):
            for relay in (whole, by_byte):
                relay.client_data(bind_describe_execute_sync(round_ * 10 + i))
                assert relay.take_to_backend() == bind_describe_execute_sync(round_ * 10 + i)
            whole.backend_data(answer)
            assert whole.take_to_client() == answer
            got = b""
            for k in range(len(answer)):
                by_byte.backend_data(answer[k : k + 1])
                got += by_byte.take_to_client()
            assert got == answer
            assert whole.pending == by_byte.pending == 0
    assert len(whole_events.events) == len(by_byte_events.events) == 9
    assert [_comparable(e) for e in whole_events.events] == [_comparable(e) for e in by_byte_events.events]
    assert [e["rows"] for e in whole_events.events[:3]] == [1, 2, 0]
    assert whole.session.state.in_transaction


def test_a_whole_prepared_answer_keeps_the_row_cap() -> None:
    relay, engine, events = make(CountingMasking())
    engine.same = Decision(action=Action.ALLOW, reason="test", policy_version="v1", max_rows=1)
    prepare(relay)
    two = p.encode_message(p.BIND_COMPLETE) + T + D + D + p.encode_message(p.COMMAND_COMPLETE, b"SELECT 2\x00") + Z
    for aid in range(3):
        relay.client_data(bind_describe_execute_sync(aid))
        relay.take_to_backend()
        relay.backend_data(two)
        out = relay.take_to_client()
        assert out.count(D) == 1
        assert b"42501" in out
    assert [e["rows"] for e in events.events] == [1, 1, 1]


def test_a_whole_prepared_batch_keeps_state_refresh_and_odd_shapes_go_message_by_message() -> None:
    # A prepared statement that may change the session state: its Sync's ReadyForQuery is
    # followed by sqlbastion's own SHOW search_path, whether the batch came whole or not.
    for whole in (True, False):
        relay, _, events = make(CountingMasking())
        relay.client_data(p.encode_parse(b"S_1", b"SET search_path TO app") + SYNC)
        relay.take_to_backend()
        relay.backend_data(p.encode_message(p.PARSE_COMPLETE) + Z)
        relay.take_to_client()
        batch = (
            p.encode_message(p.BIND, b"\x00S_1\x00" + struct.pack("!hhh", 0, 0, 0))
            + p.encode_message(p.DESCRIBE, b"P\x00")
            + p.encode_message(p.EXECUTE, b"\x00\x00\x00\x00\x00")
            + SYNC
        )
        if whole:
            relay.client_data(batch)
        else:
            for k in range(len(batch)):
                relay.client_data(batch[k : k + 1])
        assert relay.take_to_backend() == batch
        relay.backend_data(
            p.encode_message(p.BIND_COMPLETE)
            + p.encode_message(p.NO_DATA)
            + p.encode_message(p.COMMAND_COMPLETE, b"SET\x00")
            + Z
        )
        assert relay.take_to_backend() == p.encode_message(p.QUERY, b"SHOW search_path\x00")
        assert len(events.events) == 1
    # Describe of another portal, or Execute of another: each message handled on its own.
    relay, _, _ = make(CountingMasking())
    prepare(relay)
    value = b"7"
    bind = b"a\x00P_0\x00" + struct.pack("!hhi", 0, 1, len(value)) + value + struct.pack("!hh", 1, 0)
    odd = (
        p.encode_message(p.BIND, bind)
        + p.encode_message(p.DESCRIBE, b"Pb\x00")
        + p.encode_message(p.EXECUTE, b"a\x00\x00\x00\x00\x00")
        + SYNC
    )
    relay.client_data(odd)
    sent = relay.take_to_backend()
    # Message by message: the Execute of a portal never described gets its columns asked for.
    assert p.encode_message(p.DESCRIBE, b"Pa\x00") in sent
    assert relay.pending == 5


def test_random_conversations_whole_or_in_random_chunks_agree() -> None:
    # Differential: pgbench-like transactions with random answers (rows, status, a notice or an
    # error in between, a second Query pipelined), fed whole — the one-pass paths — and in random
    # chunks — message by message. The client's bytes and the audit events must be the same.
    import random

    rng = random.Random(20261125)
    bc = p.encode_message(p.BIND_COMPLETE)
    notice = p.encode_error_fields(p.NOTICE_RESPONSE, [(b"S", "NOTICE"), (b"C", "00000"), (b"M", "hello")])
    error = p.encode_error("ERROR", "57014", "canceling statement due to user request")

    def answer(prepared: bool) -> bytes:
        shape = rng.random()
        if shape < 0.1:
            return (bc + T if prepared else b"") + error + Z  # a prepared statement fails executing
        rows = rng.randrange(4)
        body = T + (notice if shape < 0.2 else b"") + D * rows
        body += p.encode_message(p.COMMAND_COMPLETE, f"SELECT {rows}".encode() + b"\x00")
        return (bc if prepared else b"") + body + p.encode_ready_for_query(rng.choice([b"I", b"T"]))

    for masking in (CountingMasking(), CountingMasking(mask=True)):
        for _ in range(3):
            relays = [make(masking) for _ in range(2)]
            for relay, engine, _ in relays:
                engine.same = Decision(action=Action.ALLOW, reason="test", policy_version="v1")
                prepare(relay)
            outs: list[list[bytes]] = [[], []]
            for t in range(40):
                prepared = rng.random() < 0.5
                client = bind_describe_execute_sync(t) if prepared else query(t)
                backend = answer(prepared)
                for which, (relay, _, _) in enumerate(relays):
                    if which == 0:
                        relay.client_data(client)
                        relay.backend_data(backend)
                    else:
                        for data, feed in ((client, relay.client_data), (backend, relay.backend_data)):
                            k = 0
                            while k < len(data):
                                step = rng.randrange(1, 12)
                                feed(data[k : k + step])
                                k += step
                    outs[which].append(relay.take_to_backend() + b"|" + relay.take_to_client())
            assert outs[0] == outs[1]
            events = [[_comparable(e) for e in ev.events] for _, _, ev in relays]
            assert events[0] == events[1]
            assert len(events[0]) == 40
