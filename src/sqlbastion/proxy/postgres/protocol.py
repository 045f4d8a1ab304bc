"""PostgreSQL frontend/backend protocol v3: framing, typed errors and message codecs.

Sans-IO: nothing here touches a socket. ``MessageReader`` turns bytes into
``(type byte, body)`` frames; the ``encode_*`` functions build frames; the
``decode_*`` functions parse the bodies the proxy needs to look inside.

References (PostgreSQL 15 documentation, chapter 55 "Frontend/Backend
Protocol"): §55.2 "Message Flow", §55.7 "Message Formats" and §55.8 "Error
and Notice Message Fields". Every message after the startup packet is one type
byte, an Int32 length that counts itself but not the type byte, and the body.

Invariants:
* Every length a peer sends is checked against a bound before any buffering
  beyond it, so a peer cannot make the proxy hold more than ``max_message``
  bytes per frame.
* Decoders raise ``ProtocolViolation`` (never IndexError, struct.error or
  AssertionError) for truncated or inconsistent bodies; the exception carries
  the SQLSTATE for the ErrorResponse to send back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "NEED_DATA",
    "MessageReader",
    "ProtocolViolation",
    "RowColumn",
    "decode_bind",
    "decode_bind_fields",
    "decode_close_or_describe",
    "decode_data_row",
    "decode_error_fields",
    "decode_execute",
    "decode_parse",
    "decode_query",
    "decode_row_description",
    "encode_data_row",
    "encode_error",
    "encode_error_fields",
    "encode_message",
    "encode_ready_for_query",
]

# Frontend message types (§55.7).
BIND = 0x42  # 'B'
CLOSE = 0x43  # 'C'
DESCRIBE = 0x44  # 'D'
EXECUTE = 0x45  # 'E'
FUNCTION_CALL = 0x46  # 'F'
FLUSH = 0x48  # 'H'
PARSE = 0x50  # 'P'
QUERY = 0x51  # 'Q'
SYNC = 0x53  # 'S'
TERMINATE = 0x58  # 'X'
COPY_DATA = 0x64  # 'd' (both directions)
COPY_DONE = 0x63  # 'c' (both directions)
COPY_FAIL = 0x66  # 'f'
PASSWORD = 0x70  # 'p': PasswordMessage, SASLInitialResponse, SASLResponse

# Backend message types (§55.7).
PARSE_COMPLETE = 0x31  # '1'
BIND_COMPLETE = 0x32  # '2'
CLOSE_COMPLETE = 0x33  # '3'
NOTIFICATION = 0x41  # 'A' NotificationResponse
COMMAND_COMPLETE = 0x43  # 'C'
DATA_ROW = 0x44  # 'D'
ERROR_RESPONSE = 0x45  # 'E'
COPY_IN_RESPONSE = 0x47  # 'G'
COPY_OUT_RESPONSE = 0x48  # 'H'
EMPTY_QUERY = 0x49  # 'I'
BACKEND_KEY_DATA = 0x4B  # 'K'
NOTICE_RESPONSE = 0x4E  # 'N'
AUTHENTICATION = 0x52  # 'R'
PARAMETER_STATUS = 0x53  # 'S'
ROW_DESCRIPTION = 0x54  # 'T'
FUNCTION_CALL_RESPONSE = 0x56  # 'V'
COPY_BOTH_RESPONSE = 0x57  # 'W'
READY_FOR_QUERY = 0x5A  # 'Z'
NO_DATA = 0x6E  # 'n'
PORTAL_SUSPENDED = 0x73  # 's'
PARAMETER_DESCRIPTION = 0x74  # 't'
NEGOTIATE_PROTOCOL_VERSION = 0x76  # 'v'

# Authentication request codes (§55.7, "AuthenticationOk" … "AuthenticationSASLFinal").
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# 1 GiB is the server's own hard limit (MaxAllocSize); the proxy's default is far lower.
DEFAULT_MAX_MESSAGE = 64 << 20

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HDR = struct.Struct("!ci")
_RFQ = {b"I": b"Z\x00\x00\x00\x05I", b"T": b"Z\x00\x00\x00\x05T", b"E": b"Z\x00\x00\x00\x05E"}


class ProtocolViolation(Exception):
    """The peer sent something the protocol does not allow.

    ``sqlstate`` and ``message`` make the FATAL ErrorResponse the proxy sends
    before closing the connection (08P01 protocol_violation by default).
    """

    def __init__(self, message: str, *, sqlstate: str = "08P01") -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate

    def reply(self) -> bytes:
        return encode_error("FATAL", self.sqlstate, self.message)


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class MessageReader:
    """Splits a byte stream into typed frames.

    ``feed(data)`` appends; ``next()`` returns ``(type, body)`` or NEED_DATA.
    ``next_frame_end()`` is the zero-copy variant used on the hot path: it
    returns the offset just past the next complete frame without slicing.
    """

    __slots__ = ("_buf", "_pos", "max_message")

    def __init__(self, *, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_message = max_message

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def take_buffered(self) -> bytes:
        """Everything not yet consumed (used when a connection hands its bytes over)."""
        out = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = 0
        return out

    def peek_type(self) -> int | None:
        return self._buf[self._pos] if self._pos < len(self._buf) else None

    def next(self) -> tuple[int, bytes] | _NeedData:
        end = self.next_frame_end()
        if end < 0:
            return NEED_DATA
        kind = self._buf[self._pos]
        body = bytes(self._buf[self._pos + 5 : end])
        self._consume(end)
        return kind, body

    def next_raw(self) -> tuple[int, bytes] | _NeedData:
        """The next frame as (type, whole frame bytes including the header)."""
        end = self.next_frame_end()
        if end < 0:
            return NEED_DATA
        kind = self._buf[self._pos]
        frame = bytes(self._buf[self._pos : end])
        self._consume(end)
        return kind, frame

    def pop_frame(self) -> bytes | None:
        """The next complete frame (type byte, length, body), or None. The hot-path reader."""
        buf = self._buf
        pos = self._pos
        have = len(buf)
        if have - pos < 5:
            return None
        length = _I32.unpack_from(buf, pos + 1)[0]
        if length < 4 or length > self.max_message:
            self.next_frame_end()  # raises the right ProtocolViolation
        end = pos + 1 + length
        if end > have:
            return None
        frame = bytes(buf[pos:end])
        if end == have:
            buf.clear()
            self._pos = 0
        elif end > 65536:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return frame

    def window(self) -> tuple[bytearray, int]:
        """The internal buffer and the offset of the first unconsumed byte, for a caller that
        walks the frames in place (the relay's client pump); it must call ``consume_to`` after."""
        return self._buf, self._pos

    def consume_to(self, end: int) -> None:
        """Everything before ``end`` (an offset into ``window()``'s buffer) has been handled."""
        if end != self._pos:
            self._consume(end)

    def check_length(self, length: int) -> None:
        """Raise the ProtocolViolation for a frame length outside 4 … ``max_message``."""
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length > self.max_message:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the limit of {self.max_message}", sqlstate="54000"
            )

    def take_frame(self, end: int) -> tuple[int, bytes]:
        """Consume the frame ending at ``end`` (from ``next_frame_end``): (type, whole frame)."""
        pos = self._pos
        frame = bytes(self._buf[pos:end])
        self._consume(end)
        return frame[0], frame

    def next_frame_end(self) -> int:
        """Offset past the next complete frame in the internal buffer, or -1 if incomplete."""
        pos = self._pos
        if len(self._buf) - pos < 5:
            return -1
        length = _I32.unpack_from(self._buf, pos + 1)[0]
        if length < 4:
            raise ProtocolViolation(f"invalid message length {length}")
        if length > self.max_message:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the limit of {self.max_message}", sqlstate="54000"
            )
        end = pos + 1 + length
        return end if end <= len(self._buf) else -1

    def _consume(self, end: int) -> None:
        self._pos = end
        if end == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif end > 65536:
            del self._buf[:end]
            self._pos = 0


# --- encoders ---------------------------------------------------------------------------------


def encode_message(kind: int, body: bytes = b"") -> bytes:
    return _HDR.pack(bytes((kind,)), len(body) + 4) + body


def encode_ready_for_query(status: bytes) -> bytes:
    """ReadyForQuery (§55.7): Byte1('Z'), Int32(5), Byte1 status 'I' | 'T' | 'E'."""
    return _RFQ[status]


def encode_error_fields(kind: int, fields: Iterable[tuple[bytes, str]]) -> bytes:
    """ErrorResponse / NoticeResponse body: (field code, String)*, then a zero byte (§55.8)."""
    parts = [code + value.encode("utf-8", "replace").replace(b"\x00", b"") + b"\x00" for code, value in fields]
    return encode_message(kind, b"".join(parts) + b"\x00")


def encode_error(severity: str, sqlstate: str, message: str, *, detail: str | None = None) -> bytes:
    """An ErrorResponse with S (localized severity), V (severity, 9.6+), C (SQLSTATE) and M fields."""
    fields: list[tuple[bytes, str]] = [(b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message)]
    if detail:
        fields.append((b"D", detail))
    return encode_error_fields(ERROR_RESPONSE, fields)


def encode_data_row(values: Sequence[bytes | None]) -> bytes:
    """DataRow (§55.7): Int16 column count, then per column Int32 length (-1 = NULL) and bytes."""
    parts = [_I16.pack(len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I32.pack(len(v)))
            parts.append(v)
    return encode_message(DATA_ROW, b"".join(parts))


def cstring(text: str, encoding: str = "utf-8") -> bytes:
    data = text.encode(encoding)
    if b"\x00" in data:
        raise ValueError("a protocol string cannot hold a zero byte")
    return data + b"\x00"


# --- decoders ---------------------------------------------------------------------------------


class _Cursor:
    """Bounds-checked reads over one message body."""

    __slots__ = ("body", "pos", "what")

    def __init__(self, body: bytes, what: str) -> None:
        self.body = body
        self.pos = 0
        self.what = what

    def _short(self) -> ProtocolViolation:
        return ProtocolViolation(f"truncated {self.what} message")

    def int16(self) -> int:
        if self.pos + 2 > len(self.body):
            raise self._short()
        v: int = _I16.unpack_from(self.body, self.pos)[0]
        self.pos += 2
        return v

    def int32(self) -> int:
        if self.pos + 4 > len(self.body):
            raise self._short()
        v: int = _I32.unpack_from(self.body, self.pos)[0]
        self.pos += 4
        return v

    def uint32(self) -> int:
        return self.int32() & 0xFFFFFFFF

    def cstring(self) -> bytes:
        end = self.body.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation(f"unterminated string in {self.what} message")
        v = self.body[self.pos : end]
        self.pos = end + 1
        return v

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise self._short()
        v = self.body[self.pos : self.pos + n]
        self.pos += n
        return v

    def done(self) -> None:
        if self.pos != len(self.body):
            raise ProtocolViolation(f"trailing bytes in {self.what} message")


def _count(c: _Cursor, what: str) -> int:
    n = c.int16()
    if n < 0:
        raise ProtocolViolation(f"negative {what} count in {c.what} message")
    return n


def decode_query(body: bytes) -> bytes:
    """Query (§55.7): String query. Returns the raw query bytes (client encoding)."""
    end = body.find(b"\x00")
    if end < 0:
        raise ProtocolViolation("unterminated string in Query message")
    if end != len(body) - 1:
        raise ProtocolViolation("trailing bytes in Query message")
    return body[:end]


@dataclass(frozen=True, kw_only=True, slots=True)
class ParseMessage:
    name: bytes
    query: bytes
    param_types: tuple[int, ...]


def decode_parse(body: bytes) -> ParseMessage:
    """Parse (§55.7): String statement name, String query, Int16 n, Int32 parameter type OID × n."""
    c = _Cursor(body, "Parse")
    name = c.cstring()
    query = c.cstring()
    n = _count(c, "parameter type")
    types = tuple(c.uint32() for _ in range(n))
    c.done()
    return ParseMessage(name=name, query=query, param_types=types)


def encode_parse(name: bytes, query: bytes, param_types: Sequence[int] = ()) -> bytes:
    body = name + b"\x00" + query + b"\x00" + _I16.pack(len(param_types))
    body += b"".join(struct.pack("!I", t) for t in param_types)
    return encode_message(PARSE, body)


@dataclass(frozen=True, kw_only=True, slots=True)
class BindMessage:
    portal: bytes
    statement: bytes
    result_formats: tuple[int, ...]


_FORMAT_CODES = frozenset((0, 1))  # text, binary (§55.7, Bind)


def decode_bind(body: bytes) -> BindMessage:
    """Bind (§55.7): String portal, String statement, Int16 n + Int16 format × n (parameters),
    Int16 n + (Int32 length, bytes) × n (values), Int16 n + Int16 format × n (results)."""
    portal, statement, formats = decode_bind_fields(body)
    return BindMessage(portal=portal, statement=statement, result_formats=formats)


def decode_bind_fields(body: bytes) -> tuple[bytes, bytes, tuple[int, ...]]:
    """``decode_bind`` as a plain tuple (portal, statement, result formats), with the same checks.

    On the hot path of every prepared statement execution, so it walks offsets
    directly and builds no object; struct.error and ValueError from a short body
    become ProtocolViolation.
    """
    try:
        e1 = body.index(0)
        e2 = body.index(0, e1 + 1)
        pos = e2 + 1
        n_formats = _I16.unpack_from(body, pos)[0]
        pos += 2 + 2 * n_formats
        n_values = _I16.unpack_from(body, pos)[0]
        pos += 2
        if n_formats < 0 or n_values < 0:
            raise ProtocolViolation("negative count in Bind message")
        for _ in range(n_values):
            n = _I32.unpack_from(body, pos)[0]
            pos += 4
            if n > 0:
                pos += n
            elif n < -1:
                raise ProtocolViolation("invalid parameter length in Bind message")
        n_results = _I16.unpack_from(body, pos)[0]
        if n_results < 0:
            raise ProtocolViolation("negative count in Bind message")
        formats = struct.unpack_from(f"!{n_results}h", body, pos + 2)
    except (ValueError, struct.error):
        raise ProtocolViolation("truncated Bind message") from None
    if pos + 2 + 2 * n_results != len(body):
        raise ProtocolViolation("trailing bytes in Bind message")
    if formats and not _FORMAT_CODES.issuperset(formats):
        raise ProtocolViolation("unsupported result format code in Bind message", sqlstate="0A000")
    return body[:e1], body[e1 + 1 : e2], formats


def decode_execute(body: bytes) -> tuple[bytes, int]:
    """Execute (§55.7): String portal, Int32 maximum rows (0 = no limit)."""
    end = body.find(b"\x00")
    if end < 0 or len(body) != end + 5:
        raise ProtocolViolation("malformed Execute message")
    limit: int = _I32.unpack_from(body, end + 1)[0]
    return body[:end], limit


def decode_close_or_describe(body: bytes, what: str) -> tuple[int, bytes]:
    """Close / Describe (§55.7): Byte1 'S' (statement) or 'P' (portal), String name."""
    if len(body) < 2 or body[0] not in (0x53, 0x50) or body.find(b"\x00", 1) != len(body) - 1:
        raise ProtocolViolation(f"malformed {what} message")
    return body[0], body[1:-1]


class RowColumn(NamedTuple):
    """One RowDescription field (§55.7).

    Immutable like a frozen dataclass, but a tuple: the relay keys its caches
    (column names, mask plans) by tuples of these, and a tuple hashes in C
    where a dataclass runs a generated ``__hash__`` per column per lookup.
    """

    name: bytes
    table_oid: int
    attnum: int
    type_oid: int
    format: int


def decode_row_description(body: bytes) -> tuple[RowColumn, ...]:
    """RowDescription (§55.7): Int16 n, then per field String name, Int32 table OID, Int16 column
    attribute number, Int32 type OID, Int16 type size, Int32 type modifier, Int16 format code."""
    c = _Cursor(body, "RowDescription")
    out = []
    for _ in range(_count(c, "field")):
        name = c.cstring()
        table = c.uint32()
        attnum = c.int16()
        typ = c.uint32()
        c.int16()
        c.int32()
        fmt = c.int16()
        out.append(RowColumn(name=name, table_oid=table, attnum=attnum, type_oid=typ, format=fmt))
    c.done()
    return tuple(out)


def decode_data_row(body: bytes) -> list[bytes | None]:
    """DataRow (§55.7): Int16 n, then per column Int32 length (-1 = NULL) and the value bytes."""
    c = _Cursor(body, "DataRow")
    values: list[bytes | None] = []
    for _ in range(_count(c, "column")):
        n = c.int32()
        if n == -1:
            values.append(None)
        elif n < 0:
            raise ProtocolViolation("invalid value length in DataRow message")
        else:
            values.append(c.take(n))
    c.done()
    return values


def decode_error_fields(body: bytes) -> list[tuple[bytes, str]]:
    """ErrorResponse / NoticeResponse body → [(field code, value)] (§55.8)."""
    c = _Cursor(body, "ErrorResponse")
    fields = []
    while True:
        code = c.take(1)
        if code == b"\x00":
            break
        fields.append((code, c.cstring().decode("utf-8", "replace")))
    c.done()
    return fields


def decode_command_tag(body: bytes) -> tuple[str, int]:
    """CommandComplete (§55.7) → (command word, row count or 0). Tags look like ``SELECT 5``,
    ``INSERT 0 5``, ``UPDATE 5``, ``COPY 5``, ``BEGIN``."""
    tag = body.rstrip(b"\x00").decode("ascii", "replace")
    parts = tag.split(" ")
    count = int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0
    return parts[0], count


def decode_parameter_status(body: bytes) -> tuple[str, str]:
    """ParameterStatus (§55.7): String name, String value."""
    c = _Cursor(body, "ParameterStatus")
    name = c.cstring().decode("utf-8", "replace")
    value = c.cstring().decode("utf-8", "replace")
    c.done()
    return name, value


def decode_authentication(body: bytes) -> tuple[int, bytes]:
    """Authentication* (§55.7): Int32 code, then code-specific data."""
    c = _Cursor(body, "Authentication")
    code = c.int32()
    return code, body[4:]


def decode_backend_key_data(body: bytes) -> tuple[int, int]:
    """BackendKeyData (§55.7): Int32 process ID, Int32 secret key."""
    c = _Cursor(body, "BackendKeyData")
    pid = c.int32()
    key = c.int32()
    c.done()
    return pid, key


def encode_backend_key_data(pid: int, key: int) -> bytes:
    return encode_message(BACKEND_KEY_DATA, struct.pack("!ii", pid, key))


def encode_parameter_status(name: str, value: str) -> bytes:
    return encode_message(PARAMETER_STATUS, cstring(name) + cstring(value))


def encode_authentication(code: int, data: bytes = b"") -> bytes:
    return encode_message(AUTHENTICATION, _I32.pack(code) + data)
