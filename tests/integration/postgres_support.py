"""Shared helpers for the PostgreSQL proxy's integration tests.

A test engine (blocks statements containing DROP or the word ``forbidden``,
refuses the person ``outsider`` at admission), a test mask planner (masks
columns called ``secret``), and a running proxy in front of the test server.
"""

from __future__ import annotations

import os
import resource
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.policies.model import Action, ColumnRef, Decision, RuleHit, StatementContext
from sqlbastion.proxy.services import ProxyServices, server_ssl_context
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, ColumnMasker, MaskPlan, ResultColumn, Runtime
from sqlbastion.users import UsersFile, make_credentials

PERSON = "alice"
PASSWORD = "alice-pw-1"
OUTSIDER = "outsider"
OUTSIDER_PASSWORD = "outsider-pw"
SECRET_ENV = "SQLBASTION_TEST_PG_SERVICE_PW"
TLS_KEY_ENV = "SQLBASTION_TEST_PG_TLS_KEY"

DROP_HIT = RuleHit(rule_id="TEST-DROP", title="DROP in tests", severity="critical", action=Action.BLOCK, why="DROP")


class BlockingEngine:
    """Blocks DROP and ``forbidden``; marks statements on ``secret`` columns as sensitive."""

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
            sensitive = (ColumnRef(database=ctx.database, schema="public", table="t", column="secret"),)
        return Decision(action=Action.ALLOW, sensitive_columns=sensitive, policy_version=self.version)


def _mask_text(value: bytes | None) -> bytes | None:
    return None if value is None else b"***"


def _mask_int4(value: bytes | None) -> bytes | None:
    return None if value is None else b"\x00\x00\x00\x00"


class SecretMasker:
    """Masks columns named ``secret`` (text → ``***``, binary int4 → 0, other binary → ``***``);
    refuses results with a column labelled ``refuse_me``."""

    def __init__(self) -> None:
        self.planned: list[tuple[ResultColumn, ...]] = []

    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        self.planned.append(tuple(columns))
        if any(c.name == "refuse_me" for c in columns):
            return MaskPlan(refuse="sqlbastion: this result may not be sent (test refusal)")
        if not any(c.column == "secret" for c in columns):
            return EMPTY_MASK_PLAN
        maskers: list[ColumnMasker | None] = []
        for c in columns:
            if c.column != "secret":
                maskers.append(None)
            elif c.binary and c.type_name == "int4":
                maskers.append(_mask_int4)
            else:
                maskers.append(_mask_text)
        return MaskPlan(columns=tuple(maskers))


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True

    def of_kind(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.events if e.get("kind") == kind]


@dataclass
class Proxy:
    """A running proxy in front of the test server, and what it recorded."""

    thread: ProxyThread
    settings: Settings
    server: ServerInfo
    engine: BlockingEngine
    masker: SecretMasker
    audit: RecordingAudit
    port: int
    ca_file: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def dsn(
        self, *, user: str = PERSON, password: str = PASSWORD, dbname: str = "postgres", sslmode: str = "disable"
    ) -> str:
        ssl_part = f" sslmode={sslmode}"
        if self.ca_file and sslmode.startswith("verify"):
            ssl_part += f" sslrootcert={self.ca_file}"
        return f"host=127.0.0.1 port={self.port} user={user} password={password} dbname={dbname}{ssl_part}"

    def connect(self, **kwargs: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(**kwargs), autocommit=True, connect_timeout=10)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        s = self.server
        return psycopg.connect(
            host=s.host, port=s.port, user=s.admin_user, password=s.admin_password, dbname="postgres", autocommit=True
        )


def make_certificate(directory: Path) -> tuple[Path, str]:
    """A self-signed certificate for 127.0.0.1: (certificate path, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sqlbastion-test")])
    now = datetime.now(UTC)
    import ipaddress

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
    idle_timeout_s: float = 28800.0,
    backend_tls: str = "disable",
) -> str:
    users = directory / "users.toml"
    tls = ""
    if with_tls:
        tls = f'[tls]\ncert_file = "{directory / "server.crt"}"\nkey_file = "env:{TLS_KEY_ENV}"\n'
    return f"""
users_file = "{users}"
{tls}
[server]
handshake_timeout_s = 5.0
idle_timeout_s = {idle_timeout_s}

[admin]
enabled = false

[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
host = "{server.host}"
port = {server.port}
user = "{server.service_user}"
password = "env:{SECRET_ENV}"
database = "postgres"
require_tls = {"true" if require_tls else "false"}
tls = {{ mode = "{backend_tls}" }}
"""


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


def run_proxy(
    server: ServerInfo,
    directory: Path,
    *,
    require_tls: bool = False,
    with_tls: bool = True,
    idle_timeout_s: float = 28800.0,
    backend_tls: str = "disable",
) -> Iterator[Proxy]:
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
    for name, pw in ((PERSON, PASSWORD), (OUTSIDER, OUTSIDER_PASSWORD)):
        users.persons[name] = make_credentials(name, pw, ("scram_sha_256",))
    users.save()
    port = free_port()
    settings = loads(
        settings_text(
            server,
            directory,
            port,
            require_tls=require_tls,
            with_tls=with_tls,
            idle_timeout_s=idle_timeout_s,
            backend_tls=backend_tls,
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
            ca_file=ca_file,
        )
    finally:
        thread.stop()
        env.restore()


def pg_tool(name: str) -> str:
    for base in ("/usr/lib/postgresql/15/bin", "/usr/bin"):
        path = Path(base) / name
        if path.exists():
            return str(path)
    return name


def run_tool(
    args: list[str],
    *,
    password: str,
    timeout: float = 60.0,
    stdin: str | None = None,
    sslmode: str = "disable",
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="10", PGSSLMODE=sslmode)
    env.pop("PGOPTIONS", None)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, input=stdin, check=False)


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def ssl_context_for(ca_file: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    return ctx


class RawClient:
    """A minimal frontend speaking the wire protocol directly, for messages no driver sends."""

    def __init__(self, port: int, *, user: str = PERSON, password: str = PASSWORD, database: str = "postgres") -> None:
        import socket

        from sqlbastion.proxy.postgres import protocol as p
        from sqlbastion.proxy.postgres.scram import ScramClient
        from sqlbastion.proxy.postgres.startup import encode_startup

        self.p = p
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = p.MessageReader()
        self.sock.sendall(encode_startup({"user": user, "database": database}))
        scram = ScramClient(password)
        while True:
            kind, body = self.recv()
            if kind == p.AUTHENTICATION:
                code = int.from_bytes(body[:4], "big")
                if code == p.AUTH_SASL:
                    first = scram.first()
                    self.send(p.PASSWORD, b"SCRAM-SHA-256\x00" + len(first).to_bytes(4, "big") + first)
                elif code == p.AUTH_SASL_CONTINUE:
                    self.send(p.PASSWORD, scram.final(body[4:]))
                elif code == p.AUTH_SASL_FINAL:
                    scram.verify(body[4:])
            elif kind == p.ERROR_RESPONSE:
                raise ConnectionError(dict(p.decode_error_fields(body)).get(b"M"))
            elif kind == p.READY_FOR_QUERY:
                return

    def send(self, kind: int, body: bytes = b"") -> None:
        self.sock.sendall(self.p.encode_message(kind, body))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> tuple[int, bytes]:
        while True:
            got = self.reader.next()
            if not isinstance(got, tuple):
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                self.reader.feed(data)
                continue
            return got

    def until_ready(self) -> list[tuple[str, bytes]]:
        """Messages up to and including ReadyForQuery, as (type letter, body)."""
        out = []
        while True:
            kind, body = self.recv()
            out.append((chr(kind), body))
            if kind == self.p.READY_FOR_QUERY:
                return out

    def query(self, sql: str) -> list[tuple[str, bytes]]:
        self.send(self.p.QUERY, sql.encode() + b"\x00")
        return self.until_ready()

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(OSError):
            self.send(self.p.TERMINATE)
        self.sock.close()


def sqlstates(messages: list[tuple[str, bytes]]) -> list[str]:
    from sqlbastion.proxy.postgres.protocol import decode_error_fields

    return [dict(decode_error_fields(body)).get(b"C", "") for kind, body in messages if kind == "E"]


def kinds(messages: list[tuple[str, bytes]]) -> str:
    return "".join(k for k, _ in messages)
