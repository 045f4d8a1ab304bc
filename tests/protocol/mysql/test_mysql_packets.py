"""Every message type: encode → frame → feed (whole, byte by byte, with trailing bytes) → decode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from sqlbastion.proxy.mysql.constants import Capability, FieldType, ServerStatus
from sqlbastion.proxy.mysql.errors import MalformedPacket
from sqlbastion.proxy.mysql.framing import PacketFramer, frame
from sqlbastion.proxy.mysql.packets import (
    AuthMoreData,
    AuthSwitchRequest,
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
    SslRequest,
    StmtPrepareOk,
    is_eof_packet,
    is_ok_packet,
)
from sqlbastion.proxy.mysql.rows import (
    decode_binary_row,
    decode_text_row,
    encode_binary_row,
    encode_text_row,
    mask_binary_row,
    mask_text_row,
)
from sqlbastion.proxy.mysql.wire import PayloadReader, lenenc_bytes, lenenc_int

CAPS = int(
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CONNECT_WITH_DB
    | Capability.CONNECT_ATTRS
    | Capability.SESSION_TRACK
)
TRAILING = frame(0, b"\x0e")[0]  # a COM_PING right behind


def _feed_modes(payload: bytes) -> list[bytes]:
    """The payload as read back after feeding its frame whole, byte by byte, and with trailing bytes."""
    framed = frame(1, payload)[0]
    results = []
    f = PacketFramer()
    f.receive_data(framed)
    p = f.next_packet()
    assert p is not None
    results.append(p.payload)
    f = PacketFramer()
    got = None
    for b in framed:
        assert got is None
        f.receive_data(bytes((b,)))
        pkt = f.next_packet()
        got = pkt.payload if pkt else None
    assert got is not None
    results.append(got)
    f = PacketFramer()
    f.receive_data(framed + TRAILING)
    p = f.next_packet()
    assert p is not None
    results.append(p.payload)
    nxt = f.next_packet()
    assert nxt is not None
    assert nxt.payload == b"\x0e"
    return results


def roundtrip(message: Any, encode: Callable[[Any], bytes], decode: Callable[[bytes], Any]) -> None:
    payload = encode(message)
    for read_back in _feed_modes(payload):
        assert decode(read_back) == message
        for cut in range(len(read_back)):
            with contextlib.suppress(MalformedPacket):
                decode(read_back[:cut])  # a short packet: typed error or a different, valid value


def test_lenenc_ints() -> None:
    for n in (0, 250, 251, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, (1 << 64) - 1):
        assert PayloadReader(lenenc_int(n)).lenenc_int() == n
    with pytest.raises(MalformedPacket):
        PayloadReader(b"\xff").lenenc_int()
    with pytest.raises(MalformedPacket):
        PayloadReader(b"\xfc\x01").lenenc_int()
    assert PayloadReader(lenenc_bytes(b"abc")).lenenc_bytes() == b"abc"


def test_handshake_v10() -> None:
    g = HandshakeV10(
        server_version="5.5.5-10.11.6-MariaDB",
        connection_id=77,
        auth_data=b"abcdefgh12345678ABCD",
        capabilities=CAPS | int(Capability.SSL),
        auth_plugin="caching_sha2_password",
    )
    roundtrip(g, HandshakeV10.encode, HandshakeV10.decode)


def test_handshake_v10_from_mariadb_bytes() -> None:
    # A MariaDB 10.11 greeting as captured on the wire (nonce changed).
    payload = bytes.fromhex(
        "0a352e352e352d31302e31312e362d4d617269614442000b000000"
        "6162636465666768"
        "00fef72d0200ff8115000000000000" "1d000000"
        "31323334353637384142434400"
        "6d7973716c5f6e61746976655f70617373776f726400"
    )  # fmt: skip
    g = HandshakeV10.decode(payload)
    assert g.server_version == "5.5.5-10.11.6-MariaDB"
    assert g.connection_id == 11
    assert g.auth_data == b"abcdefgh123456789ABCD"[:8] + b"12345678ABCD"
    assert g.auth_plugin == "mysql_native_password"
    assert g.capabilities & Capability.PLUGIN_AUTH
    assert g.mariadb_capabilities == 0x1D  # CLIENT_MYSQL is clear: extended capabilities are present


def test_handshake_response_and_ssl_request() -> None:
    r = HandshakeResponse(
        capabilities=CAPS,
        max_packet=1 << 24,
        charset=45,
        user="丁一".encode(),
        auth_response=bytes(range(20)),
        database=b"bank",
        auth_plugin="mysql_native_password",
        attrs=((b"_client_name", b"libmariadb"), (b"program_name", b"mysql")),
    )
    roundtrip(r, HandshakeResponse.encode, HandshakeResponse.decode)
    r1 = HandshakeResponse(
        capabilities=CAPS & ~Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA & ~Capability.CONNECT_ATTRS,
        max_packet=1 << 24,
        charset=8,
        user=b"bob",
        auth_response=b"x" * 32,
        database=b"",
        auth_plugin="caching_sha2_password",
    )
    roundtrip(r1, HandshakeResponse.encode, HandshakeResponse.decode)
    ssl = SslRequest(capabilities=CAPS | int(Capability.SSL), charset=45).encode()
    assert HandshakeResponse.decode_ssl_request(ssl) == SslRequest(capabilities=CAPS | int(Capability.SSL))
    assert HandshakeResponse.decode_ssl_request(r.encode()) is None
    with pytest.raises(MalformedPacket):
        HandshakeResponse.decode(b"\x00\x00\x00\x00" + b"\x00" * 28 + b"u\x00")  # pre-4.1


def test_auth_packets() -> None:
    roundtrip(
        AuthSwitchRequest(plugin="caching_sha2_password", data=b"n" * 20 + b"\x00"),
        AuthSwitchRequest.encode,
        AuthSwitchRequest.decode,
    )
    roundtrip(AuthMoreData(data=b"\x03"), AuthMoreData.encode, AuthMoreData.decode)
    with pytest.raises(MalformedPacket):
        AuthSwitchRequest.decode(b"\xfe")  # the old-password switch


def test_ok_err_eof() -> None:
    ok = OkPacket(affected_rows=300, last_insert_id=70000, status=int(ServerStatus.IN_TRANS), warnings=2, info=b"hi")
    roundtrip(ok, lambda m: m.encode(CAPS), lambda p: OkPacket.decode(p, CAPS))
    plain_caps = CAPS & ~Capability.SESSION_TRACK
    roundtrip(ok, lambda m: m.encode(plain_caps), lambda p: OkPacket.decode(p, plain_caps))
    state = lenenc_bytes(b"\x01" + lenenc_bytes(lenenc_bytes(b"bank")))
    tracked = OkPacket(status=int(ServerStatus.SESSION_STATE_CHANGED), session_state=state[1:], info=b"")
    back = OkPacket.decode(tracked.encode(CAPS), CAPS)
    assert back.state_changes()[0].schema() == b"bank"
    # Without SESSION_TRACK on the client side the state is dropped and the flag cleared.
    stripped = OkPacket.decode(tracked.encode(plain_caps), plain_caps)
    assert stripped.session_state is None
    assert not stripped.status & ServerStatus.SESSION_STATE_CHANGED
    err = ErrPacket(errno=1227, message="sqlbastion: statement blocked", sqlstate="42000")
    roundtrip(err, ErrPacket.encode, ErrPacket.decode)
    eof = EofPacket(warnings=1, status=int(ServerStatus.MORE_RESULTS_EXISTS))
    roundtrip(eof, EofPacket.encode, EofPacket.decode)
    assert is_eof_packet(eof.encode())
    assert is_ok_packet(ok.encode(CAPS))
    assert is_ok_packet(OkPacket(header=0xFE).encode(CAPS), deprecate_eof=True)


def test_column_definition_and_prepare_ok() -> None:
    col = ColumnDefinition(
        schema=b"bank",
        table=b"c",
        org_table=b"customers",
        name=b"phone",
        org_name=b"mobile",
        charset=45,
        length=44,
        type=FieldType.STRING,
        flags=0,
    )
    roundtrip(col, ColumnDefinition.encode, ColumnDefinition.decode)
    with_default = ColumnDefinition(name=b"x", default=b"0")
    roundtrip(with_default, ColumnDefinition.encode, ColumnDefinition.decode)
    roundtrip(
        StmtPrepareOk(statement_id=9, num_columns=3, num_params=2, warnings=0),
        StmtPrepareOk.encode,
        StmtPrepareOk.decode,
    )


def test_text_rows() -> None:
    values: list[bytes | None] = [b"1", None, b"", b"x" * 300, "手机".encode()]
    payload = encode_text_row(values)
    for back in _feed_modes(payload):
        assert decode_text_row(back, 5) == values
    with pytest.raises(MalformedPacket):
        decode_text_row(payload + b"\x00", 5)
    masked, n = mask_text_row(payload, [None, None, None, lambda v: b"#", lambda v: None])
    assert decode_text_row(masked, 5) == [b"1", None, b"", b"#", None]
    assert n == 2


def test_binary_rows() -> None:
    types = [FieldType.LONGLONG, FieldType.VAR_STRING, FieldType.DATE, FieldType.NULL, FieldType.TINY, FieldType.TIME]
    values: list[bytes | None] = [
        (5).to_bytes(8, "little"),
        b"hello",
        b"\xe8\x07\x01\x02",
        None,
        b"\x01",
        b"\x00" * 8,
    ]
    payload = encode_binary_row(values, types)
    for back in _feed_modes(payload):
        assert decode_binary_row(back, types) == values
    masked, n = mask_binary_row(payload, types, [lambda v: b"\x00" * 8, lambda v: b"*****", None, None, None, None])
    assert decode_binary_row(masked, types)[:2] == [b"\x00" * 8, b"*****"]
    assert n == 2
    with pytest.raises(Exception, match="cannot become"):
        mask_binary_row(payload, types, [lambda v: b"\x00", None, None, None, None, None])
    with pytest.raises(MalformedPacket):
        decode_binary_row(b"\x01" + payload[1:], types)
