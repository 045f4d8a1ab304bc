"""Hypothesis fuzzing: no input crashes a decoder, the relay or the handshakes; only typed errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.protocol.mysql.mysql_codec_support import DEPRECATE_CAPS, EOF_CAPS

from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import FIXED_WIDTH, FieldType
from sqlbastion.proxy.mysql.errors import BackendAuthError, MySQLProtocolError
from sqlbastion.proxy.mysql.framing import Packet
from sqlbastion.proxy.mysql.guards import check_statement
from sqlbastion.proxy.mysql.handshake import BackendHandshake, PersonHandshake
from sqlbastion.proxy.mysql.packets import (
    AuthMoreData,
    AuthSwitchRequest,
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
    StmtPrepareOk,
)
from sqlbastion.proxy.mysql.results import ResponseRelay
from sqlbastion.proxy.mysql.rows import decode_binary_row, decode_text_row
from sqlbastion.proxy.session import MaskPlan
from sqlbastion.users import UsersFile, make_credentials

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DECODERS: list[Callable[[bytes], Any]] = [
    HandshakeV10.decode,
    HandshakeResponse.decode,
    HandshakeResponse.decode_ssl_request,
    AuthSwitchRequest.decode,
    AuthMoreData.decode,
    ErrPacket.decode,
    EofPacket.decode,
    ColumnDefinition.decode,
    StmtPrepareOk.decode,
    lambda p: OkPacket.decode(p, EOF_CAPS).state_changes(),
    lambda p: OkPacket.decode(p, 0),
    lambda p: [c.system_variable() or c.schema() for c in OkPacket.decode(p, EOF_CAPS).state_changes()],
    lambda p: decode_text_row(p, 3),
    lambda p: decode_binary_row(p, [FieldType.LONGLONG, FieldType.VAR_STRING, FieldType.DATETIME, FieldType.TINY]),
]


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ
@given(data=st.binary(max_size=300))
def test_decoders_raise_only_typed_errors(decoder: Callable[[bytes], Any], data: bytes) -> None:
    with contextlib.suppress(MySQLProtocolError):
        decoder(data)


# Payloads that start like real packets reach deeper than uniform random bytes.
_PREFIXES = st.sampled_from([b"", b"\x00", b"\xfe", b"\xff", b"\x01", b"\x03def", b"\x0a", b"\xfb", b"\xfc\x01"])
_PAYLOAD = st.builds(lambda a, b: a + b, _PREFIXES, st.binary(max_size=80))


def _frames(payloads: list[bytes], seq: int) -> bytes:
    out = bytearray()
    for p in payloads:
        out += len(p).to_bytes(3, "little") + bytes((seq & 0xFF,)) + p
        seq += 1
    return bytes(out)


@FUZZ
@given(
    payloads=st.lists(_PAYLOAD, max_size=12),
    kind=st.sampled_from(["query", "prepare", "field_list", "fetch", "single"]),
    caps=st.sampled_from([EOF_CAPS, DEPRECATE_CAPS]),
    masked=st.booleans(),
    cut=st.integers(1, 17),
    cap=st.one_of(st.none(), st.integers(0, 4)),
    hold=st.booleans(),
)
def test_relay_raises_only_typed_errors(
    payloads: list[bytes], kind: Any, caps: int, masked: bool, cut: int, cap: int | None, hold: bool
) -> None:
    def planner(cols: list[ColumnDefinition], binary: bool) -> MaskPlan:
        return MaskPlan(columns=tuple((lambda v: b"*") if masked else None for _ in cols))

    relay = ResponseRelay(
        kind=kind,
        backend_capabilities=caps,
        client_capabilities=caps,
        planner=planner,
        types=[FieldType.LONG, FieldType.STRING],
        plan=MaskPlan(columns=(None, lambda v: b"x")) if masked else None,
        binary=hold,
        max_rows=cap,
        hold_capped_rows=hold,
    )
    stream = _frames(payloads, 1)
    try:
        for i in range(0, len(stream), cut):
            relay.feed(stream[i : i + cut])
    except MySQLProtocolError:
        pass


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UsersFile:
    u = UsersFile(path=Path(tmp_path_factory.mktemp("fuzz-users")) / "users.toml")
    u.persons["alice"] = make_credentials("alice", "pw", ("mysql_native", "caching_sha2"))
    return u


KEYS = auth.ServerKeyPair(bits=1024)


@FUZZ
@given(payloads=st.lists(_PAYLOAD, min_size=1, max_size=4), tls=st.booleans())
def test_person_handshake_raises_only_typed_errors(users: UsersFile, payloads: list[bytes], tls: bool) -> None:
    hs = PersonHandshake(
        users=users,
        connection_id=1,
        server_version="x",
        client_address="1.2.3.4",
        tls_available=tls,
        require_tls=False,
        keys=KEYS,
    )
    hs.greeting()
    seq = 1
    try:
        for p in payloads:
            step = hs.receive_packet(Packet(seq=seq, payload=p, next_seq=seq + 1))
            if step.action in ("refused", "authenticated"):
                break
            if step.action == "start_tls":
                hs.after_tls()
            seq += 2
    except MySQLProtocolError:
        pass


@FUZZ
@given(payloads=st.lists(_PAYLOAD, min_size=1, max_size=4))
def test_backend_handshake_raises_only_typed_errors(payloads: list[bytes]) -> None:
    b = BackendHandshake(
        user="svc", password="pw", database=None, wanted_capabilities=EOF_CAPS, charset=45, tls_mode="prefer"
    )
    seq = 0
    try:
        for p in payloads:
            step = b.receive_packet(Packet(seq=seq, payload=p, next_seq=seq + 1))
            if step.action == "done":
                break
            if step.action == "start_tls":
                b.after_tls()
            seq += 2
    except (MySQLProtocolError, BackendAuthError):
        pass


@FUZZ
@given(text=st.text(max_size=200))
def test_guards_never_crash(text: str) -> None:
    check_statement(text)
    check_statement("kill " + text)


@FUZZ
@given(
    values=st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=8),
    mask_bits=st.integers(0, 255),
    junk=st.binary(max_size=3),
)
def test_mask_text_row_matches_the_reference(values: list[bytes | None], mask_bits: int, junk: bytes) -> None:
    from sqlbastion.proxy.mysql.rows import encode_text_row, mask_text_row

    def star(value: bytes | None) -> bytes | None:
        return None if value is None else b"*" * (len(value) % 5)

    maskers = [star if mask_bits >> i & 1 else None for i in range(len(values))]
    row = encode_text_row(values)
    expected = encode_text_row([star(v) if m else v for v, m in zip(values, maskers, strict=True)])
    assert mask_text_row(row, maskers) == (expected, sum(1 for m in maskers if m))
    try:
        mask_text_row(row + junk, maskers)
        assert not junk
    except MySQLProtocolError:
        assert junk


_BINARY_TYPES = [
    FieldType.LONGLONG,
    FieldType.LONG,
    FieldType.TINY,
    FieldType.VAR_STRING,
    FieldType.DATE,
    FieldType.NULL,
]


@st.composite
def _binary_rows(draw: st.DrawFn) -> tuple[list[int], list[bytes | None]]:
    types: list[int] = [int(t) for t in draw(st.lists(st.sampled_from(_BINARY_TYPES), min_size=1, max_size=7))]
    values: list[bytes | None] = []
    for t in types:
        if t == FieldType.NULL or draw(st.booleans()):
            values.append(None)
        elif t == FieldType.VAR_STRING:
            values.append(draw(st.binary(max_size=300)))
        elif t == FieldType.DATE:
            values.append(draw(st.sampled_from([b"", b"\xe8\x07\x01\x02", b"\xe8\x07\x01\x02\x03\x04\x05"])))
        else:
            width = FIXED_WIDTH[t]
            values.append(draw(st.binary(min_size=width, max_size=width)))
    return types, values


@FUZZ
@given(row=_binary_rows(), mask_bits=st.integers(0, 255))
def test_mask_binary_row_matches_the_reference(row: tuple[list[int], list[bytes | None]], mask_bits: int) -> None:
    from sqlbastion.proxy.mysql.rows import decode_binary_row, encode_binary_row, mask_binary_row

    types, values = row

    def same_width(value: bytes | None) -> bytes | None:
        return None if value is None else bytes(len(value))

    maskers = [same_width if mask_bits >> i & 1 else None for i in range(len(types))]
    payload = encode_binary_row(values, types)
    got, count = mask_binary_row(payload, types, maskers)
    expected = [same_width(v) if m else v for v, m in zip(values, maskers, strict=True)]
    assert decode_binary_row(got, types) == expected
    assert got == encode_binary_row(expected, types)
    assert count == sum(1 for m in maskers if m)
