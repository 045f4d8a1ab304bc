"""Readiness checks for ``/readyz``: backends reachable, policy loaded, audit spool writable.

A check is an async callable returning a ``CheckResult``. The admin endpoint
runs all checks concurrently, each under a time limit, and answers 200 only
when every one passed: a check that raises or runs out of time counts as
failed (fail closed: a load balancer must not send people to a proxy that
cannot audit or reach its database).

The details are written for operators and never hold secrets: backend checks
name the host and port only, spool checks the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlbastion.config import BackendSettings, Settings
    from sqlbastion.proxy.session import Runtime

__all__ = [
    "MIN_SPOOL_FREE_BYTES",
    "CheckResult",
    "Readiness",
    "ReadinessCheck",
    "audit_accepting",
    "backend_reachable",
    "default_checks",
    "policy_loaded",
    "readiness",
    "run_checks",
    "spool_writable",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadinessCheck:
    """One named probe. ``probe`` returns whether it passed and a detail for operators."""

    name: str
    probe: Callable[[], Awaitable[tuple[bool, str]]]


Readiness = Callable[[], Awaitable[Sequence[CheckResult]]]
"""What the admin endpoint calls for ``/readyz``."""


async def run_checks(checks: Sequence[ReadinessCheck], *, timeout_s: float = 3.0) -> list[CheckResult]:
    """Run every check concurrently; a check that raises or times out is a failure."""

    async def one(check: ReadinessCheck) -> CheckResult:
        try:
            ok, detail = await asyncio.wait_for(check.probe(), timeout_s)
        except TimeoutError:
            return CheckResult(name=check.name, ok=False, detail=f"no answer within {timeout_s:g} s")
        except Exception as exc:  # a broken check must read as "not ready", never crash the endpoint
            return CheckResult(name=check.name, ok=False, detail=f"check failed: {type(exc).__name__}")
        return CheckResult(name=check.name, ok=ok, detail=detail)

    return list(await asyncio.gather(*(one(c) for c in checks)))


def readiness(checks: Sequence[ReadinessCheck], *, timeout_s: float = 3.0) -> Readiness:
    """The ``/readyz`` callback running ``checks``."""
    frozen = tuple(checks)

    async def ready() -> Sequence[CheckResult]:
        return await run_checks(frozen, timeout_s=timeout_s)

    return ready


def backend_reachable(backend: BackendSettings, *, timeout_s: float = 2.0) -> ReadinessCheck:
    """The backend accepts TCP connections (no login: that would spend a backend session per probe)."""
    where = f"{backend.host}:{backend.port}"

    async def probe() -> tuple[bool, str]:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(backend.host, backend.port), timeout_s)
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
            return False, f"{where} unreachable: {reason}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, f"{where} reachable"

    return ReadinessCheck(name=f"backend:{backend.name}", probe=probe)


MIN_SPOOL_FREE_BYTES = 16 << 20
"""Below this much free space the spool cannot take a batch for long: not ready."""


def spool_writable(directory: Path, *, min_free_bytes: int = MIN_SPOOL_FREE_BYTES) -> ReadinessCheck:
    """A file can be created (and removed) in the audit spool directory, and its file system has room.

    The probe file's name (``.readyz-*``) is never taken for a spool segment.
    """

    def try_write() -> tuple[bool, str]:
        if not directory.is_dir():
            return False, f"{directory} does not exist"
        try:
            fd, path = tempfile.mkstemp(prefix=".readyz-", dir=directory)
            os.close(fd)
            os.unlink(path)
            st = os.statvfs(directory)
        except OSError as exc:
            return False, f"{directory} is not writable: {exc.strerror}"
        free = st.f_bavail * st.f_frsize
        if free < min_free_bytes:
            return False, f"{directory} has only {free >> 20} MiB free"
        return True, f"{directory} writable, {free >> 20} MiB free"

    async def probe() -> tuple[bool, str]:
        return await asyncio.to_thread(try_write)

    return ReadinessCheck(name="audit_spool", probe=probe)


def audit_accepting(runtime: Runtime) -> ReadinessCheck:
    """The audit pipeline takes new events (false when the spool is full under fail_closed)."""

    async def probe() -> tuple[bool, str]:
        ok = runtime.audit.accepting()
        return ok, "accepting events" if ok else "refusing events"

    return ReadinessCheck(name="audit_pipeline", probe=probe)


def policy_loaded(runtime: Runtime, *, policy_files: Sequence[str]) -> ReadinessCheck:
    """A policy is in force: with policy files configured, the pass-through engine is not ready."""
    files = tuple(policy_files)

    async def probe() -> tuple[bool, str]:
        version = runtime.engine.version
        if files and version in ("", "none"):
            return False, "policy files are configured but no policy is loaded"
        return True, f"version {version}"

    return ReadinessCheck(name="policy", probe=probe)


def default_checks(settings: Settings, runtime: Runtime) -> list[ReadinessCheck]:
    """The checks ``proxy.server.serve`` gives the admin endpoint."""
    checks: list[ReadinessCheck] = [backend_reachable(b) for b in settings.backends]
    checks.append(policy_loaded(runtime, policy_files=settings.policy.files))
    checks.append(spool_writable(settings.resolve_path(settings.audit.spool_dir)))
    checks.append(audit_accepting(runtime))
    return checks
