"""Person authentication through sqlbastion: native, caching_sha2 (fast, RSA, TLS), TLS, failures."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from tests.integration.mysql_support import (
    CLEAR_PASSWORD,
    CLEAR_PERSON,
    OUTSIDER,
    OUTSIDER_PASSWORD,
    PASSWORD,
    PERSON,
    SHA2_PASSWORD,
    SHA2_PERSON,
    Proxy,
    run_proxy,
)

from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-auth"))


@pytest.fixture(scope="module")
def tls_proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    yield from run_proxy(
        mariadb_server, tmp_path_factory.mktemp("mysql-auth-tls"), require_tls=True, handshake_timeout_s=1.5
    )


def _whoami(conn: Any) -> tuple[Any, ...]:
    cur = conn.cursor()
    cur.execute("SELECT 1 + 1, @@ssl_cipher IS NOT NULL")
    row = cur.fetchone()
    cur.close()
    return tuple(row)


def test_native_person(proxy: Proxy) -> None:
    with proxy.connect() as conn:
        assert _whoami(conn)[0] == 2
    opened = [e for e in proxy.audit.of_kind("connection_opened") if e["person"] == PERSON]
    assert opened


def test_caching_sha2_fast_path_after_switch(proxy: Proxy) -> None:
    with proxy.connect(user=SHA2_PERSON, password=SHA2_PASSWORD) as conn:
        assert _whoami(conn)[0] == 2


def test_caching_sha2_connector_first_plugin(proxy: Proxy) -> None:
    conn = mysql.connector.connect(
        host="127.0.0.1",
        port=proxy.port,
        user=SHA2_PERSON,
        password=SHA2_PASSWORD,
        auth_plugin="caching_sha2_password",
        ssl_disabled=True,
        use_pure=True,
        connection_timeout=10,
    )
    try:
        assert _whoami(conn)[0] == 2
    finally:
        conn.close()


def test_caching_sha2_full_auth_rsa_without_tls(proxy: Proxy) -> None:
    # No fast-path verifier: the client must send the password encrypted with sqlbastion's RSA key.
    with proxy.connect(user=CLEAR_PERSON, password=CLEAR_PASSWORD, ssl_disabled=True) as conn:
        assert _whoami(conn)[0] == 2
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(user=CLEAR_PERSON, password="wrong", ssl_disabled=True)
    assert info.value.args[0] == 1045


def test_caching_sha2_full_auth_over_tls(proxy: Proxy) -> None:
    assert proxy.ca_file
    with proxy.connect(user=CLEAR_PERSON, password=CLEAR_PASSWORD, ssl={"ca": proxy.ca_file}) as conn:
        assert _whoami(conn)[0] == 2


def test_failures_identical_and_no_backend_connection(proxy: Proxy) -> None:
    before = proxy.backend_connection_count()
    texts = set()
    cases = [(PERSON, "bad"), ("ghost", PASSWORD), (SHA2_PERSON, "bad"), (OUTSIDER, OUTSIDER_PASSWORD)]
    for user, pw in cases:
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect(user=user, password=pw)
        code, text = info.value.args
        assert code == 1045
        texts.add(text.replace(f"'{user}'", "'<user>'"))
    assert texts == {"Access denied for user '<user>'@'127.0.0.1' (using password: YES)"}
    assert proxy.backend_connection_count() == before
    reasons = [e["reason"] for e in proxy.audit.of_kind("auth_failed")]
    assert "bad_credentials" in reasons
    assert "network" in reasons


def test_require_tls_refuses_plain(tls_proxy: Proxy) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        tls_proxy.connect(ssl_disabled=True)
    assert info.value.args[0] == 1045
    assert tls_proxy.audit.of_kind("auth_failed")[-1]["reason"] == "tls_required"


def test_require_tls_verified_connection(tls_proxy: Proxy) -> None:
    assert tls_proxy.ca_file
    with tls_proxy.connect(ssl={"ca": tls_proxy.ca_file}) as conn:
        assert _whoami(conn)[0] == 2
    conn2 = mysql.connector.connect(
        host="127.0.0.1",
        port=tls_proxy.port,
        user=SHA2_PERSON,
        password=SHA2_PASSWORD,
        ssl_ca=tls_proxy.ca_file,
        ssl_verify_cert=True,
        use_pure=True,
        connection_timeout=10,
    )
    try:
        assert _whoami(conn2)[0] == 2
    finally:
        conn2.close()
    assert tls_proxy.audit.of_kind("connection_opened")[-1]["tls"] is True


def test_handshake_timeout(tls_proxy: Proxy) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        greeting = sock.recv(4096)
        assert greeting[4] == 10  # protocol version 10
        started = time.monotonic()
        data = b"x"
        while data:
            data = sock.recv(4096)  # the ERR, then end of stream
        assert time.monotonic() - started < 8
    assert tls_proxy.audit.of_kind("auth_failed")[-1]["reason"] == "timeout"


def test_malformed_handshake_closes_only_that_connection(proxy: Proxy) -> None:
    with proxy.connect() as bystander, socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.recv(4096)
        sock.sendall(b"\x05\x00\x00\x01garba")  # a 5-byte "HandshakeResponse"
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        assert reply[4] == 0xFF  # ERR, then the connection closed
        assert _whoami(bystander)[0] == 2


def test_plain_tls_client_context_rejects_wrong_ca(proxy: Proxy, tmp_path: Any) -> None:
    other_ca = tmp_path / "other.crt"
    from tests.integration.mysql_support import make_certificate

    cert, _ = make_certificate(tmp_path)
    other_ca.write_bytes(cert.read_bytes())
    with pytest.raises((pymysql.err.OperationalError, ssl.SSLError)):
        proxy.connect(ssl={"ca": str(other_ca)}, connect_timeout=5)


def test_connection_limit(mariadb_server: ServerInfo, tmp_path: Path) -> None:
    gen = run_proxy(mariadb_server, tmp_path / "limit", with_tls=False, max_connections=2)
    proxy = next(gen)
    try:
        first, second = proxy.connect(), proxy.connect()
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect()
        assert info.value.args[0] == 1040
        first.close()
        for _ in range(50):  # the slot frees once the proxy has seen the close
            try:
                proxy.connect().close()
                break
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        else:
            pytest.fail("the connection slot was not freed")
        second.close()
    finally:
        with contextlib.suppress(StopIteration):
            gen.send(None)
