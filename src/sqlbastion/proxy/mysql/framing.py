"""Packet framing: 4-byte headers, sequence ids, payloads of 16 MiB and more.

page_protocol_basic_packets: each packet is ``int<3> payload_length``,
``int<1> sequence_id``, then the payload. A payload of 2^24-1 bytes or more is
sent as several packets of exactly 0xFFFFFF bytes followed by one shorter
packet (possibly empty); each piece has the next sequence id.

Strategy: ``PacketFramer`` is sans-IO. ``receive_data(bytes)`` appends to a
bounded buffer; ``next_packet()`` returns one reassembled logical packet, or
None when more bytes are needed. The logical payload is bounded by
``max_payload`` (a peer cannot make the proxy buffer more), and the pieces of
one logical packet must carry consecutive sequence ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlbastion.proxy.mysql.constants import MAX_PACKET_PAYLOAD
from sqlbastion.proxy.mysql.errors import LocalProtocolError, PacketsOutOfOrder, PacketTooLarge

__all__ = ["DEFAULT_MAX_PAYLOAD", "Packet", "PacketFramer", "frame", "frame_into"]

DEFAULT_MAX_PAYLOAD = 64 << 20  # matches a generous server max_allowed_packet


@dataclass(frozen=True, kw_only=True, slots=True)
class Packet:
    """One logical packet: the sequence id of its first piece, the next id after it, the payload."""

    seq: int
    payload: bytes
    next_seq: int


class PacketFramer:
    """Reassembles logical packets from a byte stream (sans-IO)."""

    __slots__ = ("_buf", "_closed", "_pos", "max_payload")

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._closed = False
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def closed(self) -> bool:
        """True once ``receive_data(b"")`` signalled the end of the stream."""
        return self._closed

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` marks the end of the stream."""
        if not data:
            self._closed = True
            return
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def take_buffered(self) -> bytes:
        """Remove and return every buffered byte (used to detect bytes sent before a TLS upgrade)."""
        data = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return data

    def next_packet(self) -> Packet | None:
        """The next whole logical packet, or None until more bytes arrive.

        Raises PacketTooLarge (payload over ``max_payload``) and PacketsOutOfOrder
        (continuation pieces with non-consecutive sequence ids).
        """
        got = self.next_frame()
        if got is None:
            return None
        return Packet(seq=got[0], payload=got[1], next_seq=got[2])

    def next_frame(self) -> tuple[int, bytes, int] | None:
        """``next_packet`` as a plain (seq, payload, next_seq) tuple: the command loop's hot path.

        A frozen dataclass costs a few hundred nanoseconds to build; this is read once per command.
        """
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if end - pos < 4:
            return None
        first_len = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        seq = buf[pos + 3]
        if first_len < MAX_PACKET_PAYLOAD:
            # The common case: one piece.
            if first_len > self.max_payload:
                raise PacketTooLarge(first_len, self.max_payload)
            if end - pos - 4 < first_len:
                return None
            payload = bytes(buf[pos + 4 : pos + 4 + first_len])
            self._pos = pos + 4 + first_len
            return seq, payload, (seq + 1) & 0xFF
        # Several pieces: walk headers until the short one, checking size and order first.
        total = 0
        p = pos
        expected = seq
        pieces: list[tuple[int, int]] = []
        while True:
            if end - p < 4:
                self._check_size(total + (end - p), seq)
                return None
            n = buf[p] | buf[p + 1] << 8 | buf[p + 2] << 16
            s = buf[p + 3]
            if s != expected:
                raise PacketsOutOfOrder(s, expected)
            total += n
            if total > self.max_payload:
                raise PacketTooLarge(total, self.max_payload)
            if end - p - 4 < n:
                return None
            pieces.append((p + 4, n))
            p += 4 + n
            expected = (expected + 1) & 0xFF
            if n < MAX_PACKET_PAYLOAD:
                break
        payload = b"".join(bytes(buf[a : a + n]) for a, n in pieces)
        self._pos = p
        return seq, payload, expected

    def _check_size(self, total: int, seq: int) -> None:
        if total > self.max_payload + 4:
            raise PacketTooLarge(total, self.max_payload)


def frame(seq: int, payload: bytes) -> tuple[bytes, int]:
    """Frame one logical payload; returns (bytes to send, the next sequence id)."""
    out = bytearray()
    seq = frame_into(out, seq, payload)
    return bytes(out), seq


def frame_into(out: bytearray, seq: int, payload: bytes | bytearray | memoryview) -> int:
    """Append the framed payload to ``out``; returns the next sequence id."""
    if not 0 <= seq <= 0xFF:
        raise LocalProtocolError(f"sequence id {seq} out of range")
    n = len(payload)
    if n < MAX_PACKET_PAYLOAD:
        out += n.to_bytes(3, "little")
        out.append(seq)
        out += payload
        return (seq + 1) & 0xFF
    view = memoryview(payload)
    pos = 0
    while True:
        chunk = view[pos : pos + MAX_PACKET_PAYLOAD]
        out += len(chunk).to_bytes(3, "little")
        out.append(seq)
        out += chunk
        seq = (seq + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_PACKET_PAYLOAD:
            return seq
