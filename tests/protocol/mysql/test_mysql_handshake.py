"""The connection phase without sockets: persons against the users file, and the backend login.

The caching_sha2_password backend exchanges are built from the protocol
documentation (page_caching_sha2_authentication_exchanges), because MySQL 8 is
not installable here: fast path (0x03), full authentication with the server's
RSA public key (0x04, 0x02, PEM), and full authentication over TLS.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import Capability
from sqlbastion.proxy.mysql.errors import BackendAuthError, MalformedPacket, PacketsOutOfOrder
from sqlbastion.proxy.mysql.framing import Packet, PacketFramer, frame
from sqlbastion.proxy.mysql.handshake import BackendHandshake, PersonHandshake
from sqlbastion.proxy.mysql.packets import (
    AuthMoreData,
    AuthSwitchRequest,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
)
from sqlbastion.users import UsersFile, make_credentials

CLIENT_CAPS = int(
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.MULTI_RESULTS
    | Capability.LOCAL_FILES
    | Capability.COMPRESS
    | Capability.QUERY_ATTRIBUTES
)
KEYS = auth.ServerKeyPair(bits=1024)  # small: these tests only exercise the exchange


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> UsersFile:
    u = UsersFile(path=tmp_path_factory.mktemp("users") / "users.toml")
    u.persons["alice"] = make_credentials("alice", "pw-a", ("mysql_native", "caching_sha2"))
    u.persons["native"] = make_credentials("native", "pw-n", ("mysql_native",))
    u.persons["clear"] = make_credentials("clear", "pw-c", ())
    return u


def _person(users: UsersFile, *, tls: bool = False, require_tls: bool = False) -> PersonHandshake:
    return PersonHandshake(
        users=users,
        connection_id=5,
        server_version="5.5.5-10.11.6-MariaDB",
        client_address="10.0.0.9",
        tls_available=tls,
        require_tls=require_tls,
        keys=KEYS,
    )


def _read(data: bytes) -> list[Packet]:
    f = PacketFramer()
    f.receive_data(data)
    out = []
    while (p := f.next_packet()) is not None:
        out.append(p)
    return out


def _client_response(hs: PersonHandshake, user: str, password: str, plugin: str) -> Packet:
    nonce = HandshakeV10.decode(_read(hs.greeting())[0].payload).auth_data
    scramble = (
        auth.native_scramble(password.encode(), nonce)
        if plugin == auth.NATIVE
        else auth.caching_sha2_scramble(password.encode(), nonce)
    )
    resp = HandshakeResponse(
        capabilities=CLIENT_CAPS,
        max_packet=1 << 24,
        charset=45,
        user=user.encode(),
        auth_response=scramble,
        auth_plugin=plugin,
    )
    return Packet(seq=1, payload=resp.encode(), next_seq=2)


def test_native_person_and_capability_stripping(users: UsersFile) -> None:
    hs = _person(users)
    step = hs.receive_packet(_client_response(hs, "alice", "pw-a", auth.NATIVE))
    assert step.action == "authenticated"
    assert not hs.capabilities & (Capability.LOCAL_FILES | Capability.COMPRESS | Capability.QUERY_ATTRIBUTES)
    ok = _read(hs.ok())[0]
    assert ok.seq == 2
    assert OkPacket.decode(ok.payload, hs.capabilities).affected_rows == 0


def test_wrong_password_and_unknown_person_same_error(users: UsersFile) -> None:
    texts = []
    for user, pw in (("alice", "nope"), ("nobody", "pw-a")):
        hs = _person(users)
        step = hs.receive_packet(_client_response(hs, user, pw, auth.NATIVE))
        assert step.action == "refused"
        assert step.reason == "bad_credentials"
        err = ErrPacket.decode(_read(step.data)[0].payload)
        assert err.errno == 1045
        assert err.sqlstate == "28000"
        texts.append(err.message.replace(user, "?"))
    assert texts[0] == texts[1] == "Access denied for user '?'@'10.0.0.9' (using password: YES)"


def test_caching_sha2_fast_path(users: UsersFile) -> None:
    hs = _person(users)
    step = hs.receive_packet(_client_response(hs, "alice", "pw-a", auth.CACHING_SHA2))
    assert step.action == "authenticated"
    assert _read(step.data)[0].payload == b"\x01\x03"  # fast_auth_success
    assert _read(hs.ok())[0].seq == 3


def test_switch_to_native_for_native_only_person(users: UsersFile) -> None:
    hs = _person(users)
    step = hs.receive_packet(_client_response(hs, "native", "pw-n", auth.CACHING_SHA2))
    assert step.action == "send"
    switch = AuthSwitchRequest.decode(_read(step.data)[0].payload)
    assert switch.plugin == auth.NATIVE
    answer = auth.native_scramble(b"pw-n", switch.data[:20])
    step = hs.receive_packet(Packet(seq=3, payload=answer, next_seq=4))
    assert step.action == "authenticated"


@pytest.mark.parametrize(
    ("user", "password", "plugin", "switched_to"),
    [
        ("alice", "pw-a", auth.CACHING_SHA2, auth.CACHING_SHA2),
        ("alice", "pw-a", auth.NATIVE, auth.NATIVE),
        ("native", "pw-n", auth.CACHING_SHA2, auth.NATIVE),
        ("clear", "pw-c", auth.NATIVE, auth.CACHING_SHA2),
    ],
)
def test_empty_first_response_is_switched(
    users: UsersFile, user: str, password: str, plugin: str, switched_to: str
) -> None:
    # libmysqlclient sends no data when its plugin differs from the greeting's and waits for a switch.
    hs = _person(users)
    _read(hs.greeting())
    resp = HandshakeResponse(
        capabilities=CLIENT_CAPS,
        max_packet=1 << 24,
        charset=45,
        user=user.encode(),
        auth_response=b"",
        auth_plugin=plugin,
    )
    step = hs.receive_packet(Packet(seq=1, payload=resp.encode(), next_seq=2))
    assert step.action == "send"
    switch = AuthSwitchRequest.decode(_read(step.data)[0].payload)
    assert switch.plugin == switched_to
    nonce = switch.data[:20]
    if switched_to == auth.NATIVE:
        step = hs.receive_packet(Packet(seq=3, payload=auth.native_scramble(password.encode(), nonce), next_seq=4))
        assert step.action == "authenticated"
    elif user == "alice":
        answer = auth.caching_sha2_scramble(password.encode(), nonce)
        step = hs.receive_packet(Packet(seq=3, payload=answer, next_seq=4))
        assert step.action == "authenticated"
        assert _read(step.data)[0].payload == b"\x01\x03"
    else:
        # Only the clear-text verifier: full authentication follows (0x04).
        answer = auth.caching_sha2_scramble(password.encode(), nonce)
        step = hs.receive_packet(Packet(seq=3, payload=answer, next_seq=4))
        assert step.action == "send"
        assert _read(step.data)[0].payload == b"\x01\x04"


def test_empty_responses_of_unknown_persons_look_the_same(users: UsersFile) -> None:
    actions = []
    for user in ("alice", "nobody"):
        hs = _person(users)
        _read(hs.greeting())
        resp = HandshakeResponse(
            capabilities=CLIENT_CAPS,
            max_packet=1 << 24,
            charset=45,
            user=user.encode(),
            auth_response=b"",
            auth_plugin=auth.CACHING_SHA2,
        )
        first = hs.receive_packet(Packet(seq=1, payload=resp.encode(), next_seq=2))
        assert AuthSwitchRequest.decode(_read(first.data)[0].payload).plugin == auth.CACHING_SHA2
        # An empty answer again (an empty password): refused, not switched twice.
        second = hs.receive_packet(Packet(seq=3, payload=b"", next_seq=4))
        actions.append((first.action, second.action, second.reason))
    assert actions[0] == actions[1] == ("send", "refused", "bad_credentials")


def test_full_auth_with_rsa_key(users: UsersFile) -> None:
    hs = _person(users)
    step = hs.receive_packet(_client_response(hs, "clear", "pw-c", auth.NATIVE))
    switch = AuthSwitchRequest.decode(_read(step.data)[0].payload)
    assert switch.plugin == auth.CACHING_SHA2
    nonce = switch.data[:20]
    step = hs.receive_packet(Packet(seq=3, payload=auth.caching_sha2_scramble(b"pw-c", nonce), next_seq=4))
    assert _read(step.data)[0].payload == b"\x01\x04"  # perform_full_authentication
    step = hs.receive_packet(Packet(seq=5, payload=b"\x02", next_seq=6))  # request public key
    pem = AuthMoreData.decode(_read(step.data)[0].payload).data
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    encrypted = auth.rsa_encrypt_password(b"pw-c", nonce, pem)
    step = hs.receive_packet(Packet(seq=7, payload=encrypted, next_seq=8))
    assert step.action == "authenticated"


def test_full_auth_wrong_password_over_tls(users: UsersFile) -> None:
    hs = _person(users, tls=True)
    hs.after_tls()
    step = hs.receive_packet(_client_response(hs, "clear", "x", auth.CACHING_SHA2))
    assert _read(step.data)[0].payload == b"\x01\x04"
    step = hs.receive_packet(Packet(seq=3, payload=b"wrong\x00", next_seq=4))
    assert step.action == "refused"


def test_require_tls(users: UsersFile) -> None:
    hs = _person(users, tls=True, require_tls=True)
    step = hs.receive_packet(_client_response(hs, "alice", "pw-a", auth.NATIVE))
    assert step.action == "refused"
    assert step.reason == "tls_required"


def test_ssl_request_then_tls(users: UsersFile) -> None:
    hs = _person(users, tls=True)
    hs.greeting()
    ssl_req = (CLIENT_CAPS | int(Capability.SSL)).to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x2d"
    step = hs.receive_packet(Packet(seq=1, payload=ssl_req + b"\x00" * 23, next_seq=2))
    assert step.action == "start_tls"
    hs.after_tls()
    assert hs.tls


def test_out_of_order_and_garbage(users: UsersFile) -> None:
    hs = _person(users)
    hs.greeting()
    with pytest.raises(PacketsOutOfOrder):
        hs.receive_packet(Packet(seq=3, payload=b"x", next_seq=4))
    hs = _person(users)
    hs.greeting()
    with pytest.raises(MalformedPacket):
        hs.receive_packet(Packet(seq=1, payload=b"\x00\x02", next_seq=2))


# --- the backend login --------------------------------------------------------


def _greeting(plugin: str, nonce: bytes, caps: int | None = None) -> Packet:
    g = HandshakeV10(
        server_version="8.0.36",
        connection_id=42,
        auth_data=nonce,
        capabilities=caps
        if caps is not None
        else int(
            Capability.PROTOCOL_41
            | Capability.SECURE_CONNECTION
            | Capability.PLUGIN_AUTH
            | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capability.SESSION_TRACK
            | Capability.DEPRECATE_EOF
            | Capability.CONNECT_WITH_DB
            | Capability.CONNECT_ATTRS
            | Capability.MULTI_RESULTS
            | Capability.SSL
        ),
        auth_plugin=plugin,
    )
    return Packet(seq=0, payload=g.encode(), next_seq=1)


def _backend(tls_mode: str = "disable") -> BackendHandshake:
    return BackendHandshake(
        user="svc",
        password="vaulted-pw",
        database="bank",
        wanted_capabilities=int(CLIENT_CAPS | Capability.DEPRECATE_EOF),
        charset=45,
        attrs=((b"sqlbastion_person", b"alice"),),
        tls_mode=tls_mode,
    )


NONCE = b"0123456789abcdefghij"


def test_backend_caching_sha2_fast_path() -> None:
    b = _backend()
    step = b.receive_packet(_greeting(auth.CACHING_SHA2, NONCE))
    resp = HandshakeResponse.decode(_read(step.data)[0].payload)
    assert resp.user == b"svc"
    assert resp.database == b"bank"
    assert resp.auth_plugin == auth.CACHING_SHA2
    # The documented scramble: XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)), nonce)).
    p1 = hashlib.sha256(b"vaulted-pw").digest()
    mask = hashlib.sha256(hashlib.sha256(p1).digest() + NONCE).digest()
    assert resp.auth_response == bytes(a ^ m for a, m in zip(p1, mask, strict=True))
    assert not resp.capabilities & (Capability.LOCAL_FILES | Capability.COMPRESS | Capability.QUERY_ATTRIBUTES)
    assert resp.capabilities & Capability.SESSION_TRACK
    assert b.receive_packet(Packet(seq=2, payload=b"\x01\x03", next_seq=3)).action == "send"
    assert b.receive_packet(Packet(seq=3, payload=OkPacket().encode(b.capabilities), next_seq=4)).action == "done"


def test_backend_caching_sha2_full_auth_rsa() -> None:
    server_keys = auth.ServerKeyPair(bits=1024)
    b = _backend()
    b.receive_packet(_greeting(auth.CACHING_SHA2, NONCE))
    step = b.receive_packet(Packet(seq=2, payload=b"\x01\x04", next_seq=3))
    assert _read(step.data)[0].payload == b"\x02"  # request the public key
    step = b.receive_packet(Packet(seq=4, payload=b"\x01" + server_keys.public_pem, next_seq=5))
    encrypted = _read(step.data)[0]
    assert encrypted.seq == 5
    assert server_keys.decrypt_password(encrypted.payload, NONCE) == b"vaulted-pw"
    assert b.receive_packet(Packet(seq=6, payload=OkPacket().encode(b.capabilities), next_seq=7)).action == "done"


def test_backend_tls_then_full_auth_in_clear_text() -> None:
    b = _backend("require")
    step = b.receive_packet(_greeting(auth.CACHING_SHA2, NONCE))
    assert step.action == "start_tls"
    ssl_req = _read(step.data)[0]
    assert len(ssl_req.payload) == 32
    step = b.after_tls()
    assert _read(step.data)[0].seq == 2
    step = b.receive_packet(Packet(seq=3, payload=b"\x01\x04", next_seq=4))
    assert _read(step.data)[0].payload == b"vaulted-pw\x00"


def test_backend_tls_required_but_not_offered() -> None:
    b = _backend("verify-ca")
    caps = int(
        Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.SESSION_TRACK
    )
    with pytest.raises(BackendAuthError) as info:
        b.receive_packet(_greeting(auth.NATIVE, NONCE, caps))
    assert info.value.kind == "tls"


def test_backend_auth_switch_to_native_and_refusal() -> None:
    b = _backend()
    b.receive_packet(_greeting(auth.CACHING_SHA2, NONCE))
    switch = AuthSwitchRequest(plugin=auth.NATIVE, data=b"ABCDEFGHIJKLMNOPQRST\x00").encode()
    step = b.receive_packet(Packet(seq=2, payload=switch, next_seq=3))
    assert _read(step.data)[0].payload == auth.native_scramble(b"vaulted-pw", b"ABCDEFGHIJKLMNOPQRST")
    err = ErrPacket(errno=1045, message="Access denied", sqlstate="28000").encode()
    with pytest.raises(BackendAuthError) as info:
        b.receive_packet(Packet(seq=4, payload=err, next_seq=5))
    assert info.value.errno == 1045


def test_backend_refuses_clear_text_without_tls() -> None:
    b = _backend()
    b.receive_packet(_greeting(auth.NATIVE, NONCE))
    switch = AuthSwitchRequest(plugin=auth.CLEAR_TEXT_PLUGIN, data=b"").encode()
    with pytest.raises(BackendAuthError):
        b.receive_packet(Packet(seq=2, payload=switch, next_seq=3))


def test_backend_missing_session_track() -> None:
    b = _backend()
    caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH)
    with pytest.raises(BackendAuthError):
        b.receive_packet(_greeting(auth.NATIVE, NONCE, caps))


def test_key_pair_file_free(tmp_path: Path) -> None:
    # The RSA key never touches the disk: nothing is written while a pair is made.
    before = set(tmp_path.iterdir())
    auth.ServerKeyPair(bits=1024)
    assert set(tmp_path.iterdir()) == before
    assert frame(0, b"")[0] == b"\x00\x00\x00\x00"
