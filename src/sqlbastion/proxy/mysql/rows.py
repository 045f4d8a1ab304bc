"""Result rows: decoding, masking and re-encoding text and binary rows.

page_protocol_com_query_response_text_resultset_row: each value is a
length-encoded string, or 0xFB for NULL.
page_protocol_binary_resultset_row: 0x00, a NULL bitmap of (columns + 7 + 2) / 8
bytes (the first two bits are reserved), then each non-NULL value in its binary
form (page_protocol_binary_resultset, "Binary Protocol Value").

Maskers (``proxy.session.ColumnMasker``) receive a value exactly as the wire
carries it without its length prefix and return the replacement in the same
form, or None for NULL. A fixed-width binary value must keep its width.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlbastion.proxy.mysql.constants import FIXED_WIDTH, TEMPORAL_TYPES
from sqlbastion.proxy.mysql.errors import LocalProtocolError, MalformedPacket
from sqlbastion.proxy.mysql.wire import PayloadReader, lenenc_int
from sqlbastion.proxy.session import ColumnMasker

__all__ = [
    "decode_binary_row",
    "decode_text_row",
    "encode_binary_row",
    "encode_text_row",
    "mask_binary_row",
    "mask_text_row",
]


def decode_text_row(payload: bytes, ncols: int) -> list[bytes | None]:
    r = PayloadReader(payload)
    values = [r.lenenc_value_or_null(f"column {i}") for i in range(ncols)]
    if not r.at_end():
        raise MalformedPacket(f"text row has {r.remaining} bytes after its {ncols} values")
    return values


def encode_text_row(values: Sequence[bytes | None]) -> bytes:
    out = bytearray()
    for v in values:
        if v is None:
            out.append(0xFB)
        else:
            out += lenenc_int(len(v))
            out += v
    return bytes(out)


_LENENC_HEADER = {0xFC: 3, 0xFD: 4, 0xFE: 9}


def mask_text_row(payload: bytes, maskers: Sequence[ColumnMasker | None]) -> tuple[bytes, int]:
    """The masked row and how many values were masked.

    Runs of unmasked values are copied as they are, without decoding: this is the
    per-row hot path of a masked result.
    """
    out = bytearray()
    pos = 0
    n = len(payload)
    copy_from = 0
    masked = 0
    for i, m in enumerate(maskers):
        if pos >= n:
            raise MalformedPacket(f"text row ends before column {i}")
        b = payload[pos]
        if b == 0xFB:
            header, length = 1, 0
        elif b < 0xFB:
            header, length = 1, b
        else:
            header = _LENENC_HEADER.get(b, 0)
            if not header or pos + header > n:
                raise MalformedPacket(f"column {i}: bad length prefix 0x{b:02X}")
            length = int.from_bytes(payload[pos + 1 : pos + header], "little")
        end = pos + header + length
        if end > n:
            raise MalformedPacket(f"column {i} runs past the end of the row")
        if m is not None:
            out += payload[copy_from:pos]
            value = None if b == 0xFB else payload[pos + header : end]
            replacement = m(value)
            if replacement is None:
                out.append(0xFB)
            else:
                out += lenenc_int(len(replacement))
                out += replacement
            masked += 1
            copy_from = end
        pos = end
    if pos != n:
        raise MalformedPacket(f"text row has {n - pos} bytes after its {len(maskers)} values")
    out += payload[copy_from:pos]
    return bytes(out), masked


def _binary_value(r: PayloadReader, type_code: int, i: int) -> bytes:
    width = FIXED_WIDTH.get(type_code)
    if width is not None:
        return r.fixed(width, f"column {i}")
    if type_code in TEMPORAL_TYPES:
        n = r.int1(f"column {i} length")
        if n > 12:
            raise MalformedPacket(f"column {i}: temporal value of {n} bytes")
        return r.fixed(n, f"column {i}")
    return r.lenenc_bytes(f"column {i}")


def decode_binary_row(payload: bytes, types: Sequence[int]) -> list[bytes | None]:
    r = PayloadReader(payload)
    if r.int1("packet header") != 0x00:
        raise MalformedPacket("binary row does not start with 0x00")
    n = len(types)
    bitmap = r.fixed((n + 7 + 2) // 8, "NULL bitmap")
    values: list[bytes | None] = []
    for i, t in enumerate(types):
        bit = i + 2
        if bitmap[bit >> 3] & (1 << (bit & 7)):
            values.append(None)
        else:
            values.append(_binary_value(r, t, i))
    if not r.at_end():
        raise MalformedPacket(f"binary row has {r.remaining} bytes after its {n} values")
    return values


def encode_binary_row(values: Sequence[bytes | None], types: Sequence[int]) -> bytes:
    n = len(types)
    if len(values) != n:
        raise LocalProtocolError(f"{len(values)} values for {n} columns")
    bitmap = bytearray((n + 7 + 2) // 8)
    body = bytearray()
    for i, (v, t) in enumerate(zip(values, types, strict=True)):
        if v is None:
            bit = i + 2
            bitmap[bit >> 3] |= 1 << (bit & 7)
            continue
        width = FIXED_WIDTH.get(t)
        if width is not None:
            if len(v) != width:
                raise LocalProtocolError(f"column {i}: a {width}-byte binary value cannot become {len(v)} bytes")
            body += v
        elif t in TEMPORAL_TYPES:
            if len(v) > 12:
                raise LocalProtocolError(f"column {i}: temporal value of {len(v)} bytes")
            body.append(len(v))
            body += v
        else:
            body += lenenc_int(len(v))
            body += v
    return b"\x00" + bytes(bitmap) + bytes(body)


def _encode_binary_value(v: bytes, type_code: int, i: int) -> bytes:
    width = FIXED_WIDTH.get(type_code)
    if width is not None:
        if len(v) != width:
            raise LocalProtocolError(f"column {i}: a {width}-byte binary value cannot become {len(v)} bytes")
        return v
    if type_code in TEMPORAL_TYPES:
        if len(v) > 12:
            raise LocalProtocolError(f"column {i}: temporal value of {len(v)} bytes")
        return bytes((len(v),)) + v
    return lenenc_int(len(v)) + v


def mask_binary_row(payload: bytes, types: Sequence[int], maskers: Sequence[ColumnMasker | None]) -> tuple[bytes, int]:
    """The masked binary row and how many values were masked; unmasked runs are copied as they are."""
    n = len(types)
    nb = (n + 7 + 2) // 8
    if len(payload) < 1 + nb or payload[0] != 0x00:
        raise MalformedPacket("binary row does not start with 0x00 and its NULL bitmap")
    bitmap = bytearray(payload[1 : 1 + nb])
    body = bytearray()
    pos = copy_from = 1 + nb
    end_of_row = len(payload)
    masked = 0
    for i, t in enumerate(types):
        m = maskers[i]
        bit = i + 2
        mask_bit = 1 << (bit & 7)
        if bitmap[bit >> 3] & mask_bit:  # NULL: no bytes in the row
            if m is None:
                continue
            masked += 1
            replacement = m(None)
            if replacement is not None:
                body += payload[copy_from:pos]
                copy_from = pos
                bitmap[bit >> 3] &= ~mask_bit
                body += _encode_binary_value(replacement, t, i)
            continue
        width = FIXED_WIDTH.get(t)
        if width is not None:
            start, end = pos, pos + width
        elif t in TEMPORAL_TYPES:
            if pos >= end_of_row:
                raise MalformedPacket(f"column {i} runs past the end of the row")
            start, end = pos + 1, pos + 1 + payload[pos]
            if payload[pos] > 12:
                raise MalformedPacket(f"column {i}: temporal value of {payload[pos]} bytes")
        else:
            if pos >= end_of_row:
                raise MalformedPacket(f"column {i} runs past the end of the row")
            b = payload[pos]
            if b < 0xFB:
                start, end = pos + 1, pos + 1 + b
            else:
                header = _LENENC_HEADER.get(b, 0)
                if not header or pos + header > end_of_row:
                    raise MalformedPacket(f"column {i}: bad length prefix 0x{b:02X}")
                start = pos + header
                end = start + int.from_bytes(payload[pos + 1 : pos + header], "little")
        if end > end_of_row:
            raise MalformedPacket(f"column {i} runs past the end of the row")
        if m is not None:
            masked += 1
            body += payload[copy_from:pos]
            replacement = m(payload[start:end])
            if replacement is None:
                bitmap[bit >> 3] |= mask_bit
            else:
                body += _encode_binary_value(replacement, t, i)
            copy_from = end
        pos = end
    if pos != end_of_row:
        raise MalformedPacket(f"binary row has {end_of_row - pos} bytes after its {n} values")
    body += payload[copy_from:pos]
    return b"\x00" + bytes(bitmap) + bytes(body), masked
