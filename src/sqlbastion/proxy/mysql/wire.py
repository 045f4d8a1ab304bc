"""Reading and writing the protocol's basic data types, with bounds checks.

page_protocol_basic_data_types: fixed-length integers (``int<1..8>``, little
endian), length-encoded integers (``int<lenenc>``), and strings that are
fixed-length, NUL-terminated, length-encoded or run to the end of the packet.

Strategy: ``PayloadReader`` walks one packet's payload. Every read checks the
remaining length first and raises ``MalformedPacket`` (a typed remote error)
when the peer's packet is short — never IndexError, never AssertionError.
"""

from __future__ import annotations

from sqlbastion.proxy.mysql.errors import LocalProtocolError, MalformedPacket

NULL_COLUMN = 0xFB  # a NULL value in a text row (page_protocol_com_query_response_text_resultset_row)


class PayloadReader:
    """A cursor over one packet payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedPacket(f"{what} needs {n} bytes at offset {self.pos}, packet has {len(self.data)}")

    def int1(self, what: str = "int<1>") -> int:
        self._need(1, what)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def int2(self, what: str = "int<2>") -> int:
        self._need(2, what)
        v = int.from_bytes(self.data[self.pos : self.pos + 2], "little")
        self.pos += 2
        return v

    def int3(self, what: str = "int<3>") -> int:
        self._need(3, what)
        v = int.from_bytes(self.data[self.pos : self.pos + 3], "little")
        self.pos += 3
        return v

    def int4(self, what: str = "int<4>") -> int:
        self._need(4, what)
        v = int.from_bytes(self.data[self.pos : self.pos + 4], "little")
        self.pos += 4
        return v

    def int8(self, what: str = "int<8>") -> int:
        self._need(8, what)
        v = int.from_bytes(self.data[self.pos : self.pos + 8], "little")
        self.pos += 8
        return v

    def lenenc_int(self, what: str = "int<lenenc>") -> int:
        """A length-encoded integer. 0xFB (NULL) and 0xFF (ERR marker) are not integers here."""
        first = self.int1(what)
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.int2(what)
        if first == 0xFD:
            return self.int3(what)
        if first == 0xFE:
            return self.int8(what)
        raise MalformedPacket(f"{what}: 0x{first:02X} does not start a length-encoded integer")

    def fixed(self, n: int, what: str = "string<fix>") -> bytes:
        self._need(n, what)
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v

    def skip(self, n: int, what: str = "filler") -> None:
        self._need(n, what)
        self.pos += n

    def lenenc_bytes(self, what: str = "string<lenenc>") -> bytes:
        n = self.lenenc_int(what)
        return self.fixed(n, what)

    def nul_bytes(self, what: str = "string<NUL>") -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise MalformedPacket(f"{what} at offset {self.pos} has no terminating NUL")
        v = self.data[self.pos : end]
        self.pos = end + 1
        return v

    def rest(self) -> bytes:
        v = self.data[self.pos :]
        self.pos = len(self.data)
        return v

    def lenenc_value_or_null(self, what: str = "value") -> bytes | None:
        """A text-row value: 0xFB is NULL, anything else a length-encoded string."""
        self._need(1, what)
        if self.data[self.pos] == NULL_COLUMN:
            self.pos += 1
            return None
        return self.lenenc_bytes(what)


def lenenc_int(n: int) -> bytes:
    """Encode ``int<lenenc>``."""
    if n < 0:
        raise LocalProtocolError(f"length-encoded integer cannot be negative: {n}")
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    if n < 1 << 64:
        return b"\xfe" + n.to_bytes(8, "little")
    raise LocalProtocolError(f"length-encoded integer too large: {n}")


def lenenc_bytes(b: bytes) -> bytes:
    """Encode ``string<lenenc>``."""
    return lenenc_int(len(b)) + b


def text_value(v: bytes | None) -> bytes:
    """Encode one text-row value: NULL as 0xFB, else a length-encoded string."""
    if v is None:
        return b"\xfb"
    return lenenc_int(len(v)) + v
