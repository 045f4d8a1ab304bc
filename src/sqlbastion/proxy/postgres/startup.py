"""The startup phase: the first packet a client sends, and which parameters go to the backend.

Sans-IO. The startup packet has no type byte: Int32 length (counting itself),
Int32 request code, then the body (PostgreSQL 15 documentation §55.7:
StartupMessage, SSLRequest, GSSENCRequest, CancelRequest; §55.2.1 "Start-up").

Parameter policy (docs/postgres.md, "Startup parameters"):
* passed on: ``application_name``, ``client_encoding`` (safe encodings only),
  ``DateStyle``, ``TimeZone``, ``extra_float_digits``, ``IntervalStyle``,
  ``intervalstyle`` and the other spellings of those names (GUC names are
  case-insensitive);
* refused with FATAL: ``options`` (it can set any GUC, e.g. ``search_path``,
  behind the analyser's back), ``replication`` (a replication connection
  speaks another protocol and streams whole tables), and a ``client_encoding``
  whose multibyte characters can hide a backslash or quote (SJIS, BIG5, GBK,
  GB18030, UHC, JOHAB) — the analyser could read such text differently from
  the server;
* dropped (and logged): any other parameter, and protocol options ``_pq_.*``,
  which are reported back as unsupported with NegotiateProtocolVersion.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sqlbastion.proxy.postgres.protocol import (
    NEGOTIATE_PROTOCOL_VERSION,
    ProtocolViolation,
    cstring,
    encode_message,
)

__all__ = [
    "CancelRequest",
    "EncryptionRequest",
    "StartupMessage",
    "StartupReader",
    "encode_cancel_request",
    "encode_startup",
    "filter_parameters",
    "safe_client_encoding",
]

PROTOCOL_3_0 = 196608  # (3 << 16) | 0
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
# PostgreSQL's own MAX_STARTUP_PACKET_LENGTH (src/include/libpq/pqcomm.h).
MAX_STARTUP_PACKET = 10000
MAX_PARAMETER_VALUE = 256

_PASSED = {
    "application_name": "application_name",
    "client_encoding": "client_encoding",
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "extra_float_digits": "extra_float_digits",
    "intervalstyle": "IntervalStyle",
}
_REFUSED = {"options", "replication"}

# Encodings where every byte of a multibyte character is ≥ 0x80, so no byte of a
# character can be read as an ASCII quote or backslash (PostgreSQL 15 §24.3.1).
_SAFE_ENCODINGS = {
    "utf8": "UTF8",
    "unicode": "UTF8",
    "sqlascii": "SQL_ASCII",
    "eucjp": "EUC_JP",
    "euccn": "EUC_CN",
    "euckr": "EUC_KR",
    "euctw": "EUC_TW",
    "eucjis2004": "EUC_JIS_2004",
    "iso885951": "ISO_8859_5",
    "iso88595": "ISO_8859_5",
    "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7",
    "iso88598": "ISO_8859_8",
    "koi8r": "KOI8R",
    "koi8": "KOI8R",
    "koi8u": "KOI8U",
    "mulecode": "MULE_INTERNAL",
    **{f"latin{i}": f"LATIN{i}" for i in range(1, 11)},
    **{f"win{n}": f"WIN{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)},
    **{f"windows{n}": f"WIN{n}" for n in (866, 874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)},
}


def safe_client_encoding(value: str) -> str | None:
    """The canonical name of a client encoding sqlbastion accepts, or None.

    PostgreSQL ignores case, '-' and '_' in encoding names (``pg_char_to_encoding``).
    """
    key = "".join(ch for ch in value.lower() if ch.isalnum())
    return _SAFE_ENCODINGS.get(key)


@dataclass(frozen=True, kw_only=True, slots=True)
class EncryptionRequest:
    """SSLRequest or GSSENCRequest: the client asks to encrypt before the StartupMessage."""

    kind: str  # "ssl" | "gss"


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelRequest:
    """CancelRequest: Int32 process ID, Int32 secret key of the session to cancel."""

    pid: int
    secret: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StartupMessage:
    """StartupMessage: protocol version, then (name, value) parameters."""

    minor_version: int
    parameters: dict[str, str] = field(default_factory=dict)
    protocol_options: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        return self.parameters.get("user", "")

    @property
    def database(self) -> str:
        return self.parameters.get("database") or self.user


StartupPacket = EncryptionRequest | CancelRequest | StartupMessage


class StartupReader:
    """Reads the one startup packet at the start of a connection (or after SSL/GSS negotiation)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= 4:
            self._length()  # check the bound as early as possible

    def leftover(self) -> int:
        return len(self._buf)

    def take_leftover(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def _length(self) -> int:
        length: int = struct.unpack_from("!i", self._buf)[0]
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation("invalid length of startup packet")
        return length

    def next(self) -> StartupPacket | None:
        """The packet, or None until all of it has arrived."""
        if len(self._buf) < 4:
            return None
        length = self._length()
        if len(self._buf) < length:
            return None
        packet = bytes(self._buf[:length])
        del self._buf[:length]
        return parse_startup_packet(packet)


def parse_startup_packet(packet: bytes) -> StartupPacket:
    code: int = struct.unpack_from("!i", packet, 4)[0]
    body = packet[8:]
    if code == SSL_REQUEST_CODE and not body:
        return EncryptionRequest(kind="ssl")
    if code == GSSENC_REQUEST_CODE and not body:
        return EncryptionRequest(kind="gss")
    if code == CANCEL_REQUEST_CODE:
        if len(body) != 8:
            raise ProtocolViolation("invalid CancelRequest length")
        pid, secret = struct.unpack("!ii", body)
        return CancelRequest(pid=pid, secret=secret)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(f"unsupported frontend protocol {major}.{minor}: server supports 3.0", sqlstate="0A000")
    # (name NUL value NUL)* NUL
    if body == b"\x00":
        items: list[bytes] = []
    elif body.endswith(b"\x00\x00"):
        items = body[:-2].split(b"\x00")
    else:
        raise ProtocolViolation("startup packet is not terminated")
    if len(items) % 2:
        raise ProtocolViolation("startup packet parameters are not name/value pairs")
    params: dict[str, str] = {}
    options: list[str] = []
    for i in range(0, len(items), 2):
        try:
            name, value = items[i].decode("utf-8"), items[i + 1].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("startup parameters must be UTF-8") from None
        if not name:
            raise ProtocolViolation("empty startup parameter name")
        if name.startswith("_pq_."):
            options.append(name)
            continue
        params[name] = value
    if not params.get("user"):
        raise ProtocolViolation("no PostgreSQL user name specified in startup packet", sqlstate="28000")
    return StartupMessage(minor_version=minor, parameters=params, protocol_options=tuple(options))


def filter_parameters(startup: StartupMessage) -> tuple[dict[str, str], list[str]]:
    """The parameters to pass to the backend, and the names dropped.

    Raises ProtocolViolation (SQLSTATE 0A000 or 22023) for a refused parameter.
    """
    passed: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in startup.parameters.items():
        key = name.lower()
        if key in ("user", "database"):
            continue
        if key in _REFUSED:
            raise ProtocolViolation(
                f'sqlbastion does not accept the startup parameter "{name}"; set session parameters with SET',
                sqlstate="0A000",
            )
        canonical = _PASSED.get(key)
        if canonical is None:
            dropped.append(name)
            continue
        if len(value) > MAX_PARAMETER_VALUE or "\x00" in value:
            raise ProtocolViolation(f'startup parameter "{name}" is too long', sqlstate="22023")
        if canonical == "client_encoding":
            safe = safe_client_encoding(value)
            if safe is None:
                raise ProtocolViolation(
                    f'client_encoding "{value}" is not supported by sqlbastion; use UTF8', sqlstate="0A000"
                )
            passed[canonical] = safe
            continue
        passed[canonical] = value
    return passed, dropped


def encode_negotiate_protocol_version(unsupported: tuple[str, ...]) -> bytes:
    """NegotiateProtocolVersion (§55.7): Int32 newest minor supported, Int32 n, String option × n."""
    body = struct.pack("!ii", 0, len(unsupported)) + b"".join(cstring(o) for o in unsupported)
    return encode_message(NEGOTIATE_PROTOCOL_VERSION, body)


def encode_startup(parameters: dict[str, str]) -> bytes:
    """StartupMessage for protocol 3.0 with the given parameters."""
    body = struct.pack("!i", PROTOCOL_3_0)
    body += b"".join(cstring(k) + cstring(v) for k, v in parameters.items()) + b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def encode_ssl_request() -> bytes:
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def encode_cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, secret)
