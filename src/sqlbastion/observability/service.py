"""Start and stop everything observability needs in the proxy process.

``proxy.server.serve`` calls ``start_observability`` once its services exist
and ``Observability.close`` when it stops. This applies the metrics settings,
creates the label sets known from the configuration, publishes the policy
version, starts the event-loop lag monitor and, when ``admin.enabled``, the
admin endpoint. SIGHUP (main thread only) reloads the policy through the
same ``PolicyReloader`` as ``POST /-/reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlbastion import logs
from sqlbastion.observability.admin import AdminEndpoint, PolicyReloader
from sqlbastion.observability.loop import monitor_event_loop_lag
from sqlbastion.observability.metrics import METRICS, Metrics
from sqlbastion.observability.readiness import default_checks, readiness

if TYPE_CHECKING:
    from sqlbastion.config import Settings
    from sqlbastion.proxy.services import ProxyServices

__all__ = ["Observability", "start_observability"]

log = logs.get_logger("observability")


def sink_names(settings: Settings) -> list[str]:
    """Audit sink names as the audit pipeline labels them: ``name``, or the type when unnamed."""
    # With no sink configured the pipeline delivers to its default SQLite sink, named "sqlite".
    return [s.name or s.type for s in settings.audit.sinks] or ["sqlite"]


@dataclass(kw_only=True)
class Observability:
    admin: AdminEndpoint | None = None
    reloader: PolicyReloader | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _sighup: bool = False

    async def close(self) -> None:
        if self._sighup:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.admin is not None:
            await self.admin.close()


async def start_observability(
    settings: Settings,
    services: ProxyServices,
    *,
    reload_policy: Callable[[], tuple[bool, str]] | None = None,
    metrics: Metrics = METRICS,
) -> Observability:
    """Raises ``OSError`` when the admin port cannot be bound, ``SecretUnavailable`` for a missing token."""
    admin_settings = settings.admin
    metrics.configure(
        person_labels=admin_settings.metrics_person_labels, person_cap=admin_settings.metrics_person_label_cap
    )
    metrics.prepare(
        backends=[(b.protocol, b.name) for b in settings.backends],
        sinks=sink_names(settings),
        max_connections=settings.server.max_connections,
        spool_capacity_bytes=settings.audit.max_spool_bytes,
    )
    runtime = services.runtime
    metrics.set_policy_version(runtime.engine.version)
    result = Observability()
    loop = asyncio.get_running_loop()
    result._tasks.append(loop.create_task(monitor_event_loop_lag(metrics=metrics), name="sqlbastion-loop-lag"))

    reload_fn = reload_policy or getattr(services, "reload_policy", None)
    if reload_fn is not None:
        result.reloader = PolicyReloader(reload_fn, version=lambda: runtime.engine.version, metrics=metrics)
        if threading.current_thread() is threading.main_thread():
            reloader = result.reloader

            async def reload_once() -> None:
                await reloader()

            def on_sighup() -> None:
                result._tasks[:] = [t for t in result._tasks if not t.done()]
                result._tasks.append(loop.create_task(reload_once(), name="sqlbastion-policy-reload"))

            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, on_sighup)
                result._sighup = True

    if admin_settings.enabled:
        admin = AdminEndpoint.from_settings(
            admin_settings,
            metrics=metrics,
            readiness=readiness(default_checks(settings, runtime)),
            reloader=result.reloader,
        )
        try:
            await admin.start()
        except BaseException:
            await result.close()
            raise
        result.admin = admin
    return result
