"""Masked result rows rewritten a received chunk at a time: the pure-Python reference.

This module states the semantics; ``sqlbastion/_rowfast.c`` is its compiled
twin and must give byte-identical output and counts (the unit tests compare
the two on generated chunks). ``masking.rows`` chooses between them and is
what the proxies call.

Both functions take a chunk of bytes a backend sent, a start and end offset
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
* ``OP_FULL``, ``OP_KEEP``, ``OP_MOBILE``, ``OP_KEEP_DIGITS`` — the built-in
  ASCII operations of ``functions.AsciiOp`` (``first``/``last`` are its
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

from collections.abc import Callable, Sequence

from sqlbastion.masking.functions import FULL_BYTES

__all__ = [
    "MAX_KEEP",
    "OP_CALL",
    "OP_FULL",
    "OP_KEEP",
    "OP_KEEP_DIGITS",
    "OP_MOBILE",
    "ColumnEntry",
    "mysql_rewrite",
    "pg_rewrite",
]

# Operation codes; _rowfast.c defines the same values (checked by a test).
OP_CALL = 1
OP_FULL = 2
OP_KEEP = 3
OP_MOBILE = 4
OP_KEEP_DIGITS = 5
MAX_KEEP = 4096  # a longer kept prefix or suffix is refused in a column entry
MAX_COLUMNS = 65535  # DataRow's Int16 column count
MYSQL_MAX_PIECE = 0xFFFFFF  # page_protocol_basic_packets: a piece this long continues the packet

Masker = Callable[[bytes | None], bytes | bytearray | None]
ColumnEntry = tuple[int, int, int, Masker, list[int] | None] | None
_Buffer = bytes | bytearray | memoryview
_INT32_MAX = 0x7FFFFFFF
_NULL32 = b"\xff\xff\xff\xff"
_LENENC_WIDTH = {0xFC: 2, 0xFD: 3, 0xFE: 8}  # page_protocol_basic_dt_integers


class _Column:
    __slots__ = ("code", "done", "first", "last", "masker", "tally")

    def __init__(self, index: int, entry: tuple[int, int, int, Masker, list[int] | None]) -> None:
        if not isinstance(entry, tuple) or len(entry) != 5:
            raise TypeError(f"column {index}: expected None or a 5-tuple")
        code, first, last, masker, tally = entry
        if not OP_CALL <= code <= OP_KEEP_DIGITS:
            raise ValueError(f"column {index}: unknown operation {code}")
        if not (0 <= first <= MAX_KEEP and 0 <= last <= MAX_KEEP):
            raise ValueError(f"column {index}: kept lengths out of range")
        if not callable(masker):
            raise TypeError(f"column {index}: the masker is not callable")
        if tally is not None and (not isinstance(tally, list) or not tally):
            raise TypeError(f"column {index}: the tally must be None or a non-empty list")
        self.code, self.first, self.last, self.masker, self.tally = code, first, last, masker, tally
        self.done = 0

    def ascii_op(self, v: bytes) -> bytes | None:
        """The in-place operation (``functions.AsciiOp``), or None when the masker must do it."""
        code = self.code
        first, last = self.first, self.last
        if code == OP_FULL:
            return FULL_BYTES
        if code == OP_MOBILE:
            if len(v) != 11 or not v.isdigit():
                return None
            first, last = 3, 4
        elif code == OP_KEEP_DIGITS and not v.isdigit():
            return None
        n = len(v)
        hidden = n - first - last
        if hidden < 1 or hidden * 3 < n:
            return FULL_BYTES
        return v[:first] + b"*" * hidden + v[n - last :]

    def mask(self, v: bytes | None) -> bytes | bytearray | None:
        """The replacement for one value (bytes as carried, None for NULL)."""
        if self.code != OP_CALL:
            if v is None:
                return None  # NULL stays NULL
            if v.isascii():
                out = self.ascii_op(v)
                if out is not None:
                    self.done += 1
                    return out
        res = self.masker(v)
        if res is not None and not isinstance(res, bytes | bytearray):
            raise TypeError(f"a masker returned {type(res).__name__}, not bytes or None")
        return res


def _program(columns: Sequence[ColumnEntry]) -> list[_Column | None]:
    if not isinstance(columns, tuple):
        raise TypeError("columns must be a tuple")
    if not 1 <= len(columns) <= MAX_COLUMNS:
        raise ValueError("a row program has 1 to 65535 columns")
    return [None if e is None else _Column(i, e) for i, e in enumerate(columns)]


def _add_tallies(program: list[_Column | None]) -> None:
    for c in program:
        if c is not None and c.tally is not None and c.done:
            c.tally[0] += c.done
            c.done = 0


def _check_out(out: bytearray) -> None:
    if not isinstance(out, bytearray):
        raise TypeError("out must be a bytearray")


def _check_range(data: _Buffer, pos: int, end: int) -> None:
    if not 0 <= pos <= end <= len(data):
        raise ValueError("pos and end must satisfy 0 <= pos <= end <= len(data)")


# --- PostgreSQL DataRow (§55.7: Byte1('D'), Int32 length, Int16 count, per column Int32 length or -1, bytes)


def _pg_fields(data: bytes, body: int, end: int, ncols: int) -> list[tuple[int, int]] | None:
    """(offset of the Int32 length, value length or -1) per column; None when malformed."""
    if end - body < 2 or int.from_bytes(data[body : body + 2], "big") != ncols:
        return None
    q = body + 2
    fields = []
    for _ in range(ncols):
        if end - q < 4:
            return None
        n = int.from_bytes(data[q : q + 4], "big", signed=True)
        if n == -1:
            fields.append((q, -1))
            q += 4
            continue
        if n < 0 or n > end - q - 4:
            return None
        fields.append((q, n))
        q += 4 + n
    return fields if q == end else None


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
    masked_per_row = sum(c is not None for c in program)
    chunk = bytes(data[:end])  # the reference favours clarity over copies
    start_len = len(out)
    rows = 0
    try:
        while rows < limit and end - pos >= 5 and chunk[pos] == 0x44:  # 'D'
            length = int.from_bytes(chunk[pos + 1 : pos + 5], "big")
            if length < 6 or length > max_length or length > end - pos - 1:
                break
            msg_end = pos + 1 + length
            fields = _pg_fields(chunk, pos + 5, msg_end, ncols)
            if fields is None:
                break
            row = bytearray(b"D\x00\x00\x00\x00")
            row += chunk[pos + 5 : pos + 7]
            copy_from = pos + 7
            for c, (q, n) in zip(program, fields, strict=True):
                if c is None:
                    continue
                row += chunk[copy_from:q]
                new = c.mask(None if n < 0 else chunk[q + 4 : q + 4 + n])
                if new is None:
                    row += _NULL32
                else:
                    if len(new) > _INT32_MAX:
                        raise OverflowError("a masked value is too long for a DataRow")
                    row += len(new).to_bytes(4, "big")
                    row += new
                copy_from = q + 4 + max(n, 0)
            row += chunk[copy_from:msg_end]
            if len(row) - 1 > _INT32_MAX:
                break  # too long to frame: the caller's path reports it
            row[1:5] = (len(row) - 1).to_bytes(4, "big")
            out += row
            rows += 1
            pos = msg_end
        _add_tallies(program)
    except BaseException:
        del out[start_len:]
        raise
    return pos, rows, rows * masked_per_row


# --- MySQL text rows (int<3> length, int<1> sequence id; per column string<lenenc> or 0xFB for NULL)


def _mysql_fields(data: bytes, start: int, end: int, ncols: int) -> list[tuple[int, int, int]] | None:
    """(offset of the value's header, offset of its bytes, length or -1) per column; None when malformed."""
    q = start
    fields = []
    for _ in range(ncols):
        if q >= end:
            return None
        b = data[q]
        if b == 0xFB:
            fields.append((q, q + 1, -1))
            q += 1
            continue
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
    masked_per_row = sum(c is not None for c in program)
    chunk = bytes(data[:end])
    start_len = len(out)
    rows = 0
    try:
        while rows < limit and end - pos >= 4:
            length = int.from_bytes(chunk[pos : pos + 3], "little")
            if length in (MYSQL_MAX_PIECE, 0) or length > end - pos - 4 or chunk[pos + 3] != seq:
                break
            start, msg_end = pos + 4, pos + 4 + length
            b0 = chunk[start]
            if b0 == 0xFF or (b0 == 0xFE and length < eof_limit):
                break
            fields = _mysql_fields(chunk, start, msg_end, ncols)
            if fields is None:
                break
            row = bytearray(b"\x00\x00\x00")
            row.append(seq)
            copy_from = start
            for c, (q, v, n) in zip(program, fields, strict=True):
                if c is None:
                    continue
                row += chunk[copy_from:q]
                new = c.mask(None if n < 0 else chunk[v : v + n])
                if new is None:
                    row.append(0xFB)
                else:
                    row += _lenenc(len(new))
                    row += new
                copy_from = v + max(n, 0)
            row += chunk[copy_from:msg_end]
            if len(row) - 4 >= MYSQL_MAX_PIECE:
                break  # would need splitting into pieces: the caller's path frames it
            row[0:3] = (len(row) - 4).to_bytes(3, "little")
            out += row
            rows += 1
            seq = (seq + 1) & 0xFF
            pos = msg_end
        _add_tallies(program)
    except BaseException:
        del out[start_len:]
        raise
    return pos, rows, rows * masked_per_row, seq
