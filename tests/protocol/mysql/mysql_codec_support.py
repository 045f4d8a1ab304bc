"""Builders of protocol byte streams for the MySQL codec tests (no sockets)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlbastion.proxy.mysql.constants import Capability, ServerStatus
from sqlbastion.proxy.mysql.framing import frame_into
from sqlbastion.proxy.mysql.packets import ColumnDefinition, EofPacket, OkPacket
from sqlbastion.proxy.mysql.rows import encode_binary_row, encode_text_row

BASE_CAPS = int(
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.MULTI_RESULTS
    | Capability.MULTI_STATEMENTS
    | Capability.PS_MULTI_RESULTS
    | Capability.TRANSACTIONS
)
EOF_CAPS = BASE_CAPS | int(Capability.SESSION_TRACK)
DEPRECATE_CAPS = EOF_CAPS | int(Capability.DEPRECATE_EOF)


def packets(payloads: Iterable[bytes], first_seq: int = 1) -> bytes:
    out = bytearray()
    seq = first_seq
    for p in payloads:
        seq = frame_into(out, seq, p)
    return bytes(out)


def column(name: str, type_code: int = 0xFD, table: str = "t", schema: str = "db") -> ColumnDefinition:
    return ColumnDefinition(
        schema=schema.encode(),
        table=table.encode(),
        org_table=table.encode(),
        name=name.encode(),
        org_name=name.encode(),
        type=type_code,
    )


def result_set_payloads(
    columns: list[ColumnDefinition],
    rows: list[list[bytes | None]],
    *,
    caps: int,
    binary: bool = False,
    more: bool = False,
    status: int = int(ServerStatus.AUTOCOMMIT),
) -> list[bytes]:
    """One result set: column count, definitions, [EOF], rows, EOF or OK."""
    deprecate = bool(caps & Capability.DEPRECATE_EOF)
    if more:
        status |= ServerStatus.MORE_RESULTS_EXISTS
    out = [bytes((len(columns),))]
    out += [c.encode() for c in columns]
    if not deprecate:
        out.append(EofPacket(status=int(ServerStatus.AUTOCOMMIT)).encode())
    types = [c.type for c in columns]
    for r in rows:
        out.append(encode_binary_row(r, types) if binary else encode_text_row(r))
    if deprecate:
        out.append(OkPacket(status=status, header=0xFE).encode(caps))
    else:
        out.append(EofPacket(status=status).encode())
    return out


def feed_in_pieces(relay: object, data: bytes, sizes: Iterable[int]) -> bytes:
    """Feed ``data`` in the given chunk sizes (repeated), returning everything the relay produced."""
    from sqlbastion.proxy.mysql.results import ResponseRelay

    assert isinstance(relay, ResponseRelay)
    out = bytearray()
    pos = 0
    size_list = list(sizes) or [1]
    i = 0
    while pos < len(data):
        n = max(1, size_list[i % len(size_list)])
        out += relay.feed(data[pos : pos + n])
        pos += n
        i += 1
    return bytes(out)
