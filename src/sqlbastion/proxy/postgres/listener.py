"""asyncio glue for the PostgreSQL proxy: one client connection ↔ one backend connection.

Only this module and ``backend`` (the backend login and its protocol) do I/O;
the protocol work is in the sans-IO modules (``startup``, ``scram``,
``protocol``, ``relay``). Per connection:

1. start-up: SSLRequest (TLS with sqlbastion's certificate, or 'N'),
   GSSENCRequest ('N'), CancelRequest, StartupMessage — all within
   ``server.handshake_timeout_s``. Bytes sent after an SSLRequest before the
   TLS handshake close the connection (CVE-2021-23214: they would be read as
   if they came over TLS).
2. SCRAM-SHA-256 against the users file, then ``engine.admit``; any failure
   gives the same FATAL 28P01 text and no backend connection is opened.
3. backend login with the vaulted credentials (SCRAM-SHA-256, md5, password
   or trust; TLS per ``backend.tls``), allow-listed startup parameters only.
4. the query phase: ``QueryRelay`` with asyncio Protocols on both sides and
   backpressure both ways (a slow reader pauses the other side's reads).

Cancel requests (``backend.forward_cancel``): each client is given its own
random BackendKeyData; a CancelRequest carrying it is forwarded to the backend
with the real key on a fresh connection. Unknown keys are ignored, as
PostgreSQL does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from typing import NoReturn, cast

from sqlbastion.config import BackendSettings
from sqlbastion.logs import get_logger
from sqlbastion.observability.metrics import METRICS
from sqlbastion.proxy.postgres import protocol as p
from sqlbastion.proxy.postgres.backend import (
    BackendProtocol,
    BackendUnavailable,
    Closed,
    Inbox,
    forget_cancel_key,
    forward_cancel,
    login,
)
from sqlbastion.proxy.postgres.catalog import Catalog, catalog_for
from sqlbastion.proxy.postgres.protocol import ProtocolViolation
from sqlbastion.proxy.postgres.relay import QueryRelay
from sqlbastion.proxy.postgres.scram import ScramFailed, ScramServer, fake_key_for
from sqlbastion.proxy.postgres.startup import (
    CancelRequest,
    EncryptionRequest,
    StartupMessage,
    StartupReader,
    encode_negotiate_protocol_version,
    filter_parameters,
)
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.proxy.session import ClientInfo, Session, auth_failed
from sqlbastion.users import UsersFileError, parse_scram_verifier

__all__ = ["start_listener"]

log = get_logger("proxy.postgres")

# Client connections open per backend, against server.max_connections.
_ACTIVE: dict[str, int] = {}

HANDSHAKE_BUFFER_LIMIT = 1 << 20
HIGH_WATER = 1 << 20
LOW_WATER = 256 << 10
_I32 = struct.Struct("!i")


_FAKE_KEYS: dict[int, tuple[object, bytes]] = {}


def _fake_key(services: ProxyServices) -> bytes:
    """The fake-salt key for the current users file (computed once per users object)."""
    users = services.users
    cached = _FAKE_KEYS.get(id(users))
    if cached is not None and cached[0] is users:
        return cached[1]
    key = fake_key_for([c.scram_sha_256 or "" for c in users.persons.values()])
    _FAKE_KEYS.clear()  # one users file per process; a reload replaces it
    _FAKE_KEYS[id(users)] = (users, key)
    return key


def _fatal(sqlstate: str, message: str) -> bytes:
    return p.encode_error("FATAL", sqlstate, message)


class _Connection(asyncio.Protocol):
    """One client connection: handshake, then the relay."""

    def __init__(self, backend: BackendSettings, services: ProxyServices) -> None:
        self.backend = backend
        self.services = services
        self.settings = services.settings
        self.transport: asyncio.Transport | None = None
        self.inbox: Inbox | None = Inbox()
        self.tls = False
        self.peer = ("", 0)
        self.session: Session | None = None
        self.relay: QueryRelay | None = None
        self.catalog: Catalog | None = None
        self.backend_proto: BackendProtocol | None = None
        self.cancel_pid: int | None = None
        self.closing = False
        self._paused: set[str] = set()
        self._client_reading_paused = False
        self._backend_reading_paused = False
        self._task: asyncio.Task[None] | None = None
        self._loop_time = asyncio.get_running_loop().time
        self._last_activity = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._person = ""
        self._counted = False
        self._catalog_task: asyncio.Task[None] | None = None

    # --- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        active = _ACTIVE.get(self.backend.name, 0)
        if active >= self.settings.server.max_connections:
            self._send_and_close(_fatal("53300", "sorry, too many clients already"))
            return
        _ACTIVE[self.backend.name] = active + 1
        self._counted = True
        self._task = asyncio.get_running_loop().create_task(self._start(), name=f"pg-client-{self.peer[1]}")

    def data_received(self, data: bytes) -> None:
        if self.inbox is not None:
            if len(self.inbox.data) + len(data) > HANDSHAKE_BUFFER_LIMIT:
                # Nothing legitimate sends this much before authentication completes.
                self._send_and_close(_fatal("08P01", "too much data during start-up"))
                return
            self.inbox.feed(data)
            return
        relay = self.relay
        if relay is None or self.closing:
            return
        self._last_activity = self._loop_time()
        try:
            relay.client_data(data)
        except ProtocolViolation as exc:
            self._violation(exc, "client")
            return
        except Exception as exc:
            self._internal_error(exc)
            return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inbox is not None:
            self.inbox.close()
        self._shutdown("client disconnected")

    def pause_writing(self) -> None:
        self.set_flow("client_full", True)

    def resume_writing(self) -> None:
        self.set_flow("client_full", False)

    # --- start-up ------------------------------------------------------------------------

    async def _start(self) -> None:
        try:
            await asyncio.wait_for(self._handshake(), self.settings.server.handshake_timeout_s)
        except TimeoutError:
            self._record_auth_failure(self._person, "timeout")
            self._send_and_close(_fatal("08006", "sqlbastion: the start-up took too long"))
        except ProtocolViolation as exc:
            self._send_and_close(exc.reply())
        except Closed:
            self._shutdown("client closed during start-up")
        except BackendUnavailable as exc:
            METRICS.backend_errors.labels("postgres", self.backend.name, "connect").inc()
            log.warning("backend unavailable", backend=self.backend.name, error=str(exc))
            reply = exc.reply or _fatal("08006", f"sqlbastion: backend {self.backend.name} is unavailable")
            self._send_and_close(reply)
        except (OSError, ssl.SSLError) as exc:
            log.info("start-up failed", error=type(exc).__name__)
            self._shutdown("start-up failed")
        except Exception as exc:  # a bug must end this connection, never leave it hanging
            self._internal_error(exc)

    def _internal_error(self, exc: BaseException) -> None:
        log.error("internal error", error=repr(exc), exc_info=exc)
        self._send_and_close(_fatal("XX000", "sqlbastion: internal error; the session was closed"))

    async def _read_startup(self) -> StartupMessage | None:
        inbox = self.inbox
        assert inbox is not None
        reader = StartupReader()
        while True:
            while True:
                reader.feed(bytes(inbox.data))
                inbox.data.clear()
                packet = reader.next()
                if packet is not None:
                    break
                await inbox.wait()
            if isinstance(packet, CancelRequest):
                await forward_cancel(packet, self.backend)
                self._shutdown("cancel request")
                return None
            if isinstance(packet, EncryptionRequest):
                if reader.leftover() or inbox.data:
                    raise ProtocolViolation("received unencrypted data after SSL request")
                assert self.transport is not None
                if packet.kind == "gss" or self.services.server_tls is None or self.tls:
                    self.transport.write(b"N")
                    continue
                self.transport.write(b"S")
                loop = asyncio.get_running_loop()
                new = await loop.start_tls(self.transport, self, self.services.server_tls, server_side=True)
                if new is None:
                    raise Closed
                self.transport = new
                new.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
                self.tls = True
                continue
            assert isinstance(packet, StartupMessage)
            inbox.data[:0] = reader.take_leftover()
            return packet

    async def _handshake(self) -> None:
        startup = await self._read_startup()
        if startup is None:
            return
        person = self._person = startup.user
        if self.backend.require_tls and not self.tls:
            self._record_auth_failure(person, "tls_required")
            raise ProtocolViolation("sqlbastion requires an SSL connection (sslmode=require)", sqlstate="28000")
        try:
            passed, dropped = filter_parameters(startup)
        except ProtocolViolation:
            self._record_auth_failure(person, "protocol")  # e.g. options/replication: worth an audit event
            raise
        if dropped:
            log.info("startup parameters dropped", parameters=dropped[:20])
        if startup.protocol_options or startup.minor_version:
            self._write(encode_negotiate_protocol_version(startup.protocol_options))
        await self._authenticate(person)
        database = startup.parameters.get("database") or self.backend.database or person
        session = Session(
            runtime=self.services.runtime,
            backend=self.backend,
            person=person,
            client=ClientInfo(
                address=self.peer[0],
                port=self.peer[1],
                protocol="postgres",
                tls=self.tls,
                application_name=passed.get("application_name"),
            ),
        )
        session.state.database = database
        proto = self.backend_proto = BackendProtocol(self)
        result = await login(proto, self.backend, database=database, passed=passed, session=session)
        status, greeting, self.cancel_pid = result.status, result.greeting, result.cancel_pid
        self.session = session
        self.catalog = catalog_for(self.backend, database)
        relay = QueryRelay(
            session,
            self.catalog,
            transaction_status=status,
            max_statement_bytes=self.settings.server.max_statement_bytes,
        )
        self.relay = relay
        session.opened()
        inbox, self.inbox = self.inbox, None
        assert self.backend_proto is not None
        backend_inbox, self.backend_proto.inbox = self.backend_proto.inbox, None
        self._write(greeting)
        self._last_activity = self._loop_time()
        self._arm_idle_timer()
        if backend_inbox is not None and backend_inbox.data:
            relay.backend_data(bytes(backend_inbox.data))
        if inbox is not None and inbox.data:
            relay.client_data(bytes(inbox.data))
        self._flush()

    async def _authenticate(self, person: str) -> None:
        """SCRAM-SHA-256 (§55.3.1); then admission. One failure text for every refusal."""
        inbox = self.inbox
        assert inbox is not None
        creds = self.services.users.get(person)
        verifier = None
        if creds is not None and creds.scram_sha_256:
            try:
                verifier = parse_scram_verifier(creds.scram_sha_256)
            except UsersFileError:
                log.warning("unusable SCRAM verifier", person=person)
        scram = ScramServer(verifier, person=person, fake_key=_fake_key(self.services))
        self._write(p.encode_authentication(p.AUTH_SASL, b"SCRAM-SHA-256\x00\x00"))
        kind, body = await inbox.message()
        if kind != p.PASSWORD:
            raise ProtocolViolation("expected SASL response")
        mech_end = body.find(b"\x00")
        if mech_end < 0 or len(body) < mech_end + 5:
            raise ProtocolViolation("malformed SASLInitialResponse message")
        if body[:mech_end] != b"SCRAM-SHA-256":
            raise ProtocolViolation("client selected an invalid SASL authentication mechanism", sqlstate="28000")
        length = _I32.unpack_from(body, mech_end + 1)[0]
        first = body[mech_end + 5 :]
        if length != len(first):
            raise ProtocolViolation("malformed SASLInitialResponse message")
        self._write(p.encode_authentication(p.AUTH_SASL_CONTINUE, scram.first(first)))
        kind, body = await inbox.message()
        if kind != p.PASSWORD:
            raise ProtocolViolation("expected SASL response")
        try:
            final = scram.final(body)
        except ScramFailed:
            self._refuse_person(person, "bad_credentials")
        reason = self.services.runtime.engine.admit(person, self.peer[0], self.backend.name)
        if reason is not None:
            self._refuse_person(person, reason)
        self._write(p.encode_authentication(p.AUTH_SASL_FINAL, final))

    def _refuse_person(self, person: str, reason: str) -> NoReturn:
        self._record_auth_failure(person, reason)
        raise ProtocolViolation(f'password authentication failed for user "{person}"', sqlstate="28P01")

    def _record_auth_failure(self, person: str, reason: str) -> None:
        auth_failed(
            self.services.runtime,
            protocol="postgres",
            backend=self.backend.name,
            person=person,
            client_address=self.peer[0],
            reason=reason,
        )

    # --- query phase ---------------------------------------------------------------------

    def backend_data(self, data: bytes) -> None:
        relay = self.relay
        if relay is None or self.closing:
            return
        try:
            relay.backend_data(data)
        except ProtocolViolation as exc:
            self._violation(exc, "backend")
            return
        except Exception as exc:
            self._internal_error(exc)
            return
        self._flush()

    def _flush(self) -> None:
        relay = self.relay
        if relay is None:
            return
        out = relay.take_to_backend()
        bp = self.backend_proto
        if out and bp is not None and bp.transport is not None:
            bp.transport.write(out)
        out = relay.take_to_client()
        if out:
            self._write(out)
        if relay.close_reason is not None:
            self._shutdown(relay.close_reason)
            return
        if relay.need_catalog is not None and self._catalog_task is None:
            # Hold the backend's further rows while their columns are looked up.
            self.set_flow("catalog", True)
            self._catalog_task = asyncio.get_running_loop().create_task(self._load_catalog(), name="pg-catalog")
        backlog = relay.client_backlog
        if backlog > HIGH_WATER or "client_backlog" in self._paused:
            self.set_flow("client_backlog", backlog > HIGH_WATER)

    async def _load_catalog(self) -> None:
        relay, catalog = self.relay, self.catalog
        try:
            if relay is None or catalog is None or relay.need_catalog is None:
                return
            await catalog.load(relay.need_catalog)
        finally:
            self._catalog_task = None
            if not self.closing:
                self.set_flow("catalog", False)
        if self.closing:
            return
        try:
            relay.resume()
        except ProtocolViolation as exc:
            self._violation(exc, "backend")
            return
        self._flush()

    def set_flow(self, reason: str, on: bool) -> None:
        """Backpressure: pause reading one side while the other cannot take more."""
        if on == (reason in self._paused):
            return  # no change: the hot path stops here
        if on:
            self._paused.add(reason)
        else:
            self._paused.discard(reason)
        bp = self.backend_proto
        backend_pause = bool(self._paused & {"client_full", "catalog"})
        if backend_pause != self._backend_reading_paused and bp is not None and bp.transport is not None:
            self._backend_reading_paused = backend_pause
            if not bp.transport.is_closing():
                if backend_pause:
                    bp.transport.pause_reading()
                else:
                    bp.transport.resume_reading()
        client_pause = bool(self._paused & {"backend_full", "client_backlog"})
        if client_pause != self._client_reading_paused and self.transport is not None:
            self._client_reading_paused = client_pause
            if not self.transport.is_closing():
                if client_pause:
                    self.transport.pause_reading()
                else:
                    self.transport.resume_reading()

    def backend_lost(self) -> None:
        if self.closing:
            return
        if self.relay is not None:
            self.relay.abort_pending("backend connection lost")
            self._flush()
            METRICS.backend_errors.labels("postgres", self.backend.name, "connection_lost").inc()
            self._send_and_close(_fatal("08006", "sqlbastion: the backend connection was lost"))

    def _violation(self, exc: ProtocolViolation, side: str) -> None:
        log.info("protocol violation", side=side, error=exc.message)
        if side == "backend":
            METRICS.backend_errors.labels("postgres", self.backend.name, "protocol").inc()
            self._send_and_close(_fatal("08P01", "sqlbastion: the backend sent an invalid message"))
        else:
            self._send_and_close(exc.reply())

    def _arm_idle_timer(self) -> None:
        timeout = self.settings.server.idle_timeout_s
        if timeout > 0 and not self.closing:
            delay = max(1.0, self._last_activity + timeout - self._loop_time())
            self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        """server.idle_timeout_s: close sessions the client left idle (nothing in flight)."""
        relay = self.relay
        if self.closing or relay is None:
            return
        idle = self._loop_time() - self._last_activity
        if idle >= self.settings.server.idle_timeout_s and relay.pending == 0:
            self._send_and_close(_fatal("57P05", "terminating connection due to idle-session timeout"))
            return
        self._arm_idle_timer()

    # --- output and shutdown -------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_and_close(self, data: bytes) -> None:
        self._write(data)
        self._shutdown("error")

    def _shutdown(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        if self._counted:
            self._counted = False
            _ACTIVE[self.backend.name] -= 1
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self.cancel_pid is not None:
            forget_cancel_key(self.cancel_pid)
        bp = self.backend_proto
        if bp is not None and bp.transport is not None and not bp.transport.is_closing():
            with contextlib.suppress(RuntimeError):
                bp.transport.write(p.encode_message(p.TERMINATE))
            bp.transport.close()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.session is not None:
            if self.relay is not None:
                self.relay.abort_pending(reason)
            self.session.closed(reason)
            self.session = None
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()


async def start_listener(backend: BackendSettings, services: ProxyServices) -> asyncio.AbstractServer:
    """Listen on ``backend.listen`` and proxy each PostgreSQL client to ``backend``."""
    host, port = backend.listen_address
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: _Connection(backend, services), host, port, reuse_address=True, backlog=1024
    )
