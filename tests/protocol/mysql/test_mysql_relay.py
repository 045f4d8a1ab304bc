"""The response relay without sockets: where responses end, the raw fast path, masking, refusal."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tests.protocol.mysql.mysql_codec_support import (
    DEPRECATE_CAPS,
    EOF_CAPS,
    column,
    feed_in_pieces,
    packets,
    result_set_payloads,
)

from sqlbastion.proxy.mysql.constants import Capability, FieldType, ServerStatus
from sqlbastion.proxy.mysql.errors import MalformedPacket
from sqlbastion.proxy.mysql.framing import PacketFramer
from sqlbastion.proxy.mysql.packets import (
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    OkPacket,
    StmtPrepareOk,
)
from sqlbastion.proxy.mysql.results import ResponseRelay
from sqlbastion.proxy.mysql.rows import decode_binary_row, decode_text_row
from sqlbastion.proxy.mysql.wire import lenenc_bytes
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, MaskPlan

COLS = [column("id", FieldType.LONGLONG), column("secret"), column("name")]
ROWS: list[list[bytes | None]] = [[b"1", b"hunter2", b"one"], [b"2", None, b"two"], [b"3", b"pw", b"three"]]
PIECES = ([1], [3, 7], [4096])


def _relay(caps: int, client_caps: int | None = None, planner: object = None, **kw: object) -> ResponseRelay:
    return ResponseRelay(
        kind=kw.pop("kind", "query"),  # type: ignore[arg-type]  # test helper
        backend_capabilities=caps,
        client_capabilities=caps if client_caps is None else client_caps,
        planner=planner,  # type: ignore[arg-type]  # test helper
        **kw,  # type: ignore[arg-type]  # test helper
    )


def _payloads(data: bytes) -> list[tuple[int, bytes]]:
    f = PacketFramer()
    f.receive_data(data)
    out = []
    while (p := f.next_packet()) is not None:
        out.append((p.seq, p.payload))
    return out


def _no_mask(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
    return EMPTY_MASK_PLAN


def _mask_secret(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
    return MaskPlan(
        columns=tuple((lambda v: None if v is None else b"***") if c.name == b"secret" else None for c in cols)
    )


@pytest.mark.parametrize("caps", [EOF_CAPS, DEPRECATE_CAPS])
@pytest.mark.parametrize("pieces", PIECES)
def test_fast_path_is_byte_identical(caps: int, pieces: list[int]) -> None:
    stream = packets(result_set_payloads(COLS, ROWS, caps=caps))
    relay = _relay(caps, planner=_no_mask)
    out = feed_in_pieces(relay, stream, pieces)
    assert out == stream
    assert relay.done
    assert relay.summary.rows == 3
    assert relay.summary.results == 1


@pytest.mark.parametrize("caps", [EOF_CAPS, DEPRECATE_CAPS])
@pytest.mark.parametrize("pieces", PIECES)
def test_masked_text_rows(caps: int, pieces: list[int]) -> None:
    stream = packets(result_set_payloads(COLS, ROWS, caps=caps))
    relay = _relay(caps, planner=_mask_secret)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    assert [seq for seq, _ in out] == list(range(1, len(out) + 1))
    header = 1 + len(COLS) + (0 if caps & Capability.DEPRECATE_EOF else 1)
    rows = [decode_text_row(p, 3) for _, p in out[header:-1]]
    assert rows == [[b"1", b"***", b"one"], [b"2", None, b"two"], [b"3", b"***", b"three"]]
    assert relay.summary.masked_values == 3


def test_masked_binary_rows() -> None:
    caps = DEPRECATE_CAPS
    cols = [column("id", FieldType.LONGLONG), column("secret", FieldType.LONG), column("d", FieldType.DATE)]
    rows: list[list[bytes | None]] = [
        [(1).to_bytes(8, "little"), (1234).to_bytes(4, "little"), b"\xe8\x07\x01\x02"],
        [(2).to_bytes(8, "little"), None, None],
    ]
    stream = packets(result_set_payloads(cols, rows, caps=caps, binary=True))

    def planner(c: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
        assert binary
        return MaskPlan(columns=(None, lambda v: None if v is None else b"\x00\x00\x00\x00", None))

    relay = _relay(caps, planner=planner, binary=True)
    out = _payloads(feed_in_pieces(relay, stream, [5]))
    types = [c.type for c in cols]
    decoded = [decode_binary_row(p, types) for _, p in out[4:-1]]
    assert decoded[0][1] == b"\x00\x00\x00\x00"
    assert decoded[0][2] == b"\xe8\x07\x01\x02"
    assert decoded[1] == [(2).to_bytes(8, "little"), None, None]


def test_multi_results_and_ok() -> None:
    caps = EOF_CAPS
    payloads = result_set_payloads(COLS, ROWS[:1], caps=caps, more=True)
    payloads.append(OkPacket(affected_rows=4, status=int(ServerStatus.MORE_RESULTS_EXISTS)).encode(caps))
    payloads += result_set_payloads(COLS, ROWS, caps=caps)
    stream = packets(payloads)
    relay = _relay(caps, planner=_no_mask)
    assert feed_in_pieces(relay, stream, [1]) == stream
    assert relay.summary.rows == 4
    assert relay.summary.affected == 4
    assert relay.summary.results == 3
    with pytest.raises(MalformedPacket):
        relay.feed(b"\x01\x00\x00\x09\x00")  # nothing may follow the end of the response


def test_refused_result_discards_the_rest() -> None:
    caps = EOF_CAPS
    payloads = result_set_payloads(COLS, ROWS, caps=caps, more=True) + result_set_payloads(COLS, ROWS, caps=caps)

    def refuse(c: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
        return MaskPlan(refuse="sqlbastion: no.")

    relay = _relay(caps, planner=refuse)
    out = _payloads(feed_in_pieces(relay, packets(payloads), [2]))
    assert relay.done
    assert len(out) == 1
    assert out[0][0] == 1
    err = ErrPacket.decode(out[0][1])
    assert (err.errno, err.sqlstate, err.message) == (1227, "42000", "sqlbastion: no.")


def test_refuse_second_result_only() -> None:
    caps = DEPRECATE_CAPS
    cols2 = [column("refuse_me")]
    payloads = result_set_payloads(COLS, ROWS, caps=caps, more=True) + result_set_payloads(cols2, [[b"x"]], caps=caps)

    def planner(c: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
        return MaskPlan(refuse="no") if c[0].name == b"refuse_me" else EMPTY_MASK_PLAN

    relay = _relay(caps, planner=planner)
    out = _payloads(feed_in_pieces(relay, packets(payloads), [64]))
    assert ErrPacket.decode(out[-1][1]).errno == 1227
    assert [s for s, _ in out] == list(range(1, len(out) + 1))


def test_error_text_withheld() -> None:
    caps = EOF_CAPS
    stream = packets(
        [ErrPacket(errno=1292, message="Truncated incorrect value: '13800138000'", sqlstate="22007").encode()]
    )
    relay = _relay(caps, planner=_no_mask, withhold_errors="sqlbastion: backend message withheld.")
    out = _payloads(relay.feed(stream))
    err = ErrPacket.decode(out[0][1])
    assert (err.errno, err.sqlstate) == (1292, "22007")
    assert "138" not in err.message
    assert relay.summary.error is not None


def test_ok_rewritten_for_client_without_session_track() -> None:
    state = lenenc_bytes(b"\x01" + lenenc_bytes(lenenc_bytes(b"bank")))
    ok = OkPacket(status=int(ServerStatus.SESSION_STATE_CHANGED | ServerStatus.AUTOCOMMIT), session_state=state[1:])
    stream = packets([ok.encode(EOF_CAPS)])
    client_caps = EOF_CAPS & ~Capability.SESSION_TRACK
    relay = _relay(EOF_CAPS, client_caps=client_caps, kind="single")
    out = _payloads(relay.feed(stream))
    assert OkPacket.decode(out[0][1], client_caps).session_state is None
    assert relay.summary.oks[0].state_changes()[0].schema() == b"bank"


def test_prepare_response() -> None:
    caps = EOF_CAPS
    params = [column("?")] * 2
    payloads = [StmtPrepareOk(statement_id=7, num_columns=3, num_params=2).encode()]
    payloads += [p.encode() for p in params] + [EofPacket().encode()]
    payloads += [c.encode() for c in COLS] + [EofPacket().encode()]
    stream = packets(payloads)
    for pieces in PIECES:
        relay = _relay(caps, kind="prepare")
        assert feed_in_pieces(relay, stream, pieces) == stream
        assert relay.done
        prep = relay.summary.prepare_ok
        assert prep is not None
        assert prep.statement_id == 7
    relay = _relay(DEPRECATE_CAPS, kind="prepare")
    short = packets([StmtPrepareOk(statement_id=8, num_columns=0, num_params=1).encode(), params[0].encode()])
    relay.feed(short)
    assert relay.done


def test_field_list_and_fetch() -> None:
    caps = EOF_CAPS
    stream = packets([c.encode() for c in COLS] + [EofPacket().encode()])
    relay = _relay(caps, kind="field_list")
    assert feed_in_pieces(relay, stream, [3]) == stream
    assert relay.done
    types = [FieldType.LONG]
    rows = packets(
        [b"\x00\x00" + (5).to_bytes(4, "little"), EofPacket(status=int(ServerStatus.LAST_ROW_SENT)).encode()]
    )
    relay = _relay(caps, kind="fetch", types=types, plan=MaskPlan(columns=(lambda v: b"\x00" * 4,)))
    out = _payloads(relay.feed(rows))
    assert decode_binary_row(out[0][1], types) == [b"\x00" * 4]
    assert relay.done


def test_cursor_open_ends_after_metadata() -> None:
    caps = EOF_CAPS
    payloads = [b"\x01", COLS[0].encode(), EofPacket(status=int(ServerStatus.CURSOR_EXISTS)).encode()]
    relay = _relay(caps, planner=_no_mask, binary=True)
    relay.feed(packets(payloads))
    assert relay.done


def test_row_over_16mib_in_fast_and_masked_paths() -> None:
    big = b"v" * ((16 << 20) + 10)
    caps = DEPRECATE_CAPS
    cols = [column("secret", FieldType.LONG_BLOB)]
    stream = packets(result_set_payloads(cols, [[big], [b"small"]], caps=caps))
    relay = _relay(caps, planner=_no_mask)
    assert feed_in_pieces(relay, stream, [1 << 20]) == stream
    assert relay.summary.rows == 2
    relay = _relay(caps, planner=_mask_secret)
    out = _payloads(feed_in_pieces(relay, stream, [1 << 20]))
    assert [decode_text_row(p, 1) for _, p in out[2:-1]] == [[b"***"], [b"***"]]


def test_local_infile_request_is_a_protocol_error() -> None:
    relay = _relay(EOF_CAPS, planner=_no_mask)
    with pytest.raises(MalformedPacket):
        relay.feed(packets([b"\xfb/etc/passwd"]))


@pytest.mark.parametrize("caps", [EOF_CAPS, DEPRECATE_CAPS])
def test_metadata_shortcut_reuses_the_plan(caps: int) -> None:
    calls: list[int] = []

    def planner(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
        calls.append(len(cols))
        return _mask_secret(cols, binary)

    stream = packets(result_set_payloads(COLS, ROWS, caps=caps))
    first = _relay(caps, planner=planner)
    out1 = first.feed(stream)
    assert first.new_shortcut is not None
    second = _relay(caps, planner=planner, shortcut=first.new_shortcut)
    out2 = feed_in_pieces(second, stream, [4096])
    assert out2 == out1
    assert calls == [3]  # planned once
    assert second.summary.rows == 3
    # Different metadata (another column name) never takes the shortcut.
    other = packets(result_set_payloads([column("id"), column("other"), column("name")], ROWS, caps=caps))
    third = _relay(caps, planner=planner, shortcut=first.new_shortcut)
    out3 = _payloads(third.feed(other))
    assert calls == [3, 3]
    assert b"hunter2" in b"".join(p for _, p in out3)


def _ending_stream(caps: int, last: bytes) -> bytes:
    """Two unmasked results: the first ends with warnings and MORE_RESULTS_EXISTS, the second with ``last``."""
    more = int(ServerStatus.MORE_RESULTS_EXISTS | ServerStatus.AUTOCOMMIT)
    first = result_set_payloads(COLS, ROWS, caps=caps, more=True)
    if caps & Capability.DEPRECATE_EOF:
        first[-1] = OkPacket(header=0xFE, affected_rows=0, warnings=2, status=more).encode(caps)
    else:
        first[-1] = EofPacket(warnings=2, status=more).encode()
    second = result_set_payloads(COLS, ROWS[:2], caps=caps)
    second[-1] = last
    return packets(first + second)


def _ends() -> list[tuple[str, int, int, bytes]]:
    """(name, backend caps, client caps, the packet ending the last result)."""
    state = lenenc_bytes(b"\x01" + lenenc_bytes(lenenc_bytes(b"bank")))
    changed = int(ServerStatus.SESSION_STATE_CHANGED | ServerStatus.AUTOCOMMIT)
    in_trans = int(ServerStatus.IN_TRANS | ServerStatus.NO_BACKSLASH_ESCAPES)
    return [
        ("eof", EOF_CAPS, EOF_CAPS, EofPacket(warnings=1, status=in_trans).encode()),
        ("short eof", EOF_CAPS, EOF_CAPS, b"\xfe"),
        (
            "ok",
            DEPRECATE_CAPS,
            DEPRECATE_CAPS,
            OkPacket(header=0xFE, warnings=3, status=in_trans).encode(DEPRECATE_CAPS),
        ),
        (
            "ok with state",
            DEPRECATE_CAPS,
            DEPRECATE_CAPS,
            OkPacket(header=0xFE, status=changed, session_state=state[1:]).encode(DEPRECATE_CAPS),
        ),
        (
            "ok rewritten",
            DEPRECATE_CAPS,
            DEPRECATE_CAPS & ~Capability.SESSION_TRACK,
            OkPacket(header=0xFE, status=changed, session_state=state[1:]).encode(DEPRECATE_CAPS),
        ),
    ]


@pytest.mark.parametrize(("name", "caps", "client_caps", "last"), _ends(), ids=[e[0] for e in _ends()])
@pytest.mark.parametrize("pieces", PIECES)
def test_result_end_in_the_raw_run_matches_the_general_path(
    name: str, caps: int, client_caps: int, last: bytes, pieces: list[int]
) -> None:
    """The packet ending an unmasked result is handled in the raw run; a relay that looks at every row
    (a row filter keeping all rows) takes the general path. Both give the same bytes and summary."""
    stream = _ending_stream(caps, last)
    fast = _relay(caps, client_caps=client_caps, planner=_no_mask)
    general = _relay(caps, client_caps=client_caps, planner=_no_mask, keep_row=lambda cols, values: True)
    out_fast = feed_in_pieces(fast, stream, pieces)
    out_general = feed_in_pieces(general, stream, pieces)
    assert out_fast == out_general
    assert fast.done
    assert general.done
    a, b = fast.summary, general.summary
    assert (a.rows, a.results, a.status, a.warnings, a.affected, a.bytes_out) == (
        b.rows,
        b.results,
        b.status,
        b.warnings,
        b.affected,
        b.bytes_out,
    )
    assert [ok.session_state for ok in a.oks] == [ok.session_state for ok in b.oks]
    assert a.rows == 5
    assert a.results == 2
    if "state" in name or "rewritten" in name:
        assert a.oks
        assert a.oks[0].state_changes()[0].schema() == b"bank"
    if name == "ok rewritten":
        assert OkPacket.decode(_payloads(out_fast)[-1][1], client_caps).session_state is None
    else:
        assert out_fast == stream
