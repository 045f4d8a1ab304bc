"""sqlbastion's backend login over TLS with caching_sha2_password full authentication.

MariaDB (the live backend) has no caching_sha2_password and the test server runs
without a certificate, so this test puts a small MySQL 8-style backend, built
from the protocol documentation with sqlbastion's own codec, behind the proxy:
greeting offering SSL and caching_sha2_password → SSLRequest → TLS → the fast
scramble → ``perform_full_authentication`` → the password over TLS → OK.
The proxy must verify the backend's certificate (``verify-ca``).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import pymysql
import pytest
from tests.integration.mysql_support import PASSWORD, PERSON, make_certificate

from sqlbastion.config import loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import free_port
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import Capability
from sqlbastion.proxy.mysql.framing import PacketFramer, frame
from sqlbastion.proxy.mysql.packets import (
    ColumnDefinition,
    EofPacket,
    HandshakeResponse,
    HandshakeV10,
    OkPacket,
)
from sqlbastion.proxy.mysql.rows import encode_text_row
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.proxy.session import Runtime
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

VAULTED = "vaulted-Pw-9"
NONCE = b"0123456789abcdefghij"
CAPS = int(
    Capability.LONG_PASSWORD
    | Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.SESSION_TRACK
    | Capability.CONNECT_WITH_DB
    | Capability.CONNECT_ATTRS
    | Capability.MULTI_RESULTS
    | Capability.TRANSACTIONS
    | Capability.SSL
)


class FakeBackend:
    """Serves one connection: the documented caching_sha2 full authentication over TLS, then queries."""

    def __init__(self, cert: Path, key_pem: str, directory: Path) -> None:
        key_path = directory / "backend.key"
        key_path.write_text(key_pem)
        os.chmod(key_path, 0o600)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key_path))
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.log: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # The proxy's listener first reads a greeting to learn the server version (a probe that
        # hangs up); the login comes on another connection, possibly while the probe is still
        # open on a loaded machine: each connection gets its own thread.
        self.sock.settimeout(60)
        for _ in range(4):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_guarded, args=(conn,), daemon=True).start()
            if self.done.wait(0.05):
                return

    def _serve_guarded(self, conn: socket.socket) -> None:
        try:
            if self._serve_one(conn):
                self.done.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.done.set()

    def _serve_one(self, conn: socket.socket) -> bool:
        """True once a whole session was served; False for a connection that hung up after the greeting."""
        framer = PacketFramer()
        raw: Any = conn

        def read() -> Any:
            while (p := framer.next_packet()) is None:
                data = raw.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                framer.receive_data(data)
            return p

        def send(seq: int, payload: bytes) -> None:
            raw.sendall(frame(seq, payload)[0])

        greeting = HandshakeV10(
            server_version="8.0.36-fake",
            connection_id=4242,
            auth_data=NONCE,
            capabilities=CAPS,
            auth_plugin=auth.CACHING_SHA2,
        )
        send(0, greeting.encode())
        # The SSLRequest is read to its exact length: the client's TLS ClientHello follows right
        # behind it, and bytes read past it would be lost to the TLS handshake below.
        head = b""
        while len(head) < 36:  # 4-byte header + 32-byte SSLRequest (page_protocol_connection_phase_packets)
            chunk = conn.recv(36 - len(head))
            if not chunk:
                return False
            head += chunk
        framer.receive_data(head)
        ssl_request = read()
        assert len(ssl_request.payload) == 32
        assert int.from_bytes(ssl_request.payload[:4], "little") & Capability.SSL
        raw = self.ctx.wrap_socket(conn, server_side=True)
        self.log.append("tls")
        resp = HandshakeResponse.decode(read().payload)
        assert resp.user == b"svc"
        assert resp.auth_plugin == auth.CACHING_SHA2
        assert resp.auth_response == auth.caching_sha2_scramble(VAULTED.encode(), NONCE)
        assert not resp.capabilities & (Capability.LOCAL_FILES | Capability.COMPRESS | Capability.QUERY_ATTRIBUTES)
        caps = resp.capabilities
        self.log.append("scramble")
        send(3, b"\x01\x04")  # perform_full_authentication
        password = read()
        assert password.payload == VAULTED.encode() + b"\x00"
        self.log.append("full-auth")
        send(5, OkPacket().encode(caps))
        while True:
            cmd = read().payload
            if cmd[:1] == b"\x01":
                raw.close()
                return True
            sql = cmd[1:].decode()
            self.log.append(sql)
            if sql.startswith("SET "):
                send(1, OkPacket().encode(caps))
                continue
            values: list[bytes | None] = (
                [b"bank", b"STRICT_TRANS_TABLES", b"utf8mb4"] if "DATABASE()" in sql else [b"1"]
            )
            cols = [ColumnDefinition(name=f"c{i}".encode()) for i in range(len(values))]
            payloads = [bytes((len(cols),)), *(c.encode() for c in cols), EofPacket().encode()]
            payloads += [encode_text_row(values), EofPacket().encode()]
            seq = 1
            for p in payloads:
                send(seq, p)
                seq += 1


def test_backend_login_caching_sha2_full_auth_over_verified_tls(tmp_path: Path) -> None:
    cert, key_pem = make_certificate(tmp_path)
    backend = FakeBackend(cert, key_pem, tmp_path)
    users = UsersFile(path=tmp_path / "users.toml")
    users.persons[PERSON] = make_credentials(PERSON, PASSWORD, ("mysql_native",))
    users.save()
    os.environ["SQLBASTION_TEST_FAKE_BACKEND_PW"] = VAULTED
    port = free_port()
    settings = loads(
        f"""
users_file = "{tmp_path / "users.toml"}"
[admin]
enabled = false
[[backends]]
name = "mysql8"
protocol = "mysql"
listen = "127.0.0.1:{port}"
host = "127.0.0.1"
port = {backend.port}
user = "svc"
password = "env:SQLBASTION_TEST_FAKE_BACKEND_PW"
tls = {{ mode = "verify-ca", ca_file = "{cert}" }}
connect_timeout_s = 20.0
"""
    )
    services = ProxyServices(settings=settings, users=UsersFile.load(tmp_path / "users.toml"), runtime=Runtime())
    try:
        with ProxyThread(settings, services=services):
            conn = pymysql.connect(
                host="127.0.0.1", port=port, user=PERSON, password=PASSWORD, connect_timeout=10, read_timeout=20
            )
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == ("1",)
            conn.close()
    finally:
        os.environ.pop("SQLBASTION_TEST_FAKE_BACKEND_PW", None)
    backend.done.wait(20)
    assert backend.error is None, repr(backend.error)
    assert backend.log[:3] == ["tls", "scramble", "full-auth"]
    assert any(s.startswith("SET SESSION session_track_schema") for s in backend.log)
    assert "SELECT 1" in backend.log
