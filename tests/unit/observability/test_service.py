"""Start-up wiring: metrics prepared from the settings, admin endpoint, SIGHUP reload, loop lag."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

from sqlbastion.config import loads
from sqlbastion.devtools.servers import free_port
from sqlbastion.observability.loop import monitor_event_loop_lag
from sqlbastion.observability.metrics import Metrics
from sqlbastion.observability.service import sink_names, start_observability
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.users import UsersFile


def _settings(admin_port: int, *, enabled: bool = True, sinks: str = "") -> str:
    return f"""
[admin]
enabled = {"true" if enabled else "false"}
listen = "127.0.0.1:{admin_port}"
metrics_person_labels = true
metrics_person_label_cap = 3

[server]
max_connections = 77

{sinks}

[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:{free_port()}"
host = "127.0.0.1"
port = 1
user = "sqlbastion"
"""


def _services(text: str) -> ProxyServices:
    settings = loads(text)
    return ProxyServices(settings=settings, users=UsersFile(path=settings.resolve_path("users.toml")))


async def test_start_prepares_metrics_and_serves_the_admin_endpoint() -> None:
    port = free_port()
    services = _services(_settings(port))
    metrics = Metrics()
    obs = await start_observability(services.settings, services, metrics=metrics)
    try:
        assert obs.admin is not None
        get = metrics.registry.get_sample_value
        assert get("sqlbastion_client_connections_limit") == 77
        assert get("sqlbastion_auth_failures_total", {"protocol": "mysql", "backend": "core", "reason": "network"}) == 0
        assert get("sqlbastion_audit_sink_errors_total", {"sink": "sqlite"}) == 0  # the default sink
        assert get("sqlbastion_policy_info", {"version": "none"}) == 1
        assert metrics.person_labels
        assert metrics.person_cap == 3

        def fetch() -> bytes:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                body: bytes = resp.read()
                return body

        assert b"sqlbastion_client_connections_limit 77.0" in await asyncio.to_thread(fetch)
    finally:
        await obs.close()


async def test_admin_disabled_starts_no_endpoint() -> None:
    services = _services(_settings(free_port(), enabled=False))
    obs = await start_observability(services.settings, services, metrics=Metrics())
    try:
        assert obs.admin is None
        assert obs.reloader is None
    finally:
        await obs.close()


def test_sink_names_follow_the_pipeline() -> None:
    named = loads(
        _settings(
            free_port(),
            sinks='[[audit.sinks]]\ntype = "jsonl"\npath = "a.jsonl"\n\n'
            '[[audit.sinks]]\ntype = "jsonl"\nname = "second"\npath = "b.jsonl"\n',
        )
    )
    assert sink_names(named) == ["jsonl", "second"]


async def test_sighup_reloads_the_policy_once() -> None:
    calls: list[float] = []

    def reload() -> tuple[bool, str]:
        calls.append(time.monotonic())
        return True, "reloaded"

    services = _services(_settings(free_port(), enabled=False))
    metrics = Metrics()
    obs = await start_observability(services.settings, services, reload_policy=reload, metrics=metrics)
    try:
        assert obs._sighup, "no SIGHUP handler: sending the signal would end the test process"
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if metrics.registry.get_sample_value("sqlbastion_policy_reloads_total", {"result": "ok"}):
                break
            await asyncio.sleep(0.02)
        assert len(calls) == 1
        assert metrics.registry.get_sample_value("sqlbastion_policy_reloads_total", {"result": "ok"}) == 1
    finally:
        await obs.close()


async def test_event_loop_lag_is_measured() -> None:
    metrics = Metrics()
    task = asyncio.get_running_loop().create_task(
        monitor_event_loop_lag(interval_s=0.02, report_every_s=0.1, metrics=metrics)
    )
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251  # hold the loop, as a CPU-bound statement would
        seen = 0.0
        for _ in range(50):  # the gauge holds the worst lag of each 0.1 s period: sample it
            await asyncio.sleep(0.01)
            seen = max(seen, metrics.registry.get_sample_value("sqlbastion_event_loop_lag_seconds") or 0.0)
        assert seen >= 0.2
    finally:
        task.cancel()
