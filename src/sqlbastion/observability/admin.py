"""The admin HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and ``POST /-/reload``.

Strategy: a small asyncio HTTP/1.1 server over the sans-IO reader in
``httpwire``, on its own port (``admin.listen``, loopback by default). Routing
(``AdminEndpoint.respond``) is a plain coroutine from a ``Request`` to a
``Response``, so it is tested without sockets; the connection loop only moves
bytes, enforces the time limits and closes the connection after any error.

Routes:

* ``GET /metrics`` — the Prometheus exposition of ``Metrics.registry``, in the
  text or OpenMetrics format the scraper asks for (``Accept``), gzip-compressed
  when it accepts that.
* ``GET /healthz`` — 200 while the process runs its event loop. No token: it
  says nothing but "alive", and liveness probes should not need a secret.
* ``GET /readyz`` — 200 when every readiness check passes, else 503; a JSON
  body names each check.
* ``POST /-/reload`` — reloads the policy through the ``PolicyReloader``; 200
  with the new version, or 422 with the reason the new policy was refused
  (the old one stays in force).

When ``admin.token`` is set, every route but ``/healthz`` needs the header
``Authorization: Bearer <token>`` (RFC 6750 §2.1), compared in constant time.
A token is mandatory when the endpoint listens beyond loopback (``config``
enforces that at load).

Bounds: request line, headers and body sizes (``httpwire.Limits``), a
deadline for each request once its first byte arrived (slow clients cannot
hold a connection open by trickling bytes), an idle timeout between requests,
a cap on requests per connection and on concurrent connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client.exposition import choose_encoder

from sqlbastion import logs
from sqlbastion.config import parse_listen
from sqlbastion.observability.httpwire import HttpError, Limits, Request, RequestReader, render_response
from sqlbastion.observability.metrics import METRICS, Metrics
from sqlbastion.observability.readiness import Readiness
from sqlbastion.settings_schema import SecretUnavailable

if TYPE_CHECKING:
    from sqlbastion.config import AdminSettings

__all__ = ["AdminEndpoint", "PolicyReloader", "Response"]

log = logs.get_logger("observability.admin")

_READ_CHUNK = 65536
# The connection's peer ("host:port"), for the audit event of an admin action.
_PEER: ContextVar[str | None] = ContextVar("sqlbastion_admin_peer", default=None)


@dataclass(frozen=True, kw_only=True, slots=True)
class Response:
    status: HTTPStatus
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: HTTPStatus, text: str, *headers: tuple[str, str]) -> Response:
    return Response(status=status, body=(text + "\n").encode("utf-8"), headers=headers)


def _json(status: HTTPStatus, value: object) -> Response:
    body = json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
    return Response(status=status, body=body, content_type="application/json")


class PolicyReloader:
    """Runs policy reloads one at a time and records them in the metrics.

    ``reload`` is the policy engine's function: it parses and validates the
    policy files and swaps the policy in atomically, returning ``(True, text)``
    or ``(False, why)`` (the old policy stays in force). It may block on file
    I/O and parsing, so it runs in a worker thread. ``version`` reads the
    version in force afterwards. Both the admin endpoint and SIGHUP go
    through one ``PolicyReloader``, so each reload is counted exactly once.
    """

    def __init__(
        self,
        reload: Callable[[], tuple[bool, str]],
        *,
        version: Callable[[], str] | None = None,
        metrics: Metrics = METRICS,
    ) -> None:
        self._reload = reload
        self._version = version
        self._metrics = metrics
        self._lock = asyncio.Lock()

    async def __call__(self) -> tuple[bool, str]:
        async with self._lock:
            try:
                ok, message = await asyncio.to_thread(self._reload)
            except Exception as exc:  # a reload bug must leave the old policy in force and say so
                log.error("policy reload raised", error_type=type(exc).__name__)
                ok, message = False, f"policy reload failed: {type(exc).__name__}"
            version = self._version() if (ok and self._version is not None) else None
            self._metrics.record_policy_reload(ok=ok, version=version)
            log.info("policy reload", ok=ok, message=message, version=version)
            return ok, message


@dataclass(kw_only=True)
class AdminEndpoint:
    """The admin HTTP server. ``start()`` binds, ``close()`` stops it and its connections."""

    listen: str
    token: str | None = None
    metrics: Metrics = field(default_factory=lambda: METRICS)
    readiness: Readiness | None = None
    reloader: PolicyReloader | None = None
    limits: Limits = field(default_factory=Limits)
    request_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_connections: int = 64
    max_requests_per_connection: int = 1000

    _server: asyncio.Server | None = field(default=None, init=False)
    _connections: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _route_table: dict[str, tuple[tuple[str, ...], bool, Callable[[Request], Awaitable[Response]]]] = field(
        default_factory=dict, init=False
    )
    _render_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    def __post_init__(self) -> None:
        self._route_table = {
            "/metrics": (("GET", "HEAD"), True, self._metrics_route),
            "/healthz": (("GET", "HEAD"), False, self._healthz),
            "/readyz": (("GET", "HEAD"), True, self._readyz),
            "/-/reload": (("POST",), True, self._reload),
        }

    @classmethod
    def from_settings(
        cls,
        settings: AdminSettings,
        *,
        metrics: Metrics = METRICS,
        readiness: Readiness | None = None,
        reloader: PolicyReloader | None = None,
    ) -> AdminEndpoint:
        """Raises ``SecretUnavailable`` when the token reference cannot be resolved."""
        token = settings.token.reveal() if settings.token is not None else None
        if token is not None and not token:
            raise SecretUnavailable(f"admin.token ({settings.token}) resolves to an empty string")
        return cls(listen=settings.listen, token=token, metrics=metrics, readiness=readiness, reloader=reloader)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        host, port = parse_listen(self.listen)
        self._server = await asyncio.start_server(self._accept, host, port, limit=_READ_CHUNK)
        log.info("admin endpoint listening", listen=self.listen, token_required=self.token is not None)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the admin endpoint is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)
            self._server = None

    # -- routing -------------------------------------------------------------

    async def respond(self, request: Request) -> Response:
        """Answer one request (no I/O beyond the readiness checks and the reload)."""
        route = self._route_table.get(request.path)
        if route is None:
            return _text(HTTPStatus.NOT_FOUND, "not found")
        methods, needs_token, handler = route
        if request.method not in methods:
            return _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", ("Allow", ", ".join(methods)))
        if needs_token and not self._authorized(request):
            return _text(
                HTTPStatus.UNAUTHORIZED, "a bearer token is required", ("WWW-Authenticate", 'Bearer realm="sqlbastion"')
            )
        return await handler(request)

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        values = [v for k, v in request.headers if k == "authorization"]
        if len(values) != 1:
            return False
        scheme, _, credentials = values[0].partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("utf-8"), self.token.encode("utf-8"))

    async def _metrics_route(self, request: Request) -> Response:
        encoder, content_type = choose_encoder(request.header("accept") or "")
        encodings = {t.split(";")[0].strip().lower() for t in (request.header("accept-encoding") or "").split(",")}
        compress = "gzip" in encodings

        def render() -> bytes:
            body = encoder(self.metrics.registry)
            return gzip.compress(body, compresslevel=1) if compress else body

        # Rendering thousands of series takes tens of milliseconds: in a worker
        # thread the proxy's event loop keeps running (it regains the GIL at
        # every switch interval) instead of stalling every connection for the
        # whole scrape. One rendering at a time.
        async with self._render_lock:
            body = await asyncio.to_thread(render)
        headers = (("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")) if compress else ()
        return Response(status=HTTPStatus.OK, body=body, content_type=content_type, headers=headers)

    async def _healthz(self, request: Request) -> Response:
        return _text(HTTPStatus.OK, "ok")

    async def _readyz(self, request: Request) -> Response:
        if self.readiness is None:
            return _json(HTTPStatus.OK, {"ready": True, "checks": {}})
        results = await self.readiness()
        ready = all(r.ok for r in results)
        body = {"ready": ready, "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in results}}
        return _json(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body)

    async def _reload(self, request: Request) -> Response:
        if self.reloader is None:
            return _json(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "message": "policy reload is not available"})
        from sqlbastion.audit.admin_events import ADMIN_ACTOR, AdminActor

        # Who asked goes with the reload into its worker thread (the context is copied), where the
        # admin_action audit event is written (audit/admin_events.py).
        actor = AdminActor(via="admin_endpoint", address=_PEER.get(), bearer_token=self.token is not None)
        reset = ADMIN_ACTOR.set(actor)
        try:
            ok, message = await self.reloader()
        finally:
            ADMIN_ACTOR.reset(reset)
        return _json(HTTPStatus.OK if ok else HTTPStatus.UNPROCESSABLE_ENTITY, {"ok": ok, "message": message})

    # -- connections ---------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer), name="sqlbastion-admin-connection")
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RequestReader(limits=self.limits)
        served = 0
        deadline: float | None = None  # when the request being received must be complete
        peer = writer.get_extra_info("peername")
        # Each connection is its own task, so the peer set here is the one its requests see.
        _PEER.set(f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else None)
        try:
            while served < self.max_requests_per_connection:
                request = parser.next_request()
                if request is None:
                    now = time.monotonic()
                    if parser.buffered and deadline is None:
                        deadline = now + self.request_timeout_s
                    timeout = (deadline - now) if deadline is not None else self.idle_timeout_s
                    if timeout <= 0:
                        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "request not received in time")
                    try:
                        data = await asyncio.wait_for(reader.read(_READ_CHUNK), timeout)
                    except TimeoutError:
                        if deadline is None:
                            return  # idle keep-alive connection: close quietly
                        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, "request not received in time") from None
                    if not data and not parser.buffered:
                        return
                    if deadline is None:
                        deadline = time.monotonic() + self.request_timeout_s
                    parser.feed(data)
                    continue
                deadline = None
                served += 1
                keep_alive = request.keep_alive and served < self.max_requests_per_connection
                response = await self._answer(request)
                await self._send(writer, response, keep_alive=keep_alive, head=request.method == "HEAD")
                if not keep_alive:
                    return
        except HttpError as exc:
            self.metrics.admin_requests.labels("other", str(exc.status.value)).inc()
            with contextlib.suppress(OSError, TimeoutError):
                await self._send(writer, _text(exc.status, exc.detail), keep_alive=False, head=False)
        except (OSError, TimeoutError):
            pass  # the peer went away or stopped reading; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, request: Request) -> Response:
        route = request.path if request.path in self._route_table else "other"
        try:
            response = await self.respond(request)
        except Exception as exc:  # one bad handler must not take the endpoint down
            log.error("admin request failed", route=route, error_type=type(exc).__name__)
            response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        self.metrics.admin_requests.labels(route, str(response.status.value)).inc()
        return response

    async def _send(self, writer: asyncio.StreamWriter, response: Response, *, keep_alive: bool, head: bool) -> None:
        writer.write(
            render_response(
                response.status,
                response.body,
                content_type=response.content_type,
                headers=response.headers,
                keep_alive=keep_alive,
                head=head,
            )
        )
        await asyncio.wait_for(writer.drain(), self.request_timeout_s)
