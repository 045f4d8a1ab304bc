"""PostgreSQL codec: framing (whole, byte by byte, trailing bytes), startup, decoders, SCRAM, fuzzing."""

from __future__ import annotations

import base64
import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.protocol import ProtocolViolation
from sqlbastion.proxy.postgres.scram import ScramClient, ScramFailed, ScramServer, md5_password
from sqlbastion.proxy.postgres.startup import (
    CancelRequest,
    EncryptionRequest,
    StartupMessage,
    StartupReader,
    encode_cancel_request,
    encode_ssl_request,
    encode_startup,
    filter_parameters,
    parse_startup_packet,
    safe_client_encoding,
)
from sqlbastion.users import scram_keys

MESSAGES = [
    p.encode_message(p.QUERY, b"SELECT 1\x00"),
    p.encode_parse(b"s1", b"SELECT $1::int", [23]),
    p.encode_message(p.SYNC),
    p.encode_data_row([b"1", None, b""]),
    p.encode_error("ERROR", "42501", "no"),
    p.encode_ready_for_query(b"T"),
]
STREAM = b"".join(MESSAGES)


def _drain(reader: p.MessageReader) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        got = reader.next()
        if not isinstance(got, tuple):
            return out
        out.append(got)


def _expected() -> list[tuple[int, bytes]]:
    return [(m[0], m[5:]) for m in MESSAGES]


def test_reader_whole() -> None:
    r = p.MessageReader()
    r.feed(STREAM)
    assert _drain(r) == _expected()
    assert r.buffered == 0


def test_reader_byte_by_byte() -> None:
    r = p.MessageReader()
    got = []
    for i in range(len(STREAM)):
        r.feed(STREAM[i : i + 1])
        got += _drain(r)
    assert got == _expected()


def test_reader_trailing_bytes_wait_for_more() -> None:
    r = p.MessageReader()
    r.feed(STREAM + b"Q\x00\x00")
    assert _drain(r) == _expected()
    assert r.buffered == 3
    r.feed(b"\x00\x09abcd\x00")
    assert _drain(r) == [(p.QUERY, b"abcd\x00")]


def test_reader_raw_frames_are_exact() -> None:
    r = p.MessageReader()
    r.feed(STREAM)
    frames = []
    while isinstance(got := r.next_raw(), tuple):
        frames.append(got[1])
    assert frames == MESSAGES


@pytest.mark.parametrize("length", [0, 3, -1, (64 << 20) + 1])
def test_reader_rejects_bad_lengths(length: int) -> None:
    r = p.MessageReader()
    r.feed(b"Q" + struct.pack("!i", length))
    with pytest.raises(ProtocolViolation):
        r.next()


def test_reader_limit_is_checked_before_buffering() -> None:
    r = p.MessageReader(max_message=1024)
    r.feed(b"Q" + struct.pack("!i", 4096))
    with pytest.raises(ProtocolViolation) as info:
        r.next()
    assert info.value.sqlstate == "54000"
    assert b"54000" in info.value.reply()


def test_decoders_round_trip() -> None:
    parse = p.decode_parse(p.encode_parse(b"n", b"SELECT 1", [23, 25])[5:])
    assert (parse.name, parse.query, parse.param_types) == (b"n", b"SELECT 1", (23, 25))
    bind_body = b"por\x00st\x00" + struct.pack("!hh", 1, 1) + struct.pack("!h", 2)
    bind_body += struct.pack("!i", 3) + b"abc" + struct.pack("!i", -1) + struct.pack("!hhh", 2, 0, 1)
    bind = p.decode_bind(bind_body)
    assert (bind.portal, bind.statement, bind.result_formats) == (b"por", b"st", (0, 1))
    assert p.decode_execute(b"por\x00" + struct.pack("!i", 10)) == (b"por", 10)
    assert p.decode_close_or_describe(b"Sname\x00", "Close") == (0x53, b"name")
    row = struct.pack("!h", 1) + b"col\x00" + struct.pack("!ihihih", 16384, 2, 25, -1, -1, 1)
    (col,) = p.decode_row_description(row)
    assert (col.name, col.table_oid, col.attnum, col.type_oid, col.format) == (b"col", 16384, 2, 25, 1)
    assert p.decode_data_row(p.encode_data_row([b"x", None, b""])[5:]) == [b"x", None, b""]
    fields = p.decode_error_fields(p.encode_error("FATAL", "28P01", "bad")[5:])
    assert dict(fields)[b"C"] == "28P01"
    assert p.decode_command_tag(b"INSERT 0 5\x00") == ("INSERT", 5)
    assert p.decode_command_tag(b"BEGIN\x00") == ("BEGIN", 0)


@pytest.mark.parametrize(
    "decoder",
    [
        p.decode_parse,
        p.decode_bind,
        p.decode_execute,
        p.decode_row_description,
        p.decode_data_row,
        p.decode_error_fields,
        p.decode_query,
        p.decode_parameter_status,
        p.decode_backend_key_data,
    ],
)
def test_truncated_bodies_raise_protocol_violation(decoder: object) -> None:
    good = {
        p.decode_parse: p.encode_parse(b"n", b"SELECT 1", [23])[5:],
        p.decode_data_row: p.encode_data_row([b"abc", None])[5:],
        p.decode_execute: b"p\x00\x00\x00\x00\x00",
        p.decode_query: b"SELECT 1\x00",
        p.decode_error_fields: p.encode_error("ERROR", "1", "m")[5:],
        p.decode_parameter_status: b"a\x00b\x00",
        p.decode_backend_key_data: b"\x00" * 8,
        p.decode_bind: b"\x00\x00" + b"\x00" * 6,
        p.decode_row_description: struct.pack("!h", 1) + b"c\x00" + b"\x00" * 18,
    }[decoder]  # type: ignore[index]  # the parametrised decoders are the keys
    decoder(good)  # type: ignore[operator]  # each decoder takes one body
    for cut in range(len(good)):
        try:
            decoder(good[:cut])  # type: ignore[operator]  # each decoder takes one body
        except ProtocolViolation:
            continue


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decoders_raise_only_protocol_violation(data: bytes) -> None:
    for decoder in (
        p.decode_parse,
        p.decode_bind,
        p.decode_row_description,
        p.decode_data_row,
        p.decode_error_fields,
        p.decode_query,
        p.decode_execute,
        p.decode_parameter_status,
        p.decode_authentication,
        p.decode_backend_key_data,
    ):
        with contextlib.suppress(ProtocolViolation):
            decoder(data)
    with contextlib.suppress(ProtocolViolation):
        p.decode_close_or_describe(data, "Describe")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_reader(data: bytes) -> None:
    r = p.MessageReader(max_message=1 << 16)
    try:
        for i in range(0, len(data), 7):
            r.feed(data[i : i + 7])
            _drain(r)
    except ProtocolViolation:
        pass


# --- startup ---------------------------------------------------------------------------------


def test_startup_whole_and_byte_by_byte() -> None:
    packet = encode_startup({"user": "alice", "database": "bank", "application_name": "psql"})
    for chunks in ([packet], [packet[i : i + 1] for i in range(len(packet))]):
        r = StartupReader()
        got = None
        for c in chunks:
            r.feed(c)
            got = got or r.next()
        assert isinstance(got, StartupMessage)
        assert got.user == "alice"
        assert got.database == "bank"
        assert got.parameters["application_name"] == "psql"


def test_startup_trailing_bytes_stay_buffered() -> None:
    r = StartupReader()
    r.feed(encode_ssl_request() + b"Qxx")
    assert r.next() == EncryptionRequest(kind="ssl")
    assert r.leftover() == 3  # the listener refuses these before TLS (CVE-2021-23214)


def test_cancel_and_gss_requests() -> None:
    assert parse_startup_packet(encode_cancel_request(7, -9)) == CancelRequest(pid=7, secret=-9)
    assert parse_startup_packet(struct.pack("!ii", 8, 80877104)) == EncryptionRequest(kind="gss")


@pytest.mark.parametrize(
    "packet",
    [
        struct.pack("!ii", 8, (2 << 16)),  # protocol 2
        struct.pack("!ii", 9, 196608) + b"u",  # not terminated
        struct.pack("!ii", 14, 196608) + b"user\x00\x00",  # a name without a value
        encode_startup({"database": "x"}),  # no user
        struct.pack("!iiii", 20, 80877102, 1, 2) + b"xxxx",  # cancel of the wrong length
    ],
)
def test_bad_startup_packets(packet: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_startup_packet(packet)


@pytest.mark.parametrize("length", [0, 7, 10001, -5])
def test_startup_length_bounds(length: int) -> None:
    with pytest.raises(ProtocolViolation):
        StartupReader().feed(struct.pack("!i", length))


def test_parameter_filter() -> None:
    msg = StartupMessage(
        minor_version=0,
        parameters={
            "user": "a",
            "database": "d",
            "application_name": "app",
            "client_encoding": "utf-8",
            "datestyle": "ISO",
            "TimeZone": "UTC",
            "extra_float_digits": "3",
            "geqo": "off",
        },
    )
    passed, dropped = filter_parameters(msg)
    assert passed == {
        "application_name": "app",
        "client_encoding": "UTF8",
        "DateStyle": "ISO",
        "TimeZone": "UTC",
        "extra_float_digits": "3",
    }
    assert dropped == ["geqo"]
    for name, value in (("options", "-c search_path=x"), ("replication", "database"), ("client_encoding", "SJIS")):
        with pytest.raises(ProtocolViolation) as info:
            filter_parameters(StartupMessage(minor_version=0, parameters={"user": "a", name: value}))
        assert info.value.sqlstate == "0A000"


@pytest.mark.parametrize("name", ["SJIS", "big5", "GBK", "GB18030", "UHC", "JOHAB", "shift_jis_2004", "nonsense"])
def test_unsafe_encodings(name: str) -> None:
    assert safe_client_encoding(name) is None


@pytest.mark.parametrize(
    ("name", "canonical"), [("UTF8", "UTF8"), ("utf-8", "UTF8"), ("Latin1", "LATIN1"), ("win1251", "WIN1251")]
)
def test_safe_encodings(name: str, canonical: str) -> None:
    assert safe_client_encoding(name) == canonical


# --- SCRAM -----------------------------------------------------------------------------------

# RFC 7677 §3 test vector.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def _rfc_server(password: str = "pencil") -> ScramServer:
    stored, server = scram_keys(password, RFC_SALT, 4096)
    return ScramServer((4096, RFC_SALT, stored, server), person="user", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")


def test_scram_server_rfc7677_vector() -> None:
    server = _rfc_server()
    assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_scram_client_rfc7677_vector() -> None:
    client = ScramClient("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == RFC_CLIENT_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL)
    with pytest.raises(ScramFailed):
        client.verify(b"v=" + base64.b64encode(b"\x00" * 32))


def test_scram_wrong_password_and_unknown_person_fail_alike() -> None:
    server = _rfc_server(password="other")
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(ScramFailed):
        server.final(RFC_CLIENT_FINAL)
    unknown = ScramServer(None, person="user", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = unknown.first(RFC_CLIENT_FIRST)
    assert first.startswith(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=")
    assert first == ScramServer(None, person="user", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").first(RFC_CLIENT_FIRST)
    with pytest.raises(ScramFailed):
        unknown.final(RFC_CLIENT_FINAL.replace(b"W22Z", b"W22Z"))


def test_scram_client_and_server_agree() -> None:
    salt = b"0123456789abcdef"
    stored, key = scram_keys("s3cret", salt, 4096)
    server = ScramServer((4096, salt, stored, key), person="bob")
    client = ScramClient("s3cret")
    final = server.final(client.final(server.first(client.first())))
    client.verify(final)


@pytest.mark.parametrize(
    "first",
    [
        b"p=tls-server-end-point,,n=,r=abc",
        b"n,a=admin,n=,r=abc",
        b"n,,n=,m=ext,r=abc",
        b"x,,n=,r=a",
        b"n,,garbage",
        b"\xff",
    ],
)
def test_scram_server_refuses_bad_client_first(first: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        ScramServer(None, person="x").first(first)


def test_scram_server_checks_nonce_and_binding() -> None:
    server = _rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(ProtocolViolation):
        server.final(RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"))
    server = _rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(ProtocolViolation):
        server.final(RFC_CLIENT_FINAL.replace(b"k0,p=", b"k1,p="))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_fuzz_scram_server(first: bytes, final: bytes) -> None:
    server = ScramServer(None, person="fuzz")
    try:
        server.first(first)
        server.final(final)
    except (ProtocolViolation, ScramFailed):
        return
    raise AssertionError("a random exchange must never authenticate")


def test_md5_password() -> None:
    # md5(md5("secret" + "alice") + salt), as libpq computes it.
    assert (
        md5_password("alice", "secret", b"\x01\x02\x03\x04")
        == b"md5"
        + __import__("hashlib")
        .md5(__import__("hashlib").md5(b"secretalice").hexdigest().encode() + b"\x01\x02\x03\x04")
        .hexdigest()
        .encode()
    )


def test_fake_salt_is_stable_for_a_users_file() -> None:
    from sqlbastion.proxy.postgres.scram import fake_key_for

    key = fake_key_for(["SCRAM-SHA-256$4096:a$b:c"])
    assert key == fake_key_for(["SCRAM-SHA-256$4096:a$b:c"])
    assert key != fake_key_for(["SCRAM-SHA-256$4096:x$b:c"])
    first = ScramServer(None, person="ghost", fake_key=key).first(b"n,,n=,r=abc")
    again = ScramServer(None, person="ghost", fake_key=key).first(b"n,,n=,r=abc")
    assert first.split(b",")[1] == again.split(b",")[1]  # the same salt after a restart
