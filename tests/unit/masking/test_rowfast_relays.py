"""The relays with the compiled row rewriter give the client exactly what the per-row path gave.

Both relays hand a masked result's run of row messages to ``masking.rows``;
with ``program_for`` replaced by one that returns None they take the per-row
path they had before. Every stream here is fed both ways, whole, in pieces and
byte by byte, and must give the same client bytes and the same counts (rows,
masked values, the row cap), with the compiled path doing the rows.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sqlbastion.config import loads
from sqlbastion.masking import rows as rows_module
from sqlbastion.policies.model import Action, ColumnRef, Decision, StatementContext
from sqlbastion.proxy.mysql import results as mysql_results
from sqlbastion.proxy.mysql.constants import FieldType
from sqlbastion.proxy.mysql.packets import ColumnDefinition
from sqlbastion.proxy.mysql.results import ResponseRelay
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres import relay as pg_relay
from sqlbastion.proxy.postgres.protocol import RowColumn
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.tracking import ColumnMeta
from sqlbastion.proxy.session import ClientInfo, ColumnMasker, MaskPlan, ResultColumn, Runtime, Session
from tests.protocol.mysql.mysql_codec_support import (
    DEPRECATE_CAPS,
    EOF_CAPS,
    column,
    feed_in_pieces,
    packets,
    result_set_payloads,
)
from tests.unit.masking.test_rowfast import Tally, planner_masker, values

Value = bytes | None

# Column name → masker kind: a built-in ASCII operation, a masker without one, a plain callable.
TALLY = Tally()
MASKERS: dict[str, ColumnMasker] = {
    "mobile": planner_masker("mobile", TALLY),
    "id_card": planner_masker("id_card", TALLY),
    "email": planner_masker("email", TALLY),
}


def _star(value: bytes | None) -> bytes | None:
    return None if value is None else b"*" * min(len(value), 3)


def _explode(value: bytes | None) -> bytes | None:
    if value == b"boom":
        raise ValueError("a value this masker cannot take")
    return value


MASKERS["star"] = _star
MASKERS["explode"] = _explode
NAMES = ("id", "mobile", "id_card", "email", "star", "city")
PIECES = st.lists(st.integers(1, 300), min_size=1, max_size=6)  # read sizes, repeated over the stream


class Counting:
    """``program_for`` that counts the rows the compiled path rewrote."""

    def __init__(self) -> None:
        self.rows = 0

    def __call__(self, plan: MaskPlan) -> Any:
        program = rows_module.program_for(plan)
        if program is None:
            return None
        outer = self

        class Wrapped:
            def rewrite_pg(self, *args: Any, **kwargs: Any) -> tuple[int, int, int]:
                assert program is not None
                result = program.rewrite_pg(*args, **kwargs)
                outer.rows += result[1]
                return result

            def rewrite_mysql(self, *args: Any, **kwargs: Any) -> tuple[int, int, int, int]:
                assert program is not None
                result = program.rewrite_mysql(*args, **kwargs)
                outer.rows += result[1]
                return result

            def rewrite_mysql_binary(self, *args: Any, **kwargs: Any) -> tuple[int, int, int, int]:
                assert program is not None
                result = program.rewrite_mysql_binary(*args, **kwargs)
                outer.rows += result[1]
                return result

        return Wrapped()


@contextmanager
def compiled(module: Any, enabled: bool) -> Iterator[Counting]:
    counting = Counting()
    with mock.patch.object(module, "program_for", counting if enabled else (lambda plan: None)):
        yield counting


# --- MySQL ------------------------------------------------------------------------------


def _mysql_planner(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
    return MaskPlan(columns=tuple(MASKERS.get(c.name.decode()) for c in cols))


def _mysql_run(
    stream: bytes, caps: int, pieces: list[int], cap: int | None, enabled: bool, *, binary: bool = False
) -> tuple[bytes, Any, int]:
    relay = ResponseRelay(
        kind="query",
        backend_capabilities=caps,
        client_capabilities=caps,
        planner=_mysql_planner,
        max_rows=cap,
        binary=binary,
    )
    with compiled(mysql_results, enabled) as counting:
        out = feed_in_pieces(relay, stream, pieces)
    assert relay.done
    s = relay.summary
    return out, (s.rows, s.masked_values, s.capped, s.refused, s.results, relay.next_seq), counting.rows


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
    st.integers(0, 30),
    st.data(),
    st.sampled_from([EOF_CAPS, DEPRECATE_CAPS]),
    st.one_of(st.none(), st.integers(0, 35)),
    st.one_of(st.sampled_from([[1], [5, 3], [64], [1 << 20]]), PIECES),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mysql_relay_same_bytes_with_and_without_the_compiled_path(
    names: list[str], nrows: int, data: st.DataObject, caps: int, cap: int | None, pieces: list[int]
) -> None:
    cols = [column(n, FieldType.VAR_STRING) for n in names]
    table = [data.draw(st.lists(values, min_size=len(cols), max_size=len(cols))) for _ in range(nrows)]
    second = [[b"13800000000", None][: len(cols)] + [b"x"] * (len(cols) - 2) for _ in range(3)]
    stream = packets(
        result_set_payloads(cols, table, caps=caps, more=True) + result_set_payloads(cols, second, caps=caps)
    )
    fast_out, fast_summary, fast_rows = _mysql_run(stream, caps, pieces, cap, True)
    slow_out, slow_summary, _ = _mysql_run(stream, caps, pieces, cap, False)
    assert fast_out == slow_out
    assert fast_summary == slow_summary
    if pieces == [1 << 20] and nrows > 1 and (cap is None or cap > 1) and any(n in MASKERS for n in names):
        assert fast_rows > 0, "the compiled path took the rows"


@given(
    st.lists(st.sampled_from(NAMES[1:]), min_size=1, max_size=4, unique=True),
    st.integers(0, 30),
    st.data(),
    st.sampled_from([EOF_CAPS, DEPRECATE_CAPS]),
    st.one_of(st.none(), st.integers(0, 35)),
    st.one_of(st.sampled_from([[1], [5, 3], [1 << 20]]), PIECES),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mysql_binary_relay_same_bytes_with_and_without_the_compiled_path(
    names: list[str], nrows: int, data: st.DataObject, caps: int, cap: int | None, pieces: list[int]
) -> None:
    """Prepared-statement rows: an 8-byte id, then strings; NULLs in the bitmap."""
    cols = [column("id", FieldType.LONGLONG)] + [column(n, FieldType.VAR_STRING) for n in names]
    table: list[list[Value]] = []
    for i in range(nrows):
        strings = data.draw(st.lists(values, min_size=len(names), max_size=len(names)))
        table.append([None if i % 7 == 3 else i.to_bytes(8, "little"), *strings])
    stream = packets(result_set_payloads(cols, table, caps=caps, binary=True))
    fast = _mysql_run(stream, caps, pieces, cap, True, binary=True)
    slow = _mysql_run(stream, caps, pieces, cap, False, binary=True)
    assert fast[:2] == slow[:2]
    if pieces == [1 << 20] and nrows > 1 and (cap is None or cap > 1) and any(n in MASKERS for n in names):
        assert fast[2] > 0, "the compiled path took the rows"


@pytest.mark.parametrize("caps", [EOF_CAPS, DEPRECATE_CAPS])
def test_mysql_masker_error_refuses_the_result_both_ways(caps: int) -> None:
    cols = [column("mobile"), column("explode")]
    fine: list[Value] = [b"13812341234", b"fine"]
    boom: list[Value] = [b"13812341234", b"boom"]
    after: list[Value] = [b"1", b"2"]
    table = [fine] * 4 + [boom] + [after] * 3
    stream = packets(result_set_payloads(cols, table, caps=caps))
    fast = _mysql_run(stream, caps, [1 << 20], None, True)
    slow = _mysql_run(stream, caps, [1 << 20], None, False)
    assert fast[:2] == slow[:2]
    assert fast[1][3] is not None  # refused: "a value could not be masked"
    assert fast[1][0] == 4
    assert b"13812341234" not in fast[0]


# --- PostgreSQL -------------------------------------------------------------------------

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


class Engine:
    version = "v1"

    def __init__(self, cap: int | None) -> None:
        self.cap = cap

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ()

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        sensitive = (ColumnRef(database=None, schema="s", table="t", column="mobile"),)
        return Decision(
            action=Action.ALLOW, sensitive_columns=sensitive, policy_version=self.version, max_rows=self.cap
        )


class Planner:
    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        return MaskPlan(columns=tuple(MASKERS.get(c.column or "") for c in columns))


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


EVENT_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a row cap's audit ref


def _row_description(names: Sequence[str]) -> bytes:
    body = struct.pack("!h", len(names))
    for i, n in enumerate(names):
        body += n.encode() + b"\x00" + struct.pack("!ihihih", 16384, i + 1, 25, -1, -1, 0)
    return p.encode_message(p.ROW_DESCRIPTION, body)


def _pg_run(
    names: Sequence[str],
    backend: bytes,
    pieces: list[int],
    cap: int | None,
    enabled: bool,
    *,
    client: bytes = p.encode_message(p.QUERY, b"SELECT * FROM t\x00"),
) -> tuple[bytes, list[tuple[object, object, object]], int]:
    audit = Audit()
    session = Session(
        runtime=Runtime(engine=Engine(cap), masking=Planner(), audit=audit),
        backend=SETTINGS.backends[0],
        person="p",
        client=ClientInfo(address="127.0.0.1", port=1, protocol="postgres"),
    )
    relay = QueryRelay(session, Resolver())
    relay.client_data(client)
    relay.take_to_backend()
    out = bytearray()
    with compiled(pg_relay, enabled) as counting:
        pos = 0
        i = 0
        while pos < len(backend):
            size = pieces[i % len(pieces)]
            relay.backend_data(backend[pos : pos + size])
            out += relay.take_to_client()
            pos += size
            i += 1
    events = [(e["rows"], e["masked_values"], e["backend_error"]) for e in audit.events]
    return EVENT_ID.sub(b"<event id>", bytes(out)), events, counting.rows


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
    st.integers(0, 30),
    st.data(),
    st.one_of(st.none(), st.integers(0, 35)),
    st.one_of(st.sampled_from([[1], [7, 2], [64], [1 << 20]]), PIECES),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pg_relay_same_bytes_with_and_without_the_compiled_path(
    names: list[str], nrows: int, data: st.DataObject, cap: int | None, pieces: list[int]
) -> None:
    table = [data.draw(st.lists(values, min_size=len(names), max_size=len(names))) for _ in range(nrows)]
    backend = (
        _row_description(names)
        + b"".join(p.encode_data_row(r) for r in table)
        + p.encode_message(p.COMMAND_COMPLETE, b"SELECT %d\x00" % nrows)
        + p.encode_ready_for_query(b"I")
    )
    fast = _pg_run(names, backend, pieces, cap, True)
    slow = _pg_run(names, backend, pieces, cap, False)
    assert fast[:2] == slow[:2]
    if pieces == [1 << 20] and nrows > 0 and (cap is None or cap > 0) and any(n in MASKERS for n in names):
        assert fast[2] > 0, "the compiled path took the rows"


def test_pg_masker_error_propagates_both_ways() -> None:
    names = ["mobile", "explode"]
    table: list[list[Value]] = [[b"13812341234", b"fine"], [b"13812341234", b"fine"], [b"13812341234", b"boom"]]
    backend = _row_description(names) + b"".join(p.encode_data_row(r) for r in table)
    for enabled in (True, False):
        with pytest.raises(ValueError, match="cannot take"):
            _pg_run(names, backend, [1 << 20], None, enabled)


def test_pg_malformed_row_is_the_relays_protocol_error_both_ways() -> None:
    names = ["mobile", "city"]
    good = p.encode_data_row([b"13812341234", b"x"])
    bad = p.encode_data_row([b"13812341234"])  # one value for two columns
    backend = _row_description(names) + good * 3 + bad + good
    errors = []
    for enabled in (True, False):
        with pytest.raises(p.ProtocolViolation) as info:
            _pg_run(names, backend, [1 << 20], None, enabled)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


# Parse, Bind, Execute (no Describe: the relay asks for the portal's columns itself), Sync.
EXTENDED = (
    p.encode_parse(b"", b"SELECT * FROM t")
    + p.encode_message(p.BIND, b"\x00\x00" + b"\x00" * 6)
    + p.encode_message(p.EXECUTE, b"\x00" + struct.pack("!i", 0))
    + p.encode_message(p.SYNC)
)


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
    st.integers(0, 30),
    st.data(),
    st.one_of(st.none(), st.integers(0, 35)),
    st.one_of(st.sampled_from([[1], [1 << 20]]), PIECES),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pg_extended_query_same_bytes_with_and_without_the_compiled_path(
    names: list[str], nrows: int, data: st.DataObject, cap: int | None, pieces: list[int]
) -> None:
    """An Execute's first DataRow chooses the plan on the per-row path; the rest may go compiled."""
    table = [data.draw(st.lists(values, min_size=len(names), max_size=len(names))) for _ in range(nrows)]
    backend = (
        p.encode_message(p.PARSE_COMPLETE)
        + p.encode_message(p.BIND_COMPLETE)
        + _row_description(names)  # the answer to the relay's own Describe of the portal
        + b"".join(p.encode_data_row(r) for r in table)
        + p.encode_message(p.COMMAND_COMPLETE, b"SELECT %d\x00" % nrows)
        + p.encode_ready_for_query(b"I")
    )
    fast = _pg_run(names, backend, pieces, cap, True, client=EXTENDED)
    slow = _pg_run(names, backend, pieces, cap, False, client=EXTENDED)
    assert fast[:2] == slow[:2]
    assert fast[1], "the Execute was audited"
    kinds = _message_kinds(fast[0])
    sent = nrows if cap is None else min(nrows, cap)
    assert kinds.count(p.DATA_ROW) == sent
    assert (p.ERROR_RESPONSE in kinds) == (sent < nrows)  # only the row cap's error
    if sent == nrows:
        assert kinds[-1] == p.READY_FOR_QUERY
    if pieces == [1 << 20] and nrows > 2 and (cap is None or cap > 2) and any(n in MASKERS for n in names):
        assert fast[2] > 0, "the compiled path took the rows after the first"


def _message_kinds(data: bytes) -> list[int]:
    kinds = []
    pos = 0
    while pos < len(data):
        kinds.append(data[pos])
        pos += 1 + struct.unpack_from("!i", data, pos + 1)[0]
    return kinds
