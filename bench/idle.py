"""Many idle, logged-in client connections held open through a proxy, to measure its memory.

Each connection completes the MySQL handshake and authentication (so the
proxy holds a full session and its backend connection), then sits idle. The
opening is bounded in time: when the deadline passes or errors repeat, the
connections opened so far are what is measured, and the caller says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import asyncpg
import pymysql

from bench.workloads import Endpoint

__all__ = ["IdleConnections", "IdleFigures", "hold_idle_postgres", "open_idle_mysql"]


@dataclass(kw_only=True)
class IdleConnections:
    connections: list[pymysql.connections.Connection[pymysql.cursors.Cursor]]
    wanted: int
    first_error: str | None
    seconds: float

    def close(self) -> None:
        for c in self.connections:
            with contextlib.suppress(Exception):
                c.close()
        self.connections.clear()


def open_idle_mysql(ep: Endpoint, count: int, *, deadline_s: float = 180.0, workers: int = 8) -> IdleConnections:
    """Open up to ``count`` authenticated connections to ``ep``; stop early on repeated errors or the deadline."""
    started = time.monotonic()
    deadline = started + deadline_s
    lock = threading.Lock()
    opened: list[pymysql.connections.Connection[pymysql.cursors.Cursor]] = []
    errors: list[str] = []

    def one(_: int) -> None:
        if time.monotonic() > deadline or len(errors) >= 20:
            return
        try:
            conn = pymysql.connect(
                host=ep.host,
                port=ep.port,
                user=ep.user,
                password=ep.password,
                database=ep.database,
                connect_timeout=30,
                # PyMySQL otherwise builds an SSL context (loading the CA bundle) per connection.
                ssl_disabled=True,
            )
        except pymysql.MySQLError as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}"[:160])
            return
        with lock:
            opened.append(conn)

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        list(pool.map(one, range(count)))
    except BaseException:
        # Interrupted: do not open the thousands still queued, and close what is open.
        pool.shutdown(wait=True, cancel_futures=True)
        for c in opened:
            with contextlib.suppress(Exception):
                c.close()
        raise
    pool.shutdown(wait=True)
    return IdleConnections(
        connections=opened,
        wanted=count,
        first_error=errors[0] if errors else None,
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class IdleFigures:
    opened: int
    first_error: str | None
    seconds: float
    measured: float  # what ``measure`` returned while the connections were open


def hold_idle_postgres(
    ep: Endpoint,
    count: int,
    measure: Callable[[], float],
    *,
    deadline_s: float = 180.0,
    parallel: int = 16,
) -> IdleFigures:
    """Open up to ``count`` logged-in PostgreSQL connections to ``ep``, call ``measure`` while they are open, close."""

    async def hold() -> IdleFigures:
        started = time.monotonic()
        gate = asyncio.Semaphore(parallel)
        opened: list[asyncpg.Connection] = []
        errors: list[str] = []

        async def one() -> None:
            async with gate:
                if time.monotonic() - started > deadline_s or len(errors) >= 20:
                    return
                try:
                    conn = await asyncpg.connect(
                        host=ep.host,
                        port=ep.port,
                        user=ep.user,
                        password=ep.password,
                        database=ep.database,
                        ssl=False,
                        timeout=30,
                    )
                except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:160])
                    return
                opened.append(conn)

        await asyncio.gather(*(one() for _ in range(count)))
        seconds = time.monotonic() - started
        await asyncio.sleep(2)  # let the proxy settle: what an idle session keeps is what is measured
        try:
            measured = measure()
        finally:
            await asyncio.gather(*(c.close(timeout=10) for c in opened), return_exceptions=True)
        return IdleFigures(
            opened=len(opened), first_error=errors[0] if errors else None, seconds=seconds, measured=measured
        )

    return asyncio.run(hold())
