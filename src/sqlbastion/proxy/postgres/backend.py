"""The backend side of a PostgreSQL connection: logging in with the vaulted credentials,
the asyncio protocol that receives the backend's bytes, and cancel-request forwarding.

Backend login (PostgreSQL 15 documentation §55.2.1 "Start-up", §55.3 "SASL
Authentication"): optional SSLRequest per ``backend.tls`` (a backend that sends
bytes before the TLS handshake is refused), a StartupMessage with the service
account, the database the client asked for and the allow-listed parameters,
then SCRAM-SHA-256 (the server's signature is checked), md5, clear-text
password or trust; ParameterStatus and NoticeResponse are kept for the client's
greeting; BackendKeyData is replaced by a random key of sqlbastion's own.

Cancel requests: ``CANCEL_KEYS`` maps each client's key to the real one; a
CancelRequest with a known key is forwarded on a fresh connection, any other is
ignored, as PostgreSQL does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import ssl
import struct
from dataclasses import dataclass
from typing import Protocol, cast

from sqlbastion.config import BackendSettings
from sqlbastion.observability.metrics import METRICS
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.catalog import backend_ssl_context
from sqlbastion.proxy.postgres.protocol import ProtocolViolation
from sqlbastion.proxy.postgres.scram import ScramClient, ScramFailed, md5_password
from sqlbastion.proxy.postgres.startup import CancelRequest, encode_cancel_request, encode_ssl_request, encode_startup
from sqlbastion.proxy.session import Session
from sqlbastion.settings_schema import SecretUnavailable

__all__ = [
    "BackendLogin",
    "BackendProtocol",
    "BackendUnavailable",
    "Closed",
    "Inbox",
    "forget_cancel_key",
    "forward_cancel",
    "login",
    "new_cancel_key",
]

AUTH_MESSAGE_LIMIT = 16 << 10
_I32 = struct.Struct("!i")


class BackendPeer(Protocol):
    """What the backend connection reports to (the client connection)."""

    def backend_data(self, data: bytes) -> None: ...

    def backend_lost(self) -> None: ...

    def set_flow(self, reason: str, on: bool) -> None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class BackendLogin:
    """A completed login: the transaction status, the client's greeting (AuthenticationOk,
    ParameterStatus…, BackendKeyData with sqlbastion's key, ReadyForQuery), the client's key."""

    status: bytes
    greeting: bytes
    cancel_pid: int | None


class BackendUnavailable(Exception):
    """The backend could not be reached or refused sqlbastion's login."""

    def __init__(self, message: str, *, reply: bytes | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class Closed(Exception):
    """The peer closed the connection during the handshake."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CancelTarget:
    """A client's key (the secret half) and the session it stands for on a backend."""

    secret: int
    backend: str
    host: str
    port: int
    pid: int
    key: int


CANCEL_KEYS: dict[int, CancelTarget] = {}


def new_cancel_key(*, backend: str, host: str, port: int, pid: int, key: int) -> tuple[int, int]:
    """A random (process ID, secret) for a client, standing for the backend's real key."""
    while True:
        fake_pid = secrets.randbelow((1 << 31) - 2) + 1
        if fake_pid not in CANCEL_KEYS:
            break
    secret = int.from_bytes(secrets.token_bytes(4), "big", signed=True)
    CANCEL_KEYS[fake_pid] = CancelTarget(secret=secret, backend=backend, host=host, port=port, pid=pid, key=key)
    return fake_pid, secret


def forget_cancel_key(pid: int) -> None:
    CANCEL_KEYS.pop(pid, None)


async def forward_cancel(request: CancelRequest, backend: BackendSettings) -> None:
    """Forward a CancelRequest that carries a known key of a session on this listener's backend."""
    target = CANCEL_KEYS.get(request.pid)
    # Constant-time comparison: the secret is the capability.
    if (
        target is None
        or target.backend != backend.name
        or not hmac.compare_digest(_I32.pack(target.secret), _I32.pack(request.secret))
    ):
        return
    try:
        connect = asyncio.open_connection(target.host, target.port)
        _, writer = await asyncio.wait_for(connect, backend.connect_timeout_s)
        writer.write(encode_cancel_request(target.pid, target.key))
        await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        METRICS.backend_errors.labels("postgres", backend.name, "cancel").inc()


class Inbox:
    """Bytes received during a handshake, and a way to wait for more."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self.data += data
        self._wake()

    def close(self) -> None:
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        if self.eof:
            raise Closed
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None

    async def message(self, limit: int = AUTH_MESSAGE_LIMIT) -> tuple[int, bytes]:
        """One typed message (§55.7 framing)."""
        while True:
            if len(self.data) >= 5:
                length = _I32.unpack_from(self.data, 1)[0]
                if length < 4 or length > limit:
                    raise ProtocolViolation(f"invalid message length {length}")
                if len(self.data) >= 1 + length:
                    kind = self.data[0]
                    body = bytes(self.data[5 : 1 + length])
                    del self.data[: 1 + length]
                    return kind, body
            await self.wait()

    async def byte(self) -> int:
        while not self.data:
            await self.wait()
        b = self.data[0]
        del self.data[:1]
        return b


class BackendProtocol(asyncio.Protocol):
    def __init__(self, conn: BackendPeer) -> None:
        self.conn = conn
        self.inbox: Inbox | None = Inbox()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        if self.inbox is not None:
            self.inbox.feed(data)
        else:
            self.conn.backend_data(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inbox is not None:
            self.inbox.close()
        self.conn.backend_lost()

    def pause_writing(self) -> None:
        self.conn.set_flow("backend_full", True)

    def resume_writing(self) -> None:
        self.conn.set_flow("backend_full", False)


async def login(
    proto: BackendProtocol, backend: BackendSettings, *, database: str, passed: dict[str, str], session: Session
) -> BackendLogin:
    """Connect ``proto`` to the backend and log in with the vaulted credentials.

    Raises BackendUnavailable (with the reply for the client when the backend's own
    error should be shown). Sets the session's client_encoding, standard_conforming_strings
    and search_path from what the backend reports.
    """
    b = backend
    loop = asyncio.get_running_loop()
    timeout = b.connect_timeout_s
    try:
        password = b.password.reveal() if b.password is not None else None
    except SecretUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    try:
        transport, _ = await asyncio.wait_for(loop.create_connection(lambda: proto, b.host, b.port), timeout)
    except (OSError, TimeoutError) as exc:
        raise BackendUnavailable(f"cannot connect: {type(exc).__name__}") from None
    inbox = proto.inbox
    assert inbox is not None
    try:
        return await asyncio.wait_for(
            _login_exchange(
                backend=b,
                transport=transport,
                proto=proto,
                inbox=inbox,
                password=password,
                database=database,
                passed=passed,
                session=session,
            ),
            timeout,
        )
    except (TimeoutError, Closed, OSError, ssl.SSLError) as exc:
        raise BackendUnavailable(f"login failed: {type(exc).__name__}") from None
    except ProtocolViolation as exc:
        raise BackendUnavailable(f"login failed: {exc.message}") from None


async def _login_exchange(
    *,
    backend: BackendSettings,
    transport: asyncio.Transport,
    proto: BackendProtocol,
    inbox: Inbox,
    password: str | None,
    database: str,
    passed: dict[str, str],
    session: Session,
) -> BackendLogin:
    b = backend
    if b.tls.mode != "disable":
        transport.write(encode_ssl_request())
        answer = await inbox.byte()
        if answer == ord("S"):
            if inbox.data:
                raise ProtocolViolation("backend sent data before the TLS handshake")
            ctx = backend_ssl_context(b)
            assert isinstance(ctx, ssl.SSLContext)
            new = await asyncio.get_running_loop().start_tls(transport, proto, ctx, server_hostname=b.host)
            if new is None:
                raise Closed
            transport = new
            proto.transport = new
        elif b.tls.mode != "prefer":
            raise BackendUnavailable("the backend does not offer TLS")
    transport.write(encode_startup({"user": b.user, "database": database, **passed}))
    scram: ScramClient | None = None
    greeting = bytearray()
    key: tuple[int, int] | None = None
    while True:
        kind, body = await inbox.message(limit=1 << 20)
        if kind == p.AUTHENTICATION:
            code, data = p.decode_authentication(body)
            if code == p.AUTH_OK:
                continue
            if password is None:
                raise BackendUnavailable("the backend asks for a password and none is configured")
            if code == p.AUTH_CLEARTEXT:
                transport.write(p.encode_message(p.PASSWORD, password.encode() + b"\x00"))
            elif code == p.AUTH_MD5:
                transport.write(p.encode_message(p.PASSWORD, md5_password(b.user, password, data[:4]) + b"\x00"))
            elif code == p.AUTH_SASL:
                if b"SCRAM-SHA-256\x00" not in data:
                    raise BackendUnavailable("the backend offers no supported SASL mechanism")
                scram = ScramClient(password)
                first = scram.first()
                transport.write(p.encode_message(p.PASSWORD, b"SCRAM-SHA-256\x00" + _I32.pack(len(first)) + first))
            elif code == p.AUTH_SASL_CONTINUE and scram is not None:
                transport.write(p.encode_message(p.PASSWORD, scram.final(data)))
            elif code == p.AUTH_SASL_FINAL and scram is not None:
                try:
                    scram.verify(data)
                except ScramFailed as exc:
                    raise BackendUnavailable(str(exc)) from None
            else:
                raise BackendUnavailable(f"unsupported backend authentication request {code}")
        elif kind == p.ERROR_RESPONSE:
            sqlstate = dict(p.decode_error_fields(body)).get(b"C", "")
            if sqlstate.startswith("28"):
                # The service account's own failure is the operator's business, not the client's.
                raise BackendUnavailable(f"backend refused the service account: SQLSTATE {sqlstate}")
            raise BackendUnavailable(f"backend error {sqlstate}", reply=p.encode_message(kind, body))
        elif kind == p.PARAMETER_STATUS:
            name, value = p.decode_parameter_status(body)
            if name == "client_encoding":
                session.state.client_encoding = value
            elif name == "standard_conforming_strings":
                session.state.standard_conforming_strings = value == "on"
            greeting += p.encode_message(kind, body)
        elif kind == p.BACKEND_KEY_DATA:
            key = p.decode_backend_key_data(body)
        elif kind == p.NOTICE_RESPONSE:
            greeting += p.encode_message(kind, body)
        elif kind == p.NEGOTIATE_PROTOCOL_VERSION:
            continue
        elif kind == p.READY_FOR_QUERY:
            status = body
            break
        else:
            raise ProtocolViolation(f"unexpected backend message {kind} during login")
    session.state.search_path = await _show_search_path(transport, inbox)
    cancel_pid = None
    if key is not None:
        cancel_pid, secret = new_cancel_key(backend=b.name, host=b.host, port=b.port, pid=key[0], key=key[1])
        greeting += p.encode_backend_key_data(cancel_pid, secret)
    if status not in (b"I", b"T", b"E"):
        raise ProtocolViolation("invalid ReadyForQuery from backend")
    out = p.encode_authentication(p.AUTH_OK) + bytes(greeting) + p.encode_ready_for_query(status)
    return BackendLogin(status=status, greeting=out, cancel_pid=cancel_pid)


async def _show_search_path(transport: asyncio.Transport, inbox: Inbox) -> tuple[str, ...]:
    transport.write(p.encode_message(p.QUERY, b"SHOW search_path\x00"))
    value: tuple[str, ...] = ()
    while True:
        kind, body = await inbox.message(limit=1 << 20)
        if kind == p.DATA_ROW:
            row = p.decode_data_row(body)
            if row and row[0] is not None:
                text = row[0].decode("utf-8", "replace")
                value = tuple(s.strip().strip('"') for s in text.split(",") if s.strip())
        elif kind == p.READY_FOR_QUERY:
            return value
