"""The row cap in the response relay, without sockets.

A result may carry at most ``max_rows`` rows to the client: the first N rows
(masked as usual), then one ERR (1227 / 42000) in place of row N + 1, and the
rest of the response — later result sets included — is read and dropped. With
``hold_capped_rows`` (clients whose binary-row reader cannot read an ERR after
rows) the rows are held until the result ends inside the cap or the cap is
passed, and then the ERR is the first packet after the metadata.
Every case is fed whole, in small pieces and byte by byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.protocol.mysql.mysql_codec_support import (
    DEPRECATE_CAPS,
    EOF_CAPS,
    column,
    feed_in_pieces,
    packets,
    result_set_payloads,
)

from sqlbastion.proxy.mysql.constants import Capability, FieldType, ServerStatus
from sqlbastion.proxy.mysql.framing import PacketFramer
from sqlbastion.proxy.mysql.packets import ColumnDefinition, EofPacket, ErrPacket, OkPacket
from sqlbastion.proxy.mysql.results import ROW_CAP_MESSAGE, ResponseKind, ResponseRelay
from sqlbastion.proxy.mysql.rows import decode_binary_row, decode_text_row
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, MaskPlan

CAP = 5
TEXT = ROW_CAP_MESSAGE.format(cap=CAP, ref="ref-1")
COLS = [column("id", FieldType.LONGLONG), column("secret")]
PIECES = ([1], [3, 7], [1 << 20])
CAPS = [EOF_CAPS, DEPRECATE_CAPS]


def _rows(n: int, *, binary: bool = False) -> list[list[bytes | None]]:
    if binary:
        return [[i.to_bytes(8, "little"), f"s{i}".encode()] for i in range(n)]
    return [[str(i).encode(), f"s{i}".encode()] for i in range(n)]


def _no_mask(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
    return EMPTY_MASK_PLAN


def _mask_secret(cols: Sequence[ColumnDefinition], binary: bool) -> MaskPlan:
    return MaskPlan(
        columns=tuple((lambda v: None if v is None else b"***") if c.name == b"secret" else None for c in cols)
    )


def _relay(
    caps: int,
    *,
    planner: object = _no_mask,
    max_rows: int | None = CAP,
    binary: bool = False,
    hold: bool = False,
    kind: ResponseKind = "query",
) -> ResponseRelay:
    return ResponseRelay(
        kind=kind,
        backend_capabilities=caps,
        client_capabilities=caps,
        binary=binary,
        planner=planner,  # type: ignore[arg-type]  # test helper: the planners above match Planner
        max_rows=max_rows,
        cap_text=TEXT,
        hold_capped_rows=hold,
    )


def _payloads(data: bytes) -> list[tuple[int, bytes]]:
    f = PacketFramer()
    f.receive_data(data)
    out = []
    while (p := f.next_packet()) is not None:
        out.append((p.seq, p.payload))
    assert not f.buffered
    return out


def _header(caps: int, ncols: int = 2) -> int:
    return 1 + ncols + (0 if caps & Capability.DEPRECATE_EOF else 1)


def _check_err(seq_payloads: list[tuple[int, bytes]]) -> None:
    seqs = [s for s, _ in seq_payloads]
    assert seqs == list(range(1, len(seqs) + 1)), "sequence ids are consecutive"
    err = ErrPacket.decode(seq_payloads[-1][1])
    assert err.errno == 1227
    assert err.sqlstate == "42000"
    assert err.message == TEXT


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("planner", [_no_mask, _mask_secret])
def test_text_result_over_the_cap(caps: int, pieces: list[int], planner: object) -> None:
    stream = packets(result_set_payloads(COLS, _rows(10), caps=caps))
    relay = _relay(caps, planner=planner)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    assert relay.done
    header = _header(caps)
    rows = [decode_text_row(p, 2) for _, p in out[header:-1]]
    assert [r[0] for r in rows] == [str(i).encode() for i in range(CAP)]
    if planner is _mask_secret:
        assert all(r[1] == b"***" for r in rows)
        assert relay.summary.masked_values == CAP
    _check_err(out)
    assert relay.summary.rows == CAP
    assert relay.summary.capped
    assert relay.summary.refused == TEXT


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("n", [0, 1, CAP])
def test_results_within_the_cap_pass_unchanged(caps: int, pieces: list[int], n: int) -> None:
    stream = packets(result_set_payloads(COLS, _rows(n), caps=caps))
    relay = _relay(caps)
    assert feed_in_pieces(relay, stream, pieces) == stream
    assert relay.summary.rows == n
    assert not relay.summary.capped


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
def test_no_cap_relays_everything(caps: int, pieces: list[int]) -> None:
    stream = packets(result_set_payloads(COLS, _rows(50), caps=caps))
    relay = _relay(caps, max_rows=None)
    assert feed_in_pieces(relay, stream, pieces) == stream
    assert relay.summary.rows == 50


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
def test_cap_zero_refuses_the_first_row(caps: int, pieces: list[int]) -> None:
    stream = packets(result_set_payloads(COLS, _rows(2), caps=caps))
    relay = _relay(caps, max_rows=0)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    assert len(out) == _header(caps) + 1
    _check_err(out)
    assert relay.summary.rows == 0


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
def test_cap_counts_every_result_of_a_multi_result_response(caps: int, pieces: list[int]) -> None:
    # Three results of 3 rows: the cap of 5 is passed in the second; the third is dropped unseen.
    payloads: list[bytes] = []
    for i in range(3):
        payloads += result_set_payloads(COLS, _rows(3), caps=caps, more=i < 2)
    relay = _relay(caps)
    out = _payloads(feed_in_pieces(relay, packets(payloads), pieces))
    assert relay.done
    _check_err(out)
    header = _header(caps)
    # first result: header + 3 rows + end; second: header + 2 rows, then the ERR
    assert len(out) == header + 3 + 1 + header + 2 + 1
    assert relay.summary.rows == CAP


@pytest.mark.parametrize("caps", CAPS)
def test_ok_results_after_the_cap_are_dropped_too(caps: int) -> None:
    payloads = result_set_payloads(COLS, _rows(7), caps=caps, more=True)
    payloads.append(OkPacket(affected_rows=3, status=int(ServerStatus.AUTOCOMMIT)).encode(caps))
    relay = _relay(caps)
    out = _payloads(feed_in_pieces(relay, packets(payloads), [1]))
    assert relay.done
    _check_err(out)


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
def test_binary_rows_stream_then_the_error(caps: int, pieces: list[int]) -> None:
    stream = packets(result_set_payloads(COLS, _rows(10, binary=True), caps=caps, binary=True))
    relay = _relay(caps, binary=True)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    header = _header(caps)
    types = [c.type for c in COLS]
    ids = [int.from_bytes(decode_binary_row(p, types)[0] or b"", "little") for _, p in out[header:-1]]
    assert ids == list(range(CAP))
    _check_err(out)


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("planner", [_no_mask, _mask_secret])
def test_held_rows_are_dropped_and_the_error_comes_first(caps: int, pieces: list[int], planner: object) -> None:
    stream = packets(result_set_payloads(COLS, _rows(10, binary=True), caps=caps, binary=True))
    relay = _relay(caps, binary=True, hold=True, planner=planner)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    assert len(out) == _header(caps) + 1, "no row before the ERR"
    _check_err(out)
    assert relay.summary.rows == 0
    assert relay.summary.masked_values == 0
    assert relay.summary.capped


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
@pytest.mark.parametrize("n", [0, 1, CAP])
def test_held_rows_within_the_cap_go_out_with_the_end(caps: int, pieces: list[int], n: int) -> None:
    stream = packets(result_set_payloads(COLS, _rows(n, binary=True), caps=caps, binary=True))
    relay = _relay(caps, binary=True, hold=True)
    assert feed_in_pieces(relay, stream, pieces) == stream
    assert relay.summary.rows == n


def test_held_rows_leave_only_with_the_end_of_the_result() -> None:
    caps = DEPRECATE_CAPS
    payloads = result_set_payloads(COLS, _rows(3, binary=True), caps=caps, binary=True)
    stream = packets(payloads)
    end = packets(payloads[-1:], first_seq=len(payloads))
    relay = _relay(caps, binary=True, hold=True)
    first = relay.feed(stream[: -len(end)])
    assert len(_payloads(first)) == _header(caps), "the rows wait for the end of the result"
    assert first + relay.feed(end) == stream


def test_fetch_chunk_is_capped() -> None:
    # COM_STMT_FETCH: binary rows then EOF (page_protocol_com_stmt_fetch); the glue passes the room left.
    caps = EOF_CAPS
    types = [c.type for c in COLS]
    from sqlbastion.proxy.mysql.rows import encode_binary_row

    rows = [encode_binary_row(r, types) for r in _rows(4, binary=True)]
    eof = EofPacket(status=int(ServerStatus.CURSOR_EXISTS | ServerStatus.LAST_ROW_SENT)).encode()
    stream = packets([*rows, eof])
    relay = ResponseRelay(
        kind="fetch",
        backend_capabilities=caps,
        client_capabilities=caps,
        types=types,
        max_rows=2,
        cap_text=TEXT,
    )
    out = _payloads(feed_in_pieces(relay, stream, [1]))
    assert relay.done
    assert len(out) == 3
    _check_err(out)
    assert relay.summary.rows == 2


# -- property: any response, any cap, any chunking ------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    caps=st.sampled_from(CAPS),
    binary=st.booleans(),
    hold=st.booleans(),
    masked=st.booleans(),
    results=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=3),
    cap=st.one_of(st.none(), st.integers(min_value=0, max_value=14)),
    chunk=st.integers(min_value=1, max_value=64),
)
def test_cap_property(
    caps: int, binary: bool, hold: bool, masked: bool, results: list[int], cap: int | None, chunk: int
) -> None:
    """At most ``cap`` rows reach the client; the ERR comes exactly when the response has more.

    Reference: rows are sent in order until the cap; with held rows, a result's rows
    leave only with its end, so the rows of the result that passes the cap never leave.
    """
    payloads: list[bytes] = []
    for i, n in enumerate(results):
        payloads += result_set_payloads(
            COLS, _rows(n, binary=binary), caps=caps, binary=binary, more=i < len(results) - 1
        )
    relay = _relay(
        caps, planner=_mask_secret if masked else _no_mask, max_rows=cap, binary=binary, hold=hold and binary
    )
    out = _payloads(feed_in_pieces(relay, packets(payloads), [chunk]))
    assert relay.done
    seqs = [s for s, _ in out]
    total = sum(results)
    passed = cap is not None and total > cap
    if cap is None or not passed:
        expected_rows = total
    elif hold and binary:
        expected_rows, seen = 0, 0
        for n in results:
            if seen + n > cap:
                break
            seen += n
            expected_rows += n
    else:
        expected_rows = cap
    assert relay.summary.rows == expected_rows
    assert relay.summary.capped == passed
    if passed:
        err = ErrPacket.decode(out[-1][1])
        assert err.errno == 1227
        assert seqs == list(range(1, len(seqs) + 1))
    else:
        assert out[-1][1][0] in (0x00, 0xFE)
    # Row packets in the output (no row of these results starts with 0xFE or 0xFF).
    header = _header(caps)
    sent = 0
    i = 0
    while i < len(out) and out[i][1][0] != 0xFF:
        i += header  # a result's column count, definitions and (without DEPRECATE_EOF) EOF
        while i < len(out) and out[i][1][0] not in (0xFE, 0xFF):
            sent += 1
            i += 1
        if i < len(out) and out[i][1][0] == 0xFE:
            i += 1  # the result's end
    assert sent == expected_rows


def test_held_rows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Past the bound the held rows are released and the rest streams: memory stays bounded,
    # and the cap still holds (the ERR then follows rows, as for other clients).
    from sqlbastion.proxy.mysql import resultsets

    monkeypatch.setattr(resultsets, "MAX_HELD_ROW_BYTES", 40)
    caps = DEPRECATE_CAPS
    stream = packets(result_set_payloads(COLS, _rows(10, binary=True), caps=caps, binary=True))
    relay = _relay(caps, binary=True, hold=True)
    header_bytes = len(packets(result_set_payloads(COLS, [], caps=caps, binary=True)[:-1]))
    first = relay.feed(stream[: header_bytes + 2 * 24])  # metadata and about two rows
    assert len(first) <= header_bytes + 48, "rows are held up to the bound only"
    out = _payloads(first + feed_in_pieces(relay, stream[header_bytes + 2 * 24 :], [7]))
    assert relay.summary.rows == CAP
    _check_err(out)
    assert len(out) == _header(caps) + CAP + 1


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("pieces", PIECES)
def test_held_rows_give_way_to_a_backend_error(caps: int, pieces: list[int]) -> None:
    # A statement that fails mid-result (a runtime error, a KILL): with rows held, the client
    # reads the error right after the metadata, which every client can read.
    payloads = result_set_payloads(COLS, _rows(3, binary=True), caps=caps, binary=True)
    err = ErrPacket(errno=1317, message="Query execution was interrupted", sqlstate="70100").encode(caps)
    stream = packets([*payloads[:-1], err])
    relay = _relay(caps, binary=True, hold=True)
    out = _payloads(feed_in_pieces(relay, stream, pieces))
    assert len(out) == _header(caps) + 1
    assert [s for s, _ in out] == list(range(1, len(out) + 1))
    assert ErrPacket.decode(out[-1][1]).errno == 1317
    assert relay.summary.rows == 0
    assert relay.summary.error is not None


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("cap", [None, 0, 1, 37, 299, 300, 301])
@pytest.mark.parametrize("first_seq", [1, 3])
def test_large_reads_match_byte_by_byte(caps: int, binary: bool, cap: int | None, first_seq: int) -> None:
    # Reads of many rows take the relay's tightest loop; one byte at a time never does. Both must
    # give the same bytes and the same summary, whatever the cap and the client's numbering.
    payloads: list[bytes] = []
    for i in range(3):
        payloads += result_set_payloads(COLS, _rows(100, binary=binary), caps=caps, binary=binary, more=i < 2)
    stream = packets(payloads)
    outs = []
    for pieces in ([1], [4096], [1 << 20], [1500, 3]):
        relay = ResponseRelay(
            kind="query",
            backend_capabilities=caps,
            client_capabilities=caps,
            binary=binary,
            planner=_no_mask,
            max_rows=cap,
            cap_text=TEXT,
            first_seq=first_seq,
        )
        outs.append((feed_in_pieces(relay, stream, pieces), relay.summary.rows, relay.summary.capped, relay.done))
    assert all(o == outs[0] for o in outs[1:])
    assert outs[0][1] == (300 if cap is None else min(cap, 300))
    assert outs[0][3]


@pytest.mark.parametrize(
    ("attrs", "held"),
    [
        (((b"_client_name", b"mysql-connector-python"), (b"_client_version", b"9.0.0")), True),
        (((b"_client_name", b"libmysql"), (b"_connector_name", b"mysql-connector-python")), False),  # C extension
        (((b"_client_name", b"libmariadb"),), False),
        (((b"_client_name", b"pymysql"),), False),
        ((), False),
    ],
)
def test_which_clients_get_held_rows(attrs: tuple[tuple[bytes, bytes], ...], held: bool) -> None:
    from sqlbastion.proxy.mysql.packets import HandshakeResponse
    from sqlbastion.proxy.mysql.relaying import _holds_capped_rows

    class _Handshake:
        response = HandshakeResponse(capabilities=0, max_packet=0, charset=45, user=b"u", attrs=attrs)

    assert _holds_capped_rows(_Handshake()) is held  # type: ignore[arg-type]  # only .response is read
    assert _holds_capped_rows(None) is False
