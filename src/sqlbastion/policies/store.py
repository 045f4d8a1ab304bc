"""The policy in force, swapped atomically on reload.

``PolicyStore`` is what the runtime holds as its ``DecisionEngine``: it
delegates to the current ``PolicyEngine`` and replaces it whole on
``reload()``. A reload reads and validates every policy file first; only a
policy that loads completely (persons, roles, rules and the masking part)
replaces the old one, so an invalid edit leaves the proxy on the previous
version and says why. Each reload emits a ``policy_reloaded`` audit event and
sets the policy-version gauge (the admin endpoint's ``PolicyReloader`` counts
attempts, for SIGHUP and ``POST /-/reload`` alike).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlbastion import logs
from sqlbastion.config import ConfigError, Settings
from sqlbastion.observability.metrics import METRICS
from sqlbastion.policies.analyze import AnalysisLimits
from sqlbastion.policies.catalog import CatalogStore
from sqlbastion.policies.engine import PolicyEngine
from sqlbastion.policies.loader import duty_warnings, load_policy_files
from sqlbastion.policies.model import Decision, PolicySet, StatementContext

if TYPE_CHECKING:
    from sqlbastion.masking.plan import MaskingPlanner
    from sqlbastion.masking.policy import MaskingPolicy
    from sqlbastion.proxy.session import AuditHook

log = logs.get_logger("policies.store")


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedEngine:
    engine: PolicyEngine
    masking: MaskingPolicy
    warnings: tuple[str, ...]


def load_engine(settings: Settings, catalogs: CatalogStore | None = None) -> LoadedEngine:
    """Read, validate and compile the configured policy files. Raises ConfigError."""
    from sqlbastion.masking.policy import merge_masking_policies, parse_masking_policy

    paths = [settings.resolve_path(f) for f in settings.policy.files]
    loaded = load_policy_files(paths)
    masking = merge_masking_policies([parse_masking_policy(data, file=file) for file, data in loaded.documents])
    known = {b.name for b in settings.backends}
    warnings = list(duty_warnings(loaded.policy))
    warnings.extend(_unknown_backends(loaded.policy, known))
    engine = PolicyEngine(
        loaded.policy,
        masking=masking,
        catalogs=catalogs.get if catalogs is not None else None,
        limits=AnalysisLimits(
            max_statement_bytes=settings.server.max_statement_bytes,
            max_statements=settings.server.max_statements_per_message,
        ),
        cache_entries=settings.policy.decision_cache_entries,
        on_ddl=catalogs.note_ddl if catalogs is not None else None,
    )
    return LoadedEngine(engine=engine, masking=masking, warnings=tuple(warnings))


def _unknown_backends(policy: PolicySet, known: set[str]) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for role in policy.roles:
        for g in role.grants:
            for p in g.objects:
                if p.backend != "*" and "*" not in p.backend and p.backend not in known and p.text not in seen:
                    seen.add(p.text)
                    out.append(f"role {role.name!r} grants on {p.text}, but no backend is called {p.backend!r}")
    return out


class PolicyStore:
    """A DecisionEngine whose policy can be replaced while the proxy runs."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalogs: CatalogStore | None = None,
        planner: MaskingPlanner | None = None,
        audit: AuditHook | None = None,
        loaded: LoadedEngine | None = None,
    ) -> None:
        self.settings = settings
        self.catalogs = catalogs
        self.planner = planner
        self.audit = audit
        self._lock = threading.Lock()
        self._sessions: dict[str, int] = {}  # open sessions per person (max_sessions), kept across reloads
        self._sessions_lock = threading.Lock()
        current = loaded or load_engine(settings, catalogs)
        self._engine = current.engine
        self.warnings = current.warnings
        METRICS.set_policy_version(self._engine.version)

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    # -- DecisionEngine ------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._engine.version

    def roles_of(self, person: str) -> tuple[str, ...]:
        return self._engine.roles_of(person)

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        refusal = self._engine.admit(person, client_address, backend)
        if refusal is not None:
            return refusal
        policy = self._engine.person(person)
        if policy is not None and policy.max_sessions is not None:
            with self._sessions_lock:
                if self._sessions.get(person, 0) >= policy.max_sessions:
                    return "max_sessions"
        return None

    def session_opened(self, person: str) -> None:
        with self._sessions_lock:
            self._sessions[person] = self._sessions.get(person, 0) + 1

    def session_closed(self, person: str) -> None:
        with self._sessions_lock:
            left = self._sessions.get(person, 0) - 1
            if left > 0:
                self._sessions[person] = left
            else:
                self._sessions.pop(person, None)

    def sessions_of(self, person: str) -> int:
        with self._sessions_lock:
            return self._sessions.get(person, 0)

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        return self._engine.decide(sql, ctx)

    def max_rows(self, person: str) -> int | None:
        return self._engine.max_rows(person)

    async def start_background(self) -> list[asyncio.Task[None]]:
        """Load every catalog once, then start the refreshers (inside the running event loop)."""
        if self.catalogs is None:
            return []
        await self.catalogs.load_all()
        return self.catalogs.start()

    # -- reload ----------------------------------------------------------------------

    def reload(self, settings: Settings | None = None) -> tuple[bool, str]:
        """Load the policy files again; swap only if valid. Returns (ok, message)."""
        with self._lock:
            old = self._engine.version
            settings = settings or self.settings
            try:
                loaded = load_engine(settings, self.catalogs)
                if self.planner is not None:
                    self.planner.replace_policy(loaded.masking)
            except (ConfigError, ValueError) as exc:
                log.error("policy reload rejected; the previous policy stays", error=str(exc), version=old)
                self._emit(old, "rejected", str(exc))
                return False, str(exc)
            except Exception as exc:  # a key that cannot be resolved, a bug: never drop the old policy
                log.error("policy reload failed; the previous policy stays", error=type(exc).__name__, version=old)
                self._emit(old, "rejected", type(exc).__name__)
                return False, f"{type(exc).__name__}: {exc}"
            self._engine = loaded.engine
            self.settings = settings
            self.warnings = loaded.warnings
            # The reload counter and the version gauge are the caller's (observability's
            # PolicyReloader counts every attempt exactly once).
            METRICS.set_policy_version(loaded.engine.version)
            log.info("policy reloaded", version=loaded.engine.version, previous=old, warnings=len(loaded.warnings))
            self._emit(loaded.engine.version, "ok", "", previous=old)
            return True, loaded.engine.version

    def _emit(self, version: str, result: str, error: str, previous: str | None = None) -> None:
        if self.audit is None:
            return
        from sqlbastion.proxy.session import new_event_id

        # Keys follow the audit schema (docs/audit.md): details old_version / new_version /
        # result / files / message; policy_version is the version in force afterwards.
        event: dict[str, object] = {
            "kind": "policy_reloaded",
            "event_id": new_event_id(),
            "version": version,
            "policy_version": version,
            "result": result,
            "old_version": previous if previous is not None else version,
            "new_version": version,
            "files": [str(f) for f in self.settings.policy.files],
        }
        if error:
            event["message"] = error[:500]
        self.audit.emit(event)


def reload_callback(store: PolicyStore) -> Callable[[], None]:
    """A no-argument callable for signal handlers and the admin endpoint."""

    def _reload() -> None:
        store.reload()

    return _reload
