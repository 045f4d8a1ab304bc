"""The MySQL listener: accept, authenticate the person, log in to the backend, serve commands.

Order of a connection (DESIGN.md "One statement's journey" and decision 7):
greeting → optional TLS → the person's authentication against the users file →
``engine.admit`` (network, time window, expiry) → only then the backend login
with the vaulted credentials → session setup (session tracking) → OK to the
client → the command loop. Authentication failures of every kind answer with
the same 1045 text and open no backend connection. The handshake (up to the
person's OK) is bounded by ``server.handshake_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from sqlbastion import logs
from sqlbastion.config import BackendSettings
from sqlbastion.observability.metrics import METRICS
from sqlbastion.proxy.mysql import auth
from sqlbastion.proxy.mysql.channel import (
    BackendConnection,
    ConnectionClosed,
    PacketProtocol,
    connect_backend,
    probe_backend_version,
)
from sqlbastion.proxy.mysql.commands import (
    SETUP_SQL,
    BackendLost,
    CommandLoop,
    apply_state_changes,
)
from sqlbastion.proxy.mysql.constants import ErrorCode, ServerStatus
from sqlbastion.proxy.mysql.errors import BackendAuthError, MySQLProtocolError, RemoteProtocolError
from sqlbastion.proxy.mysql.framing import frame
from sqlbastion.proxy.mysql.handshake import PersonHandshake
from sqlbastion.proxy.mysql.packets import ErrPacket
from sqlbastion.proxy.mysql.registry import SESSIONS
from sqlbastion.proxy.mysql.results import ResultSummary
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.proxy.session import ClientInfo, Session, StatementOutcome, auth_failed
from sqlbastion.settings_schema import SecretUnavailable

__all__ = ["DEFAULT_SERVER_VERSION", "start_listener"]

log = logs.get_logger("proxy.mysql")

# Used when the backend cannot be probed at start: a MariaDB-style version, so
# clients pick MariaDB-compatible SQL for their own session set-up.
DEFAULT_SERVER_VERSION = "5.5.5-10.11.0-MariaDB"
CLIENT_WRITE_HIGH_WATER = 1 << 20
ER_DBACCESS_DENIED_ERROR = 1044
ER_BAD_DB_ERROR = 1049
CLIENT_WRITE_LOW_WATER = 256 << 10


class ListenerContext:
    """Per listener: the backend, the services and what every connection shares."""

    def __init__(self, backend: BackendSettings, services: ProxyServices, server_version: str) -> None:
        self.backend = backend
        self.services = services
        self.server_version = server_version
        self.keys = auth.server_key_pair()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loops: set[CommandLoop] = set()
        self.draining = False


class MySQLServer(asyncio.AbstractServer):
    """The listening server plus graceful drain: closing stops accepting and closes idle
    connections; ``wait_closed`` waits for connections busy with a statement to finish."""

    def __init__(self, server: asyncio.AbstractServer, ctx: ListenerContext) -> None:
        self._server = server
        self._ctx = ctx

    def close(self) -> None:
        self._ctx.draining = True
        self._server.close()
        for loop in list(self._ctx.loops):
            if loop.idle:
                loop.client.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()
        while self._ctx.tasks:
            for loop in list(self._ctx.loops):
                if loop.idle:
                    loop.client.close()
            await asyncio.wait(list(self._ctx.tasks), timeout=0.5)


class ClientProtocol(PacketProtocol):
    """A person's client connection; the work happens in a task started on connect."""

    def __init__(self, ctx: ListenerContext) -> None:
        super().__init__()
        self.ctx = ctx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.transport is not None:
            self.transport.set_write_buffer_limits(high=CLIENT_WRITE_HIGH_WATER, low=CLIENT_WRITE_LOW_WATER)
        if len(self.ctx.tasks) >= self.ctx.services.settings.server.max_connections:
            # Like the server itself: an ERR in place of the greeting (sequence id 0), then close.
            err = ErrPacket(errno=ErrorCode.ER_CON_COUNT_ERROR, message="Too many connections", sqlstate="08004")
            self.write(frame(0, err.encode())[0])
            self.close()
            return
        task = asyncio.get_running_loop().create_task(serve_connection(self.ctx, self), name="mysql-connection")
        self.ctx.tasks.add(task)
        task.add_done_callback(self.ctx.tasks.discard)


async def start_listener(backend: BackendSettings, services: ProxyServices) -> asyncio.AbstractServer:
    """Listen on ``backend.listen`` for MySQL clients of ``backend``."""
    version = await probe_backend_version(backend) or DEFAULT_SERVER_VERSION
    ctx = ListenerContext(backend, services, version)
    host, port = backend.listen_address
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientProtocol(ctx), host, port, reuse_address=True, backlog=1024)
    log.info("mysql listener ready", backend=backend.name, listen=backend.listen, server_version=version)
    return MySQLServer(server, ctx)


def _peer(proto: PacketProtocol) -> tuple[str, int]:
    peer: Any = proto.transport.get_extra_info("peername") if proto.transport else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "unknown", 0


def _attrs_for_backend(attrs: tuple[tuple[bytes, bytes], ...], person: str) -> tuple[tuple[bytes, bytes], ...]:
    """The client's connection attributes, plus who the person is (visible to the DBA on the backend)."""
    kept = [(k, v) for k, v in attrs if not k.startswith(b"sqlbastion")][:32]
    kept.append((b"sqlbastion_person", person.encode("utf-8")[:64]))
    return tuple(kept)


async def serve_connection(ctx: ListenerContext, client: PacketProtocol) -> None:
    """One client connection from greeting to close. Never raises."""
    backend = ctx.backend
    services = ctx.services
    runtime = services.runtime
    address, port = _peer(client)
    proxy_id = SESSIONS.next_proxy_id()
    hs = PersonHandshake(
        users=services.users,
        connection_id=proxy_id,
        server_version=ctx.server_version,
        client_address=address,
        tls_available=services.server_tls is not None,
        require_tls=backend.require_tls,
        keys=ctx.keys,
    )

    def fail_auth(reason: str) -> None:
        auth_failed(
            runtime, protocol="mysql", backend=backend.name, person=hs.person, client_address=address, reason=reason
        )

    session: Session | None = None
    backend_conn: BackendConnection | None = None
    close_reason = "client"
    try:
        client.write(hs.greeting())
        try:
            async with asyncio.timeout(services.settings.server.handshake_timeout_s):
                while True:
                    step = hs.receive_packet(await client.read_packet())
                    if step.action == "start_tls":
                        assert services.server_tls is not None  # SSL is only offered with a context
                        await client.start_tls(services.server_tls, server_side=True)
                        hs.after_tls()
                        continue
                    if step.action == "refused":
                        fail_auth(step.reason)  # recorded before the client can see the refusal
                        client.write(step.data)
                        return
                    if step.data:
                        client.write(step.data)
                    if step.action == "authenticated":
                        break
                refusal = runtime.engine.admit(hs.person, address, backend.name)
                if refusal is not None:
                    fail_auth(refusal)
                    client.write(hs.access_denied())
                    return
        except TimeoutError:
            fail_auth("timeout")
            client.write(hs.error(ErrorCode.ER_HANDSHAKE_ERROR, "sqlbastion: handshake timeout"))
            return
        except RemoteProtocolError as exc:
            fail_auth("protocol")
            log.warning("malformed handshake", client_address=address, error=exc.message)
            client.write(hs.error(exc.errno, exc.message, exc.sqlstate))
            return
        except ssl.SSLError as exc:
            fail_auth("protocol")
            log.warning("TLS handshake failed", client_address=address, error=str(exc))
            return
        resp = hs.response
        assert resp is not None  # authenticated implies a parsed response
        session = Session(
            runtime=runtime,
            backend=backend,
            person=hs.person,
            client=ClientInfo(
                address=address,
                port=port,
                protocol="mysql",
                tls=hs.tls,
                application_name=_application_name(resp.attrs),
            ),
        )
        database = backend.database
        if resp.database:
            database = resp.database.decode("utf-8", "replace")
            verdict = session.authorize(f"USE `{database.replace('`', '``')}`")
            if not verdict.allowed:
                client.write(hs.error(ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR, verdict.message, "42000"))
                session.finish(verdict, StatementOutcome())
                return
        try:
            backend_conn = await connect_backend(
                backend,
                wanted_capabilities=hs.capabilities,
                charset=resp.charset,
                database=database,
                attrs=_attrs_for_backend(resp.attrs, hs.person),
            )
            client.on_lost = None
            ok, _ = await backend_conn.simple_query(SETUP_SQL)
        except ssl.SSLError as exc:
            backend_error_metric(backend.name, "tls")
            log.error("backend TLS failed", backend=backend.name, error=str(exc))
            client.write(hs.error(ErrorCode.CR_CONN_HOST_ERROR, f"sqlbastion: backend '{backend.name}' TLS failed"))
            return
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            backend_error_metric(backend.name, "connect")
            log.warning("backend unreachable", backend=backend.name, error=str(exc) or type(exc).__name__)
            client.write(hs.error(ErrorCode.CR_CONN_HOST_ERROR, f"sqlbastion: backend '{backend.name}' is unreachable"))
            return
        except BackendAuthError as exc:
            if exc.errno in (ER_BAD_DB_ERROR, ER_DBACCESS_DENIED_ERROR) and database:
                # The person's database does not exist (or the service account may not use it): say so.
                client.write(hs.error(exc.errno, f"Unknown database '{database}'", "42000"))
                return
            backend_error_metric(backend.name, exc.kind)
            log.error("backend login failed", backend=backend.name, error=str(exc))
            client.write(
                hs.error(
                    ErrorCode.CR_CONN_HOST_ERROR,
                    f"sqlbastion: cannot log in to backend '{backend.name}'; the administrator has the details",
                )
            )
            return
        except (MySQLProtocolError, SecretUnavailable) as exc:
            kind = "protocol" if isinstance(exc, MySQLProtocolError) else "login"
            backend_error_metric(backend.name, kind)
            log.error("backend login failed", backend=backend.name, error=str(exc))
            client.write(
                hs.error(
                    ErrorCode.CR_CONN_HOST_ERROR,
                    f"sqlbastion: cannot log in to backend '{backend.name}'; the administrator has the details",
                )
            )
            return
        loop = CommandLoop(
            client=client,
            backend=backend_conn,
            session=session,
            client_capabilities=hs.capabilities,
            registry=SESSIONS,
            max_statement_bytes=services.settings.server.max_statement_bytes,
            idle_timeout_s=services.settings.server.idle_timeout_s,
            proxy_id=proxy_id,
            handshake=hs,
            handshake_timeout_s=services.settings.server.handshake_timeout_s,
        )
        await loop.refresh_state()
        if ok is not None:
            apply_state_changes(session, ResultSummary(status=ok.status))
        SESSIONS.register(
            person=hs.person, proxy_id=proxy_id, backend=backend.name, backend_id=backend_conn.connection_id
        )
        session.opened()
        status = backend_conn.login_ok.status if backend_conn.login_ok else int(ServerStatus.AUTOCOMMIT)
        client.write(hs.ok(status=status))
        ctx.loops.add(loop)
        try:
            if ctx.draining:
                return
            close_reason = await loop.run()
        finally:
            ctx.loops.discard(loop)
            SESSIONS.unregister(proxy_id)
            loop.session.closed(close_reason)  # COM_CHANGE_USER may have replaced the session
    except ConnectionClosed:
        close_reason = "client"
    except BackendLost as exc:
        backend_error_metric(backend.name, "lost")
        log.warning("backend connection lost", backend=backend.name, error=str(exc))
    except RemoteProtocolError as exc:
        log.warning("malformed packet; closing the session", client_address=address, error=exc.message)
        client.write(frame(1, _err(exc.errno, exc.message))[0])
    except MySQLProtocolError as exc:
        log.error("protocol error; closing the session", client_address=address, error=exc.message)
    except Exception:
        log.exception("connection failed", client_address=address)
    finally:
        if backend_conn is not None:
            backend_conn.close()
        with contextlib.suppress(Exception):
            client.close()


def backend_error_metric(backend: str, kind: str) -> None:
    METRICS.backend_errors.labels("mysql", backend, kind).inc()


def _err(errno: int, message: str) -> bytes:
    from sqlbastion.proxy.mysql.constants import SQLSTATE

    return ErrPacket(errno=errno, message=message, sqlstate=SQLSTATE.get(errno, "HY000")).encode()


def _application_name(attrs: tuple[tuple[bytes, bytes], ...]) -> str | None:
    values = dict(attrs)
    name = values.get(b"program_name") or values.get(b"_client_name")
    return name.decode("utf-8", "replace")[:64] if name else None
