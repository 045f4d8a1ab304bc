"""Shared helpers for the MySQL proxy's integration tests.

A test engine (blocks statements containing DROP or ``forbidden``, refuses the
person ``outsider`` at admission, marks statements naming ``secret`` as
sensitive), a test mask planner (masks columns called ``secret``, text and
binary rows), a recording audit hook, and a running proxy in front of the
MariaDB test server.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.policies.model import Action, ColumnRef, Decision, RuleHit, StatementContext
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.constants import Capability, ServerStatus
from sqlbastion.proxy.mysql.framing import Packet, PacketFramer, frame
from sqlbastion.proxy.mysql.packets import (
    ColumnDefinition,
    EofPacket,
    ErrPacket,
    HandshakeResponse,
    HandshakeV10,
    StmtPrepareOk,
)
from sqlbastion.proxy.mysql.rows import decode_binary_row
from sqlbastion.proxy.services import ProxyServices, server_ssl_context
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, MaskPlan, ResultColumn, Runtime
from sqlbastion.users import UsersFile, make_credentials

PERSON = "alice"
PASSWORD = "alice-pw-1"
SHA2_PERSON = "shaw"  # caching_sha2_password verifier only (plus the clear-text one)
SHA2_PASSWORD = "shaw-pw-2"
CLEAR_PERSON = "clara"  # only the PBKDF2 verifier: full authentication (TLS or RSA)
CLEAR_PASSWORD = "clara-pw-3"
OUTSIDER = "outsider"
OUTSIDER_PASSWORD = "outsider-pw"
SECRET_ENV = "SQLBASTION_TEST_MY_SERVICE_PW"
TLS_KEY_ENV = "SQLBASTION_TEST_MY_TLS_KEY"

DROP_HIT = RuleHit(rule_id="TEST-DROP", title="DROP in tests", severity="critical", action=Action.BLOCK, why="DROP")


class BlockingEngine:
    """Blocks DROP and ``forbidden``; marks statements naming ``secret`` as sensitive."""

    version = "test-v1"

    def __init__(self) -> None:
        self.seen: list[tuple[str, StatementContext]] = []

    def roles_of(self, person: str) -> tuple[str, ...]:
        return ("tester",)

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return "network" if person == OUTSIDER else None

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        self.seen.append((sql, ctx))
        lowered = sql.lower()
        if "drop" in lowered or "forbidden" in lowered:
            return Decision(action=Action.BLOCK, rule_hits=(DROP_HIT,), policy_version=self.version)
        sensitive: tuple[ColumnRef, ...] = ()
        if "secret" in lowered:
            sensitive = (ColumnRef(database=ctx.database, schema=None, table="t", column="secret"),)
        return Decision(action=Action.ALLOW, sensitive_columns=sensitive, policy_version=self.version)

    def contexts_for(self, needle: str) -> list[StatementContext]:
        return [ctx for sql, ctx in self.seen if needle in sql]


def mask_text(value: bytes | None) -> bytes | None:
    return None if value is None else b"***"


def mask_long(value: bytes | None) -> bytes | None:
    return None if value is None else b"\x00\x00\x00\x00"


def mask_longlong(value: bytes | None) -> bytes | None:
    return None if value is None else b"\x00" * 8


class SecretMasker:
    """Masks columns named ``secret``; refuses results with a column named ``refuse_me``."""

    def __init__(self) -> None:
        self.planned: list[tuple[ResultColumn, ...]] = []

    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        self.planned.append(tuple(columns))
        if any(c.name == "refuse_me" for c in columns):
            return MaskPlan(refuse="sqlbastion: result refused by the test planner.")
        if not any(c.column == "secret" or c.name == "secret" for c in columns):
            return EMPTY_MASK_PLAN
        maskers: list[Any] = []
        for c in columns:
            if not (c.column == "secret" or c.name == "secret"):
                maskers.append(None)
            elif c.binary and c.type_name in ("long", "int24"):
                maskers.append(mask_long)
            elif c.binary and c.type_name == "longlong":
                maskers.append(mask_longlong)
            else:
                maskers.append(mask_text)
        return MaskPlan(columns=tuple(maskers))


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True

    def of_kind(self, kind: str) -> list[dict[str, object]]:
        return [e for e in list(self.events) if e.get("kind") == kind]


@dataclass
class Proxy:
    """A running proxy in front of the MariaDB test server, and what it recorded."""

    thread: ProxyThread
    settings: Settings
    server: ServerInfo
    engine: BlockingEngine
    masker: SecretMasker
    audit: RecordingAudit
    port: int
    directory: Path
    ca_file: str | None = None

    def connect(self, *, user: str = PERSON, password: str = PASSWORD, **kwargs: Any) -> Any:
        """A pymysql connection (typed Any: tests reach into its packet-level helpers)."""
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("read_timeout", 60)
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host="127.0.0.1", port=self.port, user=user, password=password, **kwargs)

    def admin(self, **kwargs: Any) -> pymysql.Connection[Any]:
        s = self.server
        return pymysql.connect(
            host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, autocommit=True, **kwargs
        )

    def backend_connection_count(self) -> int:
        """Connections the service account has open on the backend right now."""
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (self.server.service_user,)
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0


def make_certificate(directory: Path) -> tuple[Path, str]:
    """A self-signed certificate for 127.0.0.1: (certificate path, key PEM)."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sqlbastion-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "server.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert_path, key_pem


def settings_text(
    server: ServerInfo,
    directory: Path,
    port: int,
    *,
    require_tls: bool,
    with_tls: bool,
    backend_port: int | None = None,
    max_statement_bytes: int = 32 << 20,
    database: str | None = None,
    handshake_timeout_s: float = 5.0,
    max_connections: int = 10000,
) -> str:
    tls = ""
    if with_tls:
        tls = f'[tls]\ncert_file = "{directory / "server.crt"}"\nkey_file = "env:{TLS_KEY_ENV}"\n'
    db = f'database = "{database}"\n' if database else ""
    return f"""
users_file = "{directory / "users.toml"}"
{tls}
[server]
handshake_timeout_s = {handshake_timeout_s}
max_connections = {max_connections}
max_statement_bytes = {max_statement_bytes}

[admin]
enabled = false

[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:{port}"
host = "{server.host}"
port = {backend_port or server.port}
user = "{server.service_user}"
password = "env:{SECRET_ENV}"
require_tls = {"true" if require_tls else "false"}
connect_timeout_s = 5.0
{db}"""


@dataclass
class _Env:
    saved: dict[str, str | None] = field(default_factory=dict)

    def set(self, name: str, value: str) -> None:
        self.saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def restore(self) -> None:
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_USERS_CACHE: dict[str, Any] = {}


def _persons() -> dict[str, Any]:
    # PBKDF2 verifiers are slow to compute on purpose: compute them once per test run.
    if not _USERS_CACHE:
        _USERS_CACHE[PERSON] = make_credentials(PERSON, PASSWORD)
        _USERS_CACHE[SHA2_PERSON] = make_credentials(SHA2_PERSON, SHA2_PASSWORD, ("caching_sha2",))
        _USERS_CACHE[CLEAR_PERSON] = make_credentials(CLEAR_PERSON, CLEAR_PASSWORD, ())
        _USERS_CACHE[OUTSIDER] = make_credentials(OUTSIDER, OUTSIDER_PASSWORD, ("mysql_native",))
    return _USERS_CACHE


def run_proxy(
    server: ServerInfo,
    directory: Path,
    *,
    require_tls: bool = False,
    with_tls: bool = True,
    backend_port: int | None = None,
    max_statement_bytes: int = 32 << 20,
    database: str | None = None,
    handshake_timeout_s: float = 5.0,
    max_connections: int = 10000,
) -> Generator[Proxy, None, None]:
    """Start a proxy (as a generator, for fixtures); stops it and restores the environment after."""
    env = _Env()
    env.set(SECRET_ENV, server.service_password)
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = None
    if with_tls:
        cert_path, key_pem = make_certificate(directory)
        env.set(TLS_KEY_ENV, key_pem)
        ca_file = str(cert_path)
    users = UsersFile(path=directory / "users.toml")
    users.persons.update(_persons())
    users.save()
    port = free_port()
    settings = loads(
        settings_text(
            server,
            directory,
            port,
            require_tls=require_tls,
            with_tls=with_tls,
            backend_port=backend_port,
            max_statement_bytes=max_statement_bytes,
            database=database,
            handshake_timeout_s=handshake_timeout_s,
            max_connections=max_connections,
        )
    )
    engine, masker, audit = BlockingEngine(), SecretMasker(), RecordingAudit()
    services = ProxyServices(
        settings=settings,
        users=UsersFile.load(settings.users_file),
        runtime=Runtime(engine=engine, masking=masker, audit=audit),
        server_tls=server_ssl_context(settings),
    )
    thread = ProxyThread(settings, services=services)
    thread.start()
    try:
        yield Proxy(
            thread=thread,
            settings=settings,
            server=server,
            engine=engine,
            masker=masker,
            audit=audit,
            port=port,
            directory=directory,
            ca_file=ca_file,
        )
    finally:
        thread.stop()
        env.restore()


def prepare_test_database(server: ServerInfo) -> None:
    """A small database ``sbtest_proxy`` with a table holding a ``secret`` column."""
    conn = pymysql.connect(
        host=server.host, port=server.port, user=server.admin_user, password=server.admin_password, autocommit=True
    )
    with conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS proxytest")
        cur.execute("DROP TABLE IF EXISTS proxytest.t")
        cur.execute(
            "CREATE TABLE proxytest.t (id INT PRIMARY KEY, name VARCHAR(32), secret VARCHAR(32), n BIGINT, d DATE)"
        )
        cur.execute(
            "INSERT INTO proxytest.t VALUES (1, 'one', 'hunter2', 10, '2024-01-02'), (2, 'two', NULL, 20, NULL),"
            " (3, 'three', 's3cr3t', NULL, '2025-12-31')"
        )


RAW_CLIENT_CAPS = int(
    Capability.PROTOCOL_41
    | Capability.SECURE_CONNECTION
    | Capability.PLUGIN_AUTH
    | Capability.LONG_PASSWORD
    | Capability.TRANSACTIONS
    | Capability.MULTI_RESULTS
    | Capability.CONNECT_WITH_DB
)


class RawClient:
    """A minimal blocking MySQL client over sqlbastion's codec."""

    def __init__(
        self,
        port: int,
        *,
        database: str = "proxytest",
        byte_by_byte: bool = False,
        user: str = PERSON,
        password: str = PASSWORD,
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.framer = PacketFramer()
        self.byte_by_byte = byte_by_byte
        greeting = HandshakeV10.decode(self.read().payload)
        resp = HandshakeResponse(
            capabilities=RAW_CLIENT_CAPS,
            max_packet=1 << 24,
            charset=45,
            user=user.encode(),
            auth_response=auth.native_scramble(password.encode(), greeting.auth_data),
            database=database.encode(),
            auth_plugin=auth.NATIVE,
        )
        self.send(1, resp.encode())
        ok = self.read()
        assert ok.payload[0] == 0, ErrPacket.decode(ok.payload) if ok.payload[0] == 0xFF else ok.payload

    def send(self, seq: int, payload: bytes) -> None:
        data = frame(seq, payload)[0]
        if self.byte_by_byte:
            for i in range(len(data)):
                self.sock.sendall(data[i : i + 1])
                if i % 7 == 0:
                    time.sleep(0.001)
        else:
            self.sock.sendall(data)

    def read(self) -> Packet:
        while (p := self.framer.next_packet()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.framer.receive_data(chunk)
        return p

    def command(self, payload: bytes) -> Packet:
        self.send(0, payload)
        return self.read()

    def read_result(
        self, first: Packet, *, binary: bool = False
    ) -> tuple[list[ColumnDefinition], list[list[bytes | None]], int]:
        """Column definitions, rows and the final status of a result set whose first packet is ``first``."""
        if first.payload[0] == 0xFF:
            raise RuntimeError(ErrPacket.decode(first.payload).message)
        ncols = first.payload[0]
        cols = [ColumnDefinition.decode(self.read().payload) for _ in range(ncols)]
        eof = EofPacket.decode(self.read().payload)
        if eof.status & ServerStatus.CURSOR_EXISTS:
            return cols, [], eof.status
        rows: list[list[bytes | None]] = []
        while True:
            p = self.read()
            if p.payload[0] == 0xFE and len(p.payload) < 9:
                return cols, rows, EofPacket.decode(p.payload).status
            if p.payload[0] == 0xFF:
                raise RuntimeError(ErrPacket.decode(p.payload).message)
            rows.append(decode_binary_row(p.payload, [c.type for c in cols]) if binary else [])

    def prepare(self, sql: str) -> StmtPrepareOk:
        p = self.command(b"\x16" + sql.encode())
        if p.payload[0] == 0xFF:
            raise RuntimeError(ErrPacket.decode(p.payload).message)
        ok = StmtPrepareOk.decode(p.payload)
        for _ in range(ok.num_params + (1 if ok.num_params else 0) + ok.num_columns + (1 if ok.num_columns else 0)):
            self.read()
        return ok

    def close(self) -> None:
        try:
            self.send(0, b"\x01")
        finally:
            self.sock.close()
