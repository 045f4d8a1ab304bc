"""Masked result rows rewritten a received chunk at a time: the pure-Python reference.

This module states the semantics; ``sqlbastion/_rowfast*.c`` is its compiled
twin and must give byte-identical output and counts (the unit tests compare
the two on generated chunks). ``masking.rows`` chooses between them and is
what the proxies call.

The functions take a chunk of bytes a backend sent, a start and end offset
in it, and a per-column program (``columns``), and rewrite the run of complete
row messages starting at ``pos``, at most ``limit`` rows, appending the
rewritten messages to ``out``. They stop, leaving it unconsumed, at the first
message that is not a plain row, is incomplete, too large, or malformed in any
way: the caller's per-message path then handles it (and raises its typed
protocol error where there is one). Each row is validated entirely before any
of it is written or any masker is called.

A column entry is ``None`` (the value passes through untouched, not even
decoded) or ``(op, first, last, masker, tally)``:

* ``OP_CALL`` — ``masker(value)`` for every value, ``None`` (SQL NULL) included;
* ``OP_FULL``, ``OP_KEEP``, ``OP_MOBILE``, ``OP_KEEP_DIGITS``, ``OP_EMAIL``,
  ``OP_NAME`` — the built-in ASCII operations of ``functions.AsciiOp``
  (``kind`` full, keep, mobile, keep_digits, email, name; ``first``/``last`` are its
  parameters). NULL stays NULL without a call; an all-ASCII value the
  operation handles in place is masked here and counted into ``tally[0]``
  when the call returns; any other value (non-ASCII, or a ``mobile`` /
  ``keep_digits`` value that is not all digits) goes to ``masker``, which is
  the column's complete masker (``plan._counted``: it counts itself).

``masker`` returns the replacement value, or ``None`` for SQL NULL.

Return values: the offset after the last consumed message, the number of rows
rewritten, and the number of masked values (rows × masked columns, NULLs
included, as the per-row paths count them); ``mysql_rewrite`` also returns
the next sequence id.

Errors: an exception from a masker propagates; ``out`` is then cut back to its
length at the call and no tally is added, so the caller's state is as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from sqlbastion.masking.functions import FULL_BYTES

__all__ = [
    "LAYOUT_LENENC",
    "LAYOUT_TEMPORAL",
    "MAX_KEEP",
    "OP_CALL",
    "OP_EMAIL",
    "OP_FULL",
    "OP_KEEP",
    "OP_KEEP_DIGITS",
    "OP_MOBILE",
    "OP_NAME",
    "ColumnEntry",
    "binary_layout",
    "mysql_binary_rewrite",
    "mysql_rewrite",
    "pg_rewrite",
]

# Operation codes; _rowfast.h defines the same values (checked by a test).
OP_CALL = 1
OP_FULL = 2
OP_KEEP = 3
OP_MOBILE = 4
OP_KEEP_DIGITS = 5
OP_EMAIL = 6
OP_NAME = 7
MAX_KEEP = 4096  # a longer kept prefix or suffix is refused in a column entry
MAX_COLUMNS = 65535  # DataRow's Int16 column count
MYSQL_MAX_PIECE = 0xFFFFFF  # page_protocol_basic_packets: a piece this long continues the packet

Masker = Callable[[bytes | None], bytes | bytearray | None]
ColumnEntry = tuple[int, int, int, Masker, list[int] | None] | None
_Buffer = bytes | bytearray | memoryview
_INT32_MAX = 0x7FFFFFFF
_NULL32 = b"\xff\xff\xff\xff"
_LENENC_WIDTH = {0xFC: 2, 0xFD: 3, 0xFE: 8}  # page_protocol_basic_dt_integers


_Op = Callable[[bytes], bytes | None]


def _keep(first: int, last: int) -> _Op:
    """``functions.keep_ascii_op``: the same rule, restated here so that this module states it all."""

    def op(v: bytes) -> bytes:
        n = len(v)
        hidden = n - first - last
        if hidden < 1 or hidden * 3 < n:
            return FULL_BYTES
        return v[:first] + b"*" * hidden + v[n - last :]

    return op


def _in_place(code: int, first: int, last: int) -> _Op:
    """The built-in operation on an ASCII value: the masked value, or None when the masker must do it."""
    if code == OP_FULL:
        return lambda v: FULL_BYTES
    if code == OP_KEEP:
        return _keep(first, last)
    if code == OP_MOBILE:
        return lambda v: v[:3] + b"****" + v[7:] if len(v) == 11 and v.isdigit() else None
    if code == OP_EMAIL:
        return _email
    if code == OP_NAME:
        return _name
    keep = _keep(first, last)
    return lambda v: keep(v) if v.isdigit() else None  # OP_KEEP_DIGITS


def _email(v: bytes) -> bytes:
    """``functions.email_ascii``: the first character of the local part, ``***@``, the domain."""
    local, at, domain = v.rpartition(b"@")
    if not at or not domain or len(local) < 2:
        return FULL_BYTES
    return local[:1] + b"***@" + domain


_SPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"  # what str.strip() removes among ASCII characters


def _name(v: bytes) -> bytes:
    """``functions.name_ascii``: stripped, the first letter, then ``*`` for each letter, spaces kept."""
    name = v.strip(_SPACE)
    if len(name) < 2:
        return FULL_BYTES
    return name[:1] + name[1:].translate(_STARS)


_STARS = bytes(0x20 if b == 0x20 else 0x2A for b in range(256))


def _checked(masker: Masker) -> Masker:
    def call(v: bytes | None) -> bytes | bytearray | None:
        res = masker(v)
        if res is not None and not isinstance(res, bytes | bytearray):
            raise TypeError(f"a masker returned {type(res).__name__}, not bytes or None")
        return res

    return call


class _Column:
    """One masked column: ``mask(value)`` gives its replacement; ``done`` counts in-place masks."""

    __slots__ = ("call", "done", "mask", "tally")

    def __init__(self, index: int, entry: tuple[int, int, int, Masker, list[int] | None]) -> None:
        if not isinstance(entry, tuple) or len(entry) != 5:
            raise TypeError(f"column {index}: expected None or a 5-tuple")
        code, first, last, masker, tally = entry
        if not OP_CALL <= code <= OP_NAME:
            raise ValueError(f"column {index}: unknown operation {code}")
        if not (0 <= first <= MAX_KEEP and 0 <= last <= MAX_KEEP):
            raise ValueError(f"column {index}: kept lengths out of range")
        if not callable(masker):
            raise TypeError(f"column {index}: the masker is not callable")
        if tally is not None and (not isinstance(tally, list) or not tally):
            raise TypeError(f"column {index}: the tally must be None or a non-empty list")
        self.tally = tally
        self.done = [0]
        call = self.call = _checked(masker)
        if code == OP_CALL:
            self.mask: Masker = call  # every value, NULL included
            return
        op, done = _in_place(code, first, last), self.done

        def mask(v: bytes | None) -> bytes | bytearray | None:
            if v is None:
                return None  # NULL stays NULL
            if v.isascii():
                out = op(v)
                if out is not None:
                    done[0] += 1
                    return out
            return call(v)

        self.mask = mask


def _program(columns: Sequence[ColumnEntry]) -> list[_Column | None]:
    if not isinstance(columns, tuple):
        raise TypeError("columns must be a tuple")
    if not 1 <= len(columns) <= MAX_COLUMNS:
        raise ValueError("a row program has 1 to 65535 columns")
    return [None if e is None else _Column(i, e) for i, e in enumerate(columns)]


def _add_tallies(program: list[_Column | None]) -> None:
    for c in program:
        if c is not None and c.tally is not None and c.done[0]:
            c.tally[0] += c.done[0]
            c.done[0] = 0


def _check_out(out: bytearray) -> None:
    if not isinstance(out, bytearray):
        raise TypeError("out must be a bytearray")


def _check_range(data: _Buffer, pos: int, end: int) -> None:
    if not 0 <= pos <= end <= len(data):
        raise ValueError("pos and end must satisfy 0 <= pos <= end <= len(data)")


# --- PostgreSQL DataRow (§55.7: Byte1('D'), Int32 length, Int16 count, per column Int32 length or -1, bytes)


_HEAD = struct.Struct("!IH")  # DataRow's Int32 length and Int16 column count, after the type byte
_I32 = struct.Struct("!i")
_PG_SIZE = struct.Struct("!I")


def _pg_fields(data: bytes, q: int, end: int, ncols: int) -> list[int] | None:
    """Offset of each column's Int32 length (from ``q``, after the count); None when malformed."""
    unpack = _I32.unpack_from
    offsets = []
    for _ in range(ncols):
        if end - q < 4:
            return None
        offsets.append(q)
        (n,) = unpack(data, q)
        if n < -1 or n > end - q - 4:
            return None
        q += 4 + n if n > 0 else 4
    return offsets if q == end else None


def pg_rewrite(  # noqa: PLR0917  # positional, as the C function it mirrors
    data: _Buffer,
    pos: int,
    end: int,
    columns: tuple[ColumnEntry, ...],
    limit: int,
    max_length: int,
    out: bytearray,
) -> tuple[int, int, int]:
    """Rewrite the DataRow messages at ``data[pos:end]``; see the module docstring."""
    program = _program(columns)
    _check_range(data, pos, end)
    _check_out(out)
    ncols = len(program)
    masked = [(i, c.mask) for i, c in enumerate(program) if c is not None]
    # One copy of the part to rewrite (the maskers get bytes); offsets below are into it.
    base, chunk = pos, bytes(data[pos:end])
    pos, end = 0, end - pos
    unpack_head, unpack_i32, pack_size = _HEAD.unpack_from, _I32.unpack_from, _PG_SIZE.pack
    start_len = len(out)
    rows = 0
    try:
        while rows < limit and end - pos >= 7 and chunk[pos] == 0x44:  # 'D'
            length, count = unpack_head(chunk, pos + 1)
            if length < 6 or length > max_length or length > end - pos - 1 or count != ncols:
                break
            msg_end = pos + 1 + length
            offsets = _pg_fields(chunk, pos + 7, msg_end, ncols)
            if offsets is None:
                break
            parts = [chunk[pos + 5 : pos + 7]]  # the column count, as received
            copy_from = pos + 7
            for i, mask in masked:
                q = offsets[i]
                (n,) = unpack_i32(chunk, q)
                parts.append(chunk[copy_from:q])
                new = mask(None if n < 0 else chunk[q + 4 : q + 4 + n])
                if new is None:
                    parts.append(_NULL32)
                else:
                    if len(new) > _INT32_MAX:
                        raise OverflowError("a masked value is too long for a DataRow")
                    parts.append(pack_size(len(new)))
                    parts.append(bytes(new))
                copy_from = q + 4 + n if n > 0 else q + 4
            parts.append(chunk[copy_from:msg_end])
            body = b"".join(parts)
            if len(body) + 4 > _INT32_MAX:
                break  # too long to frame: the caller's path reports it
            out += b"D" + pack_size(len(body) + 4)
            out += body
            rows += 1
            pos = msg_end
        _add_tallies(program)
    except BaseException:
        del out[start_len:]
        raise
    return base + pos, rows, rows * len(masked)


# --- MySQL text rows (int<3> length, int<1> sequence id; per column string<lenenc> or 0xFB for NULL)


def _mysql_fields(data: bytes, q: int, end: int, ncols: int) -> list[int] | None:
    """Offset of each column's value (its length prefix or 0xFB); None when malformed."""
    offsets = []
    for _ in range(ncols):
        if q >= end:
            return None
        offsets.append(q)
        b = data[q]
        if b < 0xFB:
            q += 1 + b
        elif b == 0xFB:
            q += 1
        else:
            width = _LENENC_WIDTH.get(b)
            if width is None or 1 + width > end - q:
                return None
            q += 1 + width + int.from_bytes(data[q + 1 : q + 1 + width], "little")
        if q > end:
            return None
    return offsets if q == end else None


def _mysql_value(data: bytes, q: int) -> tuple[int, int]:
    """(offset of the bytes, length or -1 for NULL) of the value at ``q`` (validated by ``_mysql_fields``)."""
    b = data[q]
    if b < 0xFB:
        return q + 1, b
    if b == 0xFB:
        return q + 1, -1
    width = _LENENC_WIDTH[b]
    return q + 1 + width, int.from_bytes(data[q + 1 : q + 1 + width], "little")


def _lenenc(n: int) -> bytes:
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def mysql_rewrite(  # noqa: PLR0917  # positional, as the C function it mirrors
    data: _Buffer,
    pos: int,
    end: int,
    columns: tuple[ColumnEntry, ...],
    limit: int,
    seq: int,
    eof_limit: int,
    out: bytearray,
) -> tuple[int, int, int, int]:
    """Rewrite the text row packets at ``data[pos:end]``; see the module docstring.

    Each packet must carry the sequence id ``seq``, then the next one, and so
    on (the rewritten packets keep them). A packet whose payload starts with
    0xFF (ERR), or with 0xFE and is shorter than ``eof_limit`` (EOF, or OK with
    CLIENT_DEPRECATE_EOF: ``ResponseRelay._on_row``), ends the run; so does a
    0xFFFFFF-byte piece (the start of a packet of 16 MiB or more), an empty
    payload, and a row that would grow to 0xFFFFFF bytes.
    """
    program = _program(columns)
    if not 0 <= seq <= 0xFF:
        raise ValueError("seq must be 0..255")
    _check_range(data, pos, end)
    _check_out(out)
    ncols = len(program)
    masked = [(i, c.mask) for i, c in enumerate(program) if c is not None]
    base, chunk = pos, bytes(data[pos:end])  # one copy (the maskers get bytes); offsets are into it
    pos, end = 0, end - pos
    start_len = len(out)
    rows = 0
    try:
        while rows < limit and end - pos >= 4:
            length = chunk[pos] | chunk[pos + 1] << 8 | chunk[pos + 2] << 16
            if length in (MYSQL_MAX_PIECE, 0) or length > end - pos - 4 or chunk[pos + 3] != seq:
                break
            start, msg_end = pos + 4, pos + 4 + length
            b0 = chunk[start]
            if b0 == 0xFF or (b0 == 0xFE and length < eof_limit):
                break
            offsets = _mysql_fields(chunk, start, msg_end, ncols)
            if offsets is None:
                break
            parts = []
            copy_from = start
            for i, mask in masked:
                q = offsets[i]
                v, n = _mysql_value(chunk, q)
                parts.append(chunk[copy_from:q])
                new = mask(None if n < 0 else chunk[v : v + n])
                if new is None:
                    parts.append(b"\xfb")
                else:
                    parts.append(_lenenc(len(new)))
                    parts.append(bytes(new))
                copy_from = v + n if n > 0 else v
            parts.append(chunk[copy_from:msg_end])
            body = b"".join(parts)
            if len(body) >= MYSQL_MAX_PIECE:
                break  # would need splitting into pieces: the caller's path frames it
            out += len(body).to_bytes(3, "little") + bytes((seq,))
            out += body
            rows += 1
            seq = (seq + 1) & 0xFF
            pos = msg_end
        _add_tallies(program)
    except BaseException:
        del out[start_len:]
        raise
    return base + pos, rows, rows * len(masked), seq


# --- MySQL binary rows (page_protocol_binary_resultset_row: 0x00, NULL bitmap, binary values)

LAYOUT_TEMPORAL = -1  # one length byte (at most 12), then that many bytes
LAYOUT_LENENC = -2  # a string<lenenc>
_MAX_TEMPORAL = 12


def binary_layout(types: Sequence[int], fixed_width: dict[int, int], temporal: frozenset[int]) -> tuple[int, ...]:
    """Each column's value layout in a binary row: its fixed width, LAYOUT_TEMPORAL or LAYOUT_LENENC."""
    return tuple(fixed_width.get(t, LAYOUT_TEMPORAL if t in temporal else LAYOUT_LENENC) for t in types)


def _binary_fields(data: bytes, start: int, end: int, layout: tuple[int, ...]) -> list[tuple[int, int, int]] | None:
    """(offset of the value's header, offset of its bytes, length or -1 for NULL) per column."""
    ncols = len(layout)
    nb = (ncols + 9) // 8
    if end - start < 1 + nb or data[start] != 0:
        return None
    bitmap = data[start + 1 : start + 1 + nb]
    q = start + 1 + nb
    fields = []
    for i, kind in enumerate(layout):
        bit = i + 2
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            fields.append((q, q, -1))
            continue
        if kind >= 0:
            header, n = 0, kind
        elif kind == LAYOUT_TEMPORAL:
            if q >= end or data[q] > _MAX_TEMPORAL:
                return None
            header, n = 1, data[q]
        else:
            if q >= end:
                return None
            b = data[q]
            if b < 0xFB:
                header, n = 1, b
            else:
                width = _LENENC_WIDTH.get(b)
                if width is None or 1 + width > end - q:
                    return None
                header, n = 1 + width, int.from_bytes(data[q + 1 : q + 1 + width], "little")
        if n > end - q - header:
            return None
        fields.append((q, q + header, n))
        q += header + n
    return fields if q == end else None


def _binary_encoded(kind: int, value: bytes | bytearray) -> bytes | None:
    """A replacement in its column's layout; None when it does not fit (the relay then refuses)."""
    if kind >= 0:
        return bytes(value) if len(value) == kind else None
    if kind == LAYOUT_TEMPORAL:
        return bytes((len(value),)) + value if len(value) <= _MAX_TEMPORAL else None
    return _lenenc(len(value)) + value


def mysql_binary_rewrite(  # noqa: PLR0917  # positional, as the C function it mirrors
    data: _Buffer,
    pos: int,
    end: int,
    columns: tuple[ColumnEntry, ...],
    layout: tuple[int, ...],
    limit: int,
    seq: int,
    eof_limit: int,
    out: bytearray,
) -> tuple[int, int, int, int]:
    """``mysql_rewrite`` for binary-protocol rows (COM_STMT_EXECUTE, COM_STMT_FETCH).

    ``layout`` (``binary_layout``) gives each column's value layout. A masked
    value that becomes NULL sets its NULL bitmap bit; a NULL that a masker
    replaces clears it. The built-in ASCII operations apply to string<lenenc>
    values only. A row whose replacement does not fit its layout (a fixed-width
    value of another width) ends the run before that row: ``mask_binary_row``
    then refuses the result.
    """
    program = _program(columns)
    if not 0 <= seq <= 0xFF:
        raise ValueError("seq must be 0..255")
    if not isinstance(layout, tuple) or not isinstance(columns, tuple) or len(layout) != len(columns):
        raise ValueError("layout must be a tuple with one entry per column")
    _check_range(data, pos, end)
    _check_out(out)
    for i, kind in enumerate(layout):
        if not LAYOUT_LENENC <= kind <= 8:  # LONGLONG and DOUBLE are the widest
            raise ValueError(f"column {i}: unknown layout")
    nb = (len(program) + 9) // 8
    masked = [(i, c, layout[i]) for i, c in enumerate(program) if c is not None]
    base, chunk = pos, bytes(data[pos:end])
    pos, end = 0, end - pos
    start_len = len(out)
    rows = 0
    try:
        while rows < limit and end - pos >= 4:
            length = chunk[pos] | chunk[pos + 1] << 8 | chunk[pos + 2] << 16
            if length in (MYSQL_MAX_PIECE, 0) or length > end - pos - 4 or chunk[pos + 3] != seq:
                break
            start, msg_end = pos + 4, pos + 4 + length
            b0 = chunk[start]
            if b0 == 0xFF or (b0 == 0xFE and length < eof_limit):
                break
            fields = _binary_fields(chunk, start, msg_end, layout)
            if fields is None:
                break
            bitmap = bytearray(chunk[start + 1 : start + 1 + nb])
            parts: list[bytes] = []
            copy_from = start + 1 + nb
            fits = True
            for i, c, kind in masked:
                q, v, n = fields[i]
                parts.append(chunk[copy_from:q])
                if n >= 0 and kind == LAYOUT_LENENC:
                    new = c.mask(chunk[v : v + n])
                elif n >= 0:
                    new = c.call(chunk[v : v + n])  # in-place operations are for strings only
                else:
                    new = c.mask(None)
                bit, flag = (i + 2) >> 3, 1 << ((i + 2) & 7)
                if new is None:
                    bitmap[bit] |= flag
                else:
                    encoded = _binary_encoded(kind, new)
                    if encoded is None:
                        fits = False
                        break
                    bitmap[bit] &= ~flag & 0xFF
                    parts.append(encoded)
                copy_from = v + n if n > 0 else v
            if not fits:
                break
            parts.append(chunk[copy_from:msg_end])
            body = b"\x00" + bytes(bitmap) + b"".join(parts)
            if len(body) >= MYSQL_MAX_PIECE:
                break
            out += len(body).to_bytes(3, "little") + bytes((seq,))
            out += body
            rows += 1
            seq = (seq + 1) & 0xFF
            pos = msg_end
        _add_tallies(program)
    except BaseException:
        del out[start_len:]
        raise
    return base + pos, rows, rows * len(masked), seq
