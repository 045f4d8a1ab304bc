"""Masking values in the exact wire format each protocol carries them in.

Strategy: a result column's wire type (``ResultColumn.type_name``), its format
(text or binary) and the connection's character set decide, once per column at
plan time, a converter ``bytes -> bytes | None``: decode the value into a value
kind, apply the masking function's operation for that kind, and encode the
answer in the same format. ``None`` is SQL NULL; the proxy re-frames it.

Formats, per the protocol documentation:

* MySQL text rows (COM_QUERY): every value is its text form in the result
  character set (Text Resultset, "ProtocolText::ResultsetRow").
* MySQL binary rows (COM_STMT_EXECUTE, "Binary Protocol Resultset Row"): the
  value bytes without the length-encoded prefix. Integers are little-endian of
  1 (TINY), 2 (SHORT, YEAR), 4 (LONG, INT24) or 8 (LONGLONG) bytes; FLOAT and
  DOUBLE are IEEE 754 little-endian; DECIMAL/NEWDECIMAL and strings are text;
  DATE/DATETIME/TIMESTAMP are 0, 4, 7 or 11 bytes (year u16, month, day, hour,
  minute, second, microsecond u32) after their length byte.
* PostgreSQL text format: the type's output function text in client_encoding.
* PostgreSQL binary format (each type's ``send``/``recv`` function): int2/4/8
  big-endian; float4/float8 IEEE 754 big-endian; ``numeric`` as ndigits,
  weight, sign, dscale (int16 each) then base-10000 digits; ``date`` int32 days
  and ``timestamp``/``timestamptz`` int64 microseconds since 2000-01-01; text
  types as their characters; ``jsonb`` a version byte then text.

Anything the converter cannot decode, or a wire type it does not know, masks
to NULL or to the full-mask text: never to the original value.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum

from sqlbastion.masking.functions import FULL_TEXT, AsciiOp, MaskFunction

__all__ = ["Converter", "Kind", "ascii_fast_op", "ascii_fast_path", "build_converter", "python_encoding", "value_kind"]

Converter = Callable[[bytes], bytes | None]


class Kind(Enum):
    TEXT = "text"
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    DATE = "date"
    DATETIME = "datetime"
    OTHER = "other"  # JSON, binary strings, times, arrays, records, unknown: masked to NULL


_MYSQL_KINDS: dict[str, tuple[Kind, int]] = {
    "var_string": (Kind.TEXT, 0),
    "string": (Kind.TEXT, 0),
    "varchar": (Kind.TEXT, 0),
    "blob": (Kind.TEXT, 0),
    "tiny_blob": (Kind.TEXT, 0),
    "medium_blob": (Kind.TEXT, 0),
    "long_blob": (Kind.TEXT, 0),
    "enum": (Kind.TEXT, 0),
    "set": (Kind.TEXT, 0),
    "tiny": (Kind.INTEGER, 1),
    "short": (Kind.INTEGER, 2),
    "year": (Kind.INTEGER, 2),
    "long": (Kind.INTEGER, 4),
    "int24": (Kind.INTEGER, 4),
    "longlong": (Kind.INTEGER, 8),
    "decimal": (Kind.DECIMAL, 0),
    "newdecimal": (Kind.DECIMAL, 0),
    "float": (Kind.FLOAT, 4),
    "double": (Kind.FLOAT, 8),
    "date": (Kind.DATE, 0),
    "newdate": (Kind.DATE, 0),
    "datetime": (Kind.DATETIME, 0),
    "datetime2": (Kind.DATETIME, 0),
    "timestamp": (Kind.DATETIME, 0),
    "timestamp2": (Kind.DATETIME, 0),
}

_POSTGRES_KINDS: dict[str, tuple[Kind, int]] = {
    "text": (Kind.TEXT, 0),
    "varchar": (Kind.TEXT, 0),
    "bpchar": (Kind.TEXT, 0),
    "char": (Kind.TEXT, 0),
    "name": (Kind.TEXT, 0),
    "citext": (Kind.TEXT, 0),
    "unknown": (Kind.TEXT, 0),
    "int2": (Kind.INTEGER, 2),
    "int4": (Kind.INTEGER, 4),
    "int8": (Kind.INTEGER, 8),
    "numeric": (Kind.DECIMAL, 0),
    "float4": (Kind.FLOAT, 4),
    "float8": (Kind.FLOAT, 8),
    "date": (Kind.DATE, 0),
    "timestamp": (Kind.DATETIME, 0),
    "timestamptz": (Kind.DATETIME, 0),
}

_ENCODINGS = {
    "utf8": "utf-8",
    "utf8mb4": "utf-8",
    "utf8mb3": "utf-8",
    "unicode": "utf-8",
    "sql_ascii": "utf-8",
    "latin1": "cp1252",  # MySQL's latin1 is Windows-1252
    "binary": "latin-1",
    "euc_cn": "gb2312",
    "ujis": "euc_jp",
    "sjis": "shift_jis",
    "euckr": "euc_kr",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf32": "utf-32-be",
    "win1252": "cp1252",
    "win1251": "cp1251",
}


def python_encoding(name: str) -> str:
    """The Python codec for a MySQL character set or PostgreSQL client_encoding name."""
    key = name.strip().lower().replace("-", "_")
    candidate = _ENCODINGS.get(key, key)
    try:
        return codecs.lookup(candidate).name
    except LookupError:
        return "utf-8"


def value_kind(dialect: str, type_name: str) -> tuple[Kind, int]:
    """The value kind and (for fixed-width binary numbers) the width of a wire type."""
    table = _MYSQL_KINDS if dialect == "mysql" else _POSTGRES_KINDS
    return table.get(type_name.lower(), (Kind.OTHER, 0))


def _null(_value: bytes) -> None:
    return None


def _int_range(width: int) -> tuple[int, int]:
    bits = 8 * (width or 8)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _text_converter(fn: MaskFunction, encoding: str) -> Converter:
    op = fn.text
    full = FULL_TEXT.encode(encoding)
    fast = fn.ascii_bytes
    if encoding == "utf-8" and fast is not None:
        # In UTF-8 an all-ASCII value is one byte per character: mask the bytes directly.
        def utf8_fast(value: bytes) -> bytes | None:
            if value.isascii():
                return fast(value)
            try:
                s = value.decode("utf-8")
            except UnicodeDecodeError:
                return full
            out = op(s)
            return None if out is None else out.encode("utf-8", "surrogatepass")

        return utf8_fast
    if encoding == "utf-8":

        def utf8(value: bytes) -> bytes | None:
            try:
                s = value.decode("utf-8")
            except UnicodeDecodeError:
                return full
            out = op(s)
            return None if out is None else out.encode("utf-8", "surrogatepass")

        return utf8

    def other(value: bytes) -> bytes | None:
        try:
            s = value.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            return full
        out = op(s)
        if out is None:
            return None
        try:
            return out.encode(encoding)
        except UnicodeEncodeError:
            return full

    return other


def _ascii(value: bytes) -> str | None:
    try:
        return value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _integer_text(fn: MaskFunction, width: int) -> Converter:
    lo, hi = _int_range(width)
    op = fn.integer

    def conv(value: bytes) -> bytes | None:
        s = _ascii(value)
        try:
            v = int(s) if s is not None else None
        except ValueError:
            return None
        if v is None:
            return None
        out = op(v, lo, hi)
        return None if out is None else str(out).encode("ascii")

    return conv


def _integer_binary(fn: MaskFunction, width: int, little_endian: bool) -> Converter:
    fmt = struct.Struct(("<" if little_endian else ">") + {1: "b", 2: "h", 4: "i", 8: "q"}[width])
    lo, hi = _int_range(width)
    op = fn.integer

    def conv(value: bytes) -> bytes | None:
        if len(value) != width:
            return None
        out = op(fmt.unpack(value)[0], lo, hi)
        return None if out is None else fmt.pack(out)

    return conv


def _decimal_text(fn: MaskFunction) -> Converter:
    op = fn.decimal

    def conv(value: bytes) -> bytes | None:
        s = _ascii(value)
        if s is None:
            return None
        try:
            d = Decimal(s)
        except InvalidOperation:
            return None
        out = op(d)
        return None if out is None or not out.is_finite() else format(out, "f").encode("ascii")

    return conv


def _float_text(fn: MaskFunction) -> Converter:
    op = fn.floating

    def conv(value: bytes) -> bytes | None:
        s = _ascii(value)
        try:
            f = float(s) if s is not None else None
        except ValueError:
            return None
        out = op(f) if f is not None else None
        return None if out is None else repr(out).encode("ascii")

    return conv


def _float_binary(fn: MaskFunction, width: int, little_endian: bool) -> Converter:
    fmt = struct.Struct(("<" if little_endian else ">") + ("f" if width == 4 else "d"))
    op = fn.floating

    def conv(value: bytes) -> bytes | None:
        if len(value) != width:
            return None
        out = op(fmt.unpack(value)[0])
        try:
            return None if out is None else fmt.pack(out)
        except (OverflowError, struct.error):
            return None

    return conv


# PostgreSQL numeric binary format (src/backend/utils/adt/numeric.c, numeric_send/numeric_recv).
_NUMERIC_HEAD = struct.Struct(">hhHh")
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
MAX_NUMERIC_DIGITS = 4096


def decode_pg_numeric(value: bytes) -> Decimal | None:
    """A PostgreSQL binary ``numeric`` as a Decimal; None for NaN/±Infinity or malformed input."""
    if len(value) < 8:
        return None
    ndigits, weight, sign, dscale = _NUMERIC_HEAD.unpack_from(value)
    if sign not in (_NUMERIC_POS, _NUMERIC_NEG) or not 0 <= ndigits <= MAX_NUMERIC_DIGITS or dscale < 0:
        return None
    if len(value) != 8 + 2 * ndigits:
        return None
    digits = struct.unpack_from(f">{ndigits}H", value, 8)
    if any(d > 9999 for d in digits):
        return None
    n = 0
    for d in digits:
        n = n * 10000 + d
    result = Decimal(n).scaleb(4 * (weight - ndigits + 1)) if ndigits else Decimal(0)
    result = result.quantize(Decimal(1).scaleb(-dscale)) if dscale else result.to_integral_value()
    return -result if sign == _NUMERIC_NEG and result else result


def encode_pg_numeric(value: Decimal, dscale: int) -> bytes:
    """A finite Decimal in PostgreSQL's binary ``numeric`` format with ``dscale`` decimal digits."""
    q = abs(value).quantize(Decimal(1).scaleb(-dscale)) if dscale else abs(value).to_integral_value()
    text = format(q, "f")
    int_part, _, frac_part = text.partition(".")
    int_part = int_part.lstrip("0")
    int_part = int_part.rjust((len(int_part) + 3) // 4 * 4, "0")
    frac_part = frac_part.ljust((len(frac_part) + 3) // 4 * 4, "0")
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i : i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    sign = _NUMERIC_NEG if value < 0 and groups else _NUMERIC_POS
    return _NUMERIC_HEAD.pack(len(groups), weight, sign, dscale) + struct.pack(f">{len(groups)}H", *groups)


def _pg_numeric_binary(fn: MaskFunction) -> Converter:
    op = fn.decimal

    def conv(value: bytes) -> bytes | None:
        d = decode_pg_numeric(value)
        if d is None:
            return None
        out = op(d)
        if out is None or not out.is_finite():
            return None
        return encode_pg_numeric(out, _NUMERIC_HEAD.unpack_from(value)[3])

    return conv


_PG_EPOCH = date(2000, 1, 1)
_PG_EPOCH_DT = datetime(2000, 1, 1)
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")


def _pg_date_binary(fn: MaskFunction) -> Converter:
    op = fn.date

    def conv(value: bytes) -> bytes | None:
        if len(value) != 4:
            return None
        days = _INT32.unpack(value)[0]
        try:
            d = _PG_EPOCH + timedelta(days=days)
        except OverflowError:
            return None  # ±infinity and dates outside Python's range
        out = op(d)
        return None if out is None else _INT32.pack((out - _PG_EPOCH).days)

    return conv


def _pg_timestamp_binary(fn: MaskFunction) -> Converter:
    op = fn.datetime

    def conv(value: bytes) -> bytes | None:
        if len(value) != 8:
            return None
        micros = _INT64.unpack(value)[0]
        try:
            dt = _PG_EPOCH_DT + timedelta(microseconds=micros)
        except OverflowError:
            return None
        out = op(dt)
        if out is None:
            return None
        delta = out.replace(tzinfo=None) - _PG_EPOCH_DT
        return _INT64.pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)

    return conv


def _mysql_temporal_binary(fn: MaskFunction, kind: Kind) -> Converter:
    date_op, dt_op = fn.date, fn.datetime

    def conv(value: bytes) -> bytes | None:
        n = len(value)
        if n not in (4, 7, 11):
            return None  # 0 bytes is the zero date; any other length is malformed
        year, month, day = struct.unpack_from("<HBB", value)
        hour, minute, second = struct.unpack_from("<BBB", value, 4) if n >= 7 else (0, 0, 0)
        micro = struct.unpack_from("<I", value, 7)[0] if n == 11 else 0
        try:
            if kind is Kind.DATE:
                d = date_op(date(year, month, day))
                out = None if d is None else datetime(d.year, d.month, d.day)
            else:
                out = dt_op(datetime(year, month, day, hour, minute, second, micro))
        except (ValueError, OverflowError):  # a peer's bytes: an impossible date is not an error
            return None
        if out is None:
            return None
        packed = struct.pack("<HBB", out.year, out.month, out.day)
        if n >= 7:
            packed += struct.pack("<BBB", out.hour, out.minute, out.second)
        if n == 11:
            packed += struct.pack("<I", out.microsecond)
        return packed

    return conv


def _ascii_applies(dialect: str, type_name: str, encoding: str) -> bool:
    # Text columns in UTF-8 only: there an all-ASCII value is one byte per character.
    return value_kind(dialect, type_name)[0] is Kind.TEXT and encoding == "utf-8"


def ascii_fast_path(
    fn: MaskFunction, *, dialect: str, type_name: str, encoding: str
) -> Callable[[bytes], bytes | None] | None:
    """The bytes operation ``build_converter`` applies to an all-ASCII value, when it has one.

    Only for text columns in UTF-8, where an all-ASCII value is one byte per
    character; callers test ``value.isascii()`` and fall back to the converter.
    """
    return fn.ascii_bytes if _ascii_applies(dialect, type_name, encoding) else None


def ascii_fast_op(fn: MaskFunction, *, dialect: str, type_name: str, encoding: str) -> AsciiOp | None:
    """``ascii_fast_path`` as its description (``AsciiOp``), for the compiled row rewriter.

    The same condition and the same function field: where one is None, so is the other.
    """
    return fn.ascii_op if _ascii_applies(dialect, type_name, encoding) else None


def build_converter(fn: MaskFunction, *, dialect: str, type_name: str, binary: bool, encoding: str) -> Converter:
    """The wire-format converter applying ``fn`` to one result column's values."""
    kind, width = value_kind(dialect, type_name)
    mysql = dialect == "mysql"
    if kind is Kind.TEXT:
        return _text_converter(fn, encoding)
    if kind is Kind.INTEGER:
        return _integer_binary(fn, width, mysql) if binary else _integer_text(fn, width)
    if kind is Kind.DECIMAL:
        # MySQL sends DECIMAL as text in binary rows too
        return _pg_numeric_binary(fn) if binary and not mysql else _decimal_text(fn)
    if kind is Kind.FLOAT:
        return _float_binary(fn, width, mysql) if binary else _float_text(fn)
    if kind in (Kind.DATE, Kind.DATETIME):
        if not binary:
            return _text_converter(fn, encoding) if fn.text_is_date else _null
        if mysql:
            return _mysql_temporal_binary(fn, kind)
        return _pg_date_binary(fn) if kind is Kind.DATE else _pg_timestamp_binary(fn)
    return _null
