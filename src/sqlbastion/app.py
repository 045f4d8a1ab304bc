"""Composition: builds the runtime (policy engine, masking, audit) from settings.

This is the one place that knows which implementation backs each hook of
``proxy.session.Runtime``; the CLI, the server and the tests go through it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlbastion.config import ConfigError, Settings
from sqlbastion.masking.plan import planner_from_settings
from sqlbastion.proxy.session import DecisionEngine, PassThroughEngine, Runtime

if TYPE_CHECKING:
    from sqlbastion.proxy.services import ProxyServices


def validate_policy(settings: Settings) -> list[str]:
    """Validate the policy files a configuration names; returns warnings (duty separation …).

    Raises ConfigError naming the file, the key and what is expected.
    """
    from sqlbastion.policies.store import load_engine

    for f in settings.policy.files:
        path = settings.resolve_path(f)
        if not path.exists():
            raise ConfigError(settings.source, "policy.files", f"policy file {path} does not exist")
    if not settings.policy.files:
        _require_policy(settings)
        return ["no policy files: every statement is allowed unchecked (policy.allow_unchecked = true)"]
    return list(load_engine(settings).warnings)


def _require_policy(settings: Settings) -> None:
    """Fail closed: a bastion with nothing to check against does not start by accident."""
    if not settings.policy.allow_unchecked:
        raise ConfigError(
            settings.source,
            "policy.files",
            "no policy files: every statement would be allowed unchecked; list the policy files "
            "(docs/policy.md), or set policy.allow_unchecked = true for a throwaway lab",
        )


def build_engine(settings: Settings, *, masking: Any = None, audit: Any = None) -> DecisionEngine:
    """The policy engine for ``serve`` and ``check``: a reloadable PolicyStore over the policy files.

    With no policy files configured this is a configuration error, unless
    ``policy.allow_unchecked`` says explicitly that everything may be allowed
    unchecked (a throwaway lab); then the engine allows everything, says so in
    every decision's reason, and ``config validate`` warns about it.
    """
    if not settings.policy.files:
        _require_policy(settings)
        return PassThroughEngine()
    from sqlbastion.policies.catalog import CatalogStore
    from sqlbastion.policies.store import PolicyStore

    planner = masking if hasattr(masking, "replace_policy") else None
    return PolicyStore(settings, catalogs=CatalogStore(settings.backends), planner=planner, audit=audit)


def policy_reloader(runtime: Runtime) -> Callable[[], tuple[bool, str]] | None:
    """The runtime's policy reload function (for ``ProxyServices.reload_policy``), if reloadable."""
    reload = getattr(runtime.engine, "reload", None)
    if reload is None:
        return None

    def _reload() -> tuple[bool, str]:
        ok, message = reload()
        return bool(ok), str(message)

    return _reload


def audit_admin_actions(services: ProxyServices) -> None:
    """Record users-file changes since the last run, and make every reload (admin endpoint, SIGHUP)
    reread the users file and write ``admin_action`` audit events (audit/admin_events.py)."""
    from sqlbastion.audit.admin_events import audited_reload, record_users_at_start
    from sqlbastion.audit.pipeline import spool_directory

    record = record_users_at_start(services, spool_directory(services.settings))
    if services.reload_policy is not None:
        services.reload_policy = audited_reload(services, services.reload_policy, record)


async def start_policy_tasks(runtime: Runtime) -> list[asyncio.Task[None]]:
    """Load the backends' catalogs once and start their refreshers; call inside the running loop."""
    start = getattr(runtime.engine, "start_background", None)
    if start is None:
        return []
    tasks: list[asyncio.Task[None]] = await start()
    return tasks


def build_runtime(settings: Settings) -> Runtime:
    """The runtime for ``serve``: policy engine, masking and audit from the settings."""
    from sqlbastion.audit.pipeline import AuditPipeline

    # The audit pipeline opens nothing until serve() starts it.
    masking = planner_from_settings(settings)
    audit = AuditPipeline.from_settings(settings)
    return Runtime(
        engine=build_engine(settings, masking=masking, audit=audit),
        masking=masking,
        audit=audit,
    )


def run_check(args: argparse.Namespace) -> int:
    """``sqlbastion check``: dry-run statements for a person (exit 0 allow, 1 block, 2 review, 3 error).

    The catalog is loaded from the backend when it can be reached (so ``SELECT *``
    and views resolve as in the proxy); otherwise the check runs without it and says so.
    """
    from sqlbastion.policies.check import run_check as _run

    return _run(args)
