"""The asyncio process: listeners, TLS, limits, graceful drain, signals.

This is the only module (with the per-protocol connection glue) that awaits
anything. Each protocol package exposes ``start_listener(backend, services)``
returning an ``asyncio.AbstractServer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import threading
from collections.abc import Callable

import uvloop

from sqlbastion import logs
from sqlbastion.config import BackendSettings, ConfigError, Settings
from sqlbastion.proxy.services import ProxyServices, server_ssl_context
from sqlbastion.settings_schema import SecretUnavailable
from sqlbastion.users import UsersFile, UsersFileError

log = logs.get_logger("proxy.server")

_LISTENER_MODULES = {
    "mysql": "sqlbastion.proxy.mysql.listener",
    "postgres": "sqlbastion.proxy.postgres.listener",
}


async def start_backend_listener(backend: BackendSettings, services: ProxyServices) -> asyncio.AbstractServer:
    module = importlib.import_module(_LISTENER_MODULES[backend.protocol])
    server: asyncio.AbstractServer = await module.start_listener(backend, services)
    return server


def build_services(settings: Settings) -> ProxyServices:
    from sqlbastion.app import build_runtime, policy_reloader

    users = UsersFile.load(settings.resolve_path(settings.users_file), missing_ok=True)
    runtime = build_runtime(settings)
    services = ProxyServices(
        settings=settings,
        users=users,
        runtime=runtime,
        server_tls=server_ssl_context(settings),
        reload_policy=policy_reloader(runtime),
    )
    from sqlbastion.app import audit_admin_actions

    audit_admin_actions(services)
    return services


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    services: ProxyServices | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run every configured listener until ``stop`` is set (or SIGTERM/SIGINT in the main thread).

    ``ready`` is called once every listener is accepting connections.
    """
    services = services or build_services(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    from sqlbastion.app import start_policy_tasks
    from sqlbastion.audit.pipeline import AuditPipeline
    from sqlbastion.observability.service import start_observability

    # The audit pipeline starts before any listener and drains after the last
    # one closed; whatever fails during start-up, what was started is stopped.
    audit = services.runtime.audit if isinstance(services.runtime.audit, AuditPipeline) else None
    policy_tasks: list[asyncio.Task[None]] = []
    servers: list[asyncio.AbstractServer] = []
    observability = None
    if audit is not None:
        await audit.start()
    try:
        # Catalogs load before the first listener so SELECT * and views resolve from the start.
        policy_tasks = await start_policy_tasks(services.runtime)
        observability = await start_observability(settings, services)
        for backend in settings.backends:
            servers.append(await start_backend_listener(backend, services))
            log.info("listening", backend=backend.name, protocol=backend.protocol, listen=backend.listen)
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        if observability is not None:
            await observability.close()
        log.info("stopping", drain_timeout_s=settings.server.drain_timeout_s)
        for s in servers:
            s.close()
        for s in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.wait_closed(), settings.server.drain_timeout_s)
        for task in policy_tasks:
            task.cancel()
        if audit is not None:
            await audit.stop()


def run(settings: Settings) -> int:
    """Entry point for ``sqlbastion serve``. Returns the process exit code."""
    logs.configure(settings.logging)
    try:
        uvloop.run(serve(settings))
    except (UsersFileError, OSError, SecretUnavailable, ConfigError) as exc:
        log.error("cannot start", error=str(exc))
        return 1
    return 0
