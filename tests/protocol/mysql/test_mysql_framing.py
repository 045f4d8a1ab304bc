"""Packet framing: sequence ids, 16 MiB splitting and reassembly, bounds, byte-by-byte feeding."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.proxy.mysql.constants import MAX_PACKET_PAYLOAD
from sqlbastion.proxy.mysql.errors import MySQLProtocolError, PacketsOutOfOrder, PacketTooLarge
from sqlbastion.proxy.mysql.framing import PacketFramer, frame


def _all(framer: PacketFramer) -> list[tuple[int, bytes, int]]:
    out = []
    while (p := framer.next_packet()) is not None:
        out.append((p.seq, p.payload, p.next_seq))
    return out


def test_frame_small() -> None:
    data, nxt = frame(3, b"\x03SELECT 1")
    assert data == b"\x09\x00\x00\x03\x03SELECT 1"
    assert nxt == 4


def test_frame_exactly_max_gets_empty_trailer() -> None:
    payload = b"a" * MAX_PACKET_PAYLOAD
    data, nxt = frame(0, payload)
    assert len(data) == 4 + MAX_PACKET_PAYLOAD + 4
    assert data[-4:] == b"\x00\x00\x00\x01"
    assert nxt == 2
    f = PacketFramer(max_payload=32 << 20)
    f.receive_data(data)
    assert _all(f) == [(0, payload, 2)]


def test_frame_over_16mib_roundtrip_with_trailing_bytes() -> None:
    payload = bytes(range(256)) * ((20 << 20) // 256)
    data, nxt = frame(255, payload)  # sequence ids wrap around
    assert nxt == 1
    f = PacketFramer(max_payload=32 << 20)
    f.receive_data(data + b"\x01\x00\x00\x00\x0e")
    assert _all(f) == [(255, payload, 1), (0, b"\x0e", 1)]


def test_byte_by_byte() -> None:
    stream = frame(0, b"\x03abc")[0] + frame(0, b"")[0] + frame(7, b"x" * 300)[0]
    f = PacketFramer()
    got = []
    for b in stream:
        f.receive_data(bytes((b,)))
        got += _all(f)
    assert got == [(0, b"\x03abc", 1), (0, b"", 1), (7, b"x" * 300, 8)]
    assert f.buffered == 0


def test_too_large_is_refused_before_buffering() -> None:
    f = PacketFramer(max_payload=1000)
    f.receive_data(b"\xe9\x03\x00\x00")  # 1001 bytes announced
    with pytest.raises(PacketTooLarge) as info:
        f.next_packet()
    assert info.value.errno == 1153


def test_continuation_out_of_order() -> None:
    first = MAX_PACKET_PAYLOAD.to_bytes(3, "little") + b"\x00" + b"a" * MAX_PACKET_PAYLOAD
    f = PacketFramer(max_payload=64 << 20)
    f.receive_data(first + b"\x01\x00\x00\x05z")
    with pytest.raises(PacketsOutOfOrder):
        f.next_packet()


def test_end_of_stream_flag() -> None:
    f = PacketFramer()
    f.receive_data(b"")
    assert f.closed
    assert f.next_packet() is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=8), st.integers(0, 255), st.lists(st.integers(1, 50), min_size=1))
def test_any_split_reassembles(payloads: list[bytes], seq: int, cuts: list[int]) -> None:
    stream = b"".join(frame(seq, p)[0] for p in payloads)
    f = PacketFramer()
    got = []
    pos, i = 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        f.receive_data(stream[pos : pos + n])
        pos += n
        i += 1
        got += [p for _, p, _ in _all(f)]
    assert got == payloads


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_only_typed_errors(data: bytes) -> None:
    f = PacketFramer(max_payload=1 << 12)
    f.receive_data(data)
    with contextlib.suppress(MySQLProtocolError):
        _all(f)
