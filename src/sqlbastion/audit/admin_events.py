"""``admin_action`` audit events: reloads and users-file changes, with who asked.

Every change to what sqlbastion enforces that does not come from a client
statement leaves an ``admin_action`` event (schema: ``details.action``,
``target``, ``result``, ``actor``; docs/audit.md):

* ``POST /-/reload`` on the admin endpoint: ``action = "reload"``, ``actor`` the
  peer's address, ``via = "admin_endpoint"`` and ``bearer_token`` (whether the
  request had to present the admin token and did), ``result`` ``ok`` or
  ``rejected`` with the policy's message.
* SIGHUP: the same with ``via = "sighup"``. ``serve`` reloads on these two paths
  only, so a reload that carries no actor is the SIGHUP handler's.
* A load or reload that finds the users file changed since the last one
  (``action = "users_changed"``): the persons added, removed, and whose
  verifiers or disabled flag changed — names only, never a verifier or any
  other secret. The comparison keeps one SHA-256 digest per person in
  ``<spool_dir>/users.digest`` (0600), so changes made while sqlbastion was
  stopped are recorded at the next start (``via = "start"``).

A reload also reads the users file again, so persons added or removed take effect
for new connections (sessions already open keep going). A users file that no
longer parses is refused: the persons in force stay, and the event says
``result = "rejected"``.

The actor travels from the admin endpoint to the reload thread in a context
variable (``ADMIN_ACTOR``): ``asyncio.to_thread`` copies the context.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlbastion import logs

if TYPE_CHECKING:
    from sqlbastion.proxy.services import ProxyServices
    from sqlbastion.users import UsersFile

__all__ = [
    "ADMIN_ACTOR",
    "AdminActor",
    "admin_action_event",
    "audited_reload",
    "record_users_at_start",
    "users_changes",
    "users_digest",
]

log = logs.get_logger("audit.admin")

DIGEST_FILE = "users.digest"
# Names listed per change kind in one event; the counts are always complete.
_MAX_NAMES = 200


@dataclass(frozen=True, kw_only=True, slots=True)
class AdminActor:
    """Who asked for an admin action."""

    via: str  # "admin_endpoint", "sighup", "start"
    address: str | None = None  # the admin endpoint peer, "host:port"
    bearer_token: bool = False  # the request presented the configured admin token

    def describe(self) -> str:
        if self.via == "admin_endpoint":
            return f"{self.address or 'unknown peer'} ({'bearer token' if self.bearer_token else 'no token'})"
        return {"sighup": "signal SIGHUP", "start": "sqlbastion start"}.get(self.via, self.via)


ADMIN_ACTOR: ContextVar[AdminActor | None] = ContextVar("sqlbastion_admin_actor", default=None)
_SIGHUP = AdminActor(via="sighup")


def admin_action_event(
    *, action: str, target: str, result: str, actor: AdminActor, details: dict[str, object] | None = None
) -> dict[str, object]:
    from sqlbastion.proxy.session import new_event_id

    event: dict[str, object] = {
        "kind": "admin_action",
        "event_id": new_event_id(),
        "client_address": actor.address,
        "action": action,
        "target": target,
        "result": result,
        "actor": actor.describe(),
        "details": {"via": actor.via, "bearer_token": actor.bearer_token, **(details or {})},
    }
    return event


def users_digest(users: UsersFile) -> dict[str, str]:
    """One digest per person over its verifiers and disabled flag: tells a change, reveals nothing."""
    from sqlbastion.users import METHODS

    out: dict[str, str] = {}
    for name, creds in users.persons.items():
        h = hashlib.sha256(b"sqlbastion.users.digest\0")
        for method in METHODS:
            h.update(method.encode() + b"\0" + str(getattr(creds, method)).encode() + b"\0")
        h.update(b"disabled" if creds.disabled else b"enabled")
        out[name] = h.hexdigest()
    return out


def users_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """Names added, removed and changed (verifier or disabled flag); empty lists when nothing changed."""
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "verifier_changed": sorted(n for n in set(before) & set(after) if before[n] != after[n]),
    }


class _UsersRecord:
    """The digests of the users file as last recorded (in memory and in the spool directory)."""

    def __init__(self, spool_dir: Path) -> None:
        self.path = spool_dir / DIGEST_FILE
        self.known: dict[str, str] | None = None

    def load(self) -> dict[str, str] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return None
        return {str(k): v for k, v in data.items()}

    def save(self, digest: dict[str, str]) -> None:
        self.known = digest
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(digest, f, sort_keys=True)
            os.replace(tmp, self.path)


def _record_users(services: ProxyServices, record: _UsersRecord, users: UsersFile, actor: AdminActor) -> None:
    digest = users_digest(users)
    before = record.known if record.known is not None else record.load()
    if before is None:
        record.save(digest)  # the first start with this spool: nothing to compare with
        return
    changes = users_changes(before, digest)
    if any(changes.values()):
        details: dict[str, object] = {k: v[:_MAX_NAMES] for k, v in changes.items()}
        details.update({f"{k}_count": len(v) for k, v in changes.items()})
        services.runtime.audit.emit(
            admin_action_event(
                action="users_changed", target=str(users.path), result="ok", actor=actor, details=details
            )
        )
        log.info("users file changed", **{k: len(v) for k, v in changes.items()})
    record.save(digest)


def record_users_at_start(services: ProxyServices, spool_dir: Path) -> _UsersRecord:
    """At start: an event if the users file changed since the last run. Returns the record for reloads."""
    record = _UsersRecord(spool_dir)
    _record_users(services, record, services.users, AdminActor(via="start"))
    return record


def audited_reload(
    services: ProxyServices, reload: Callable[[], tuple[bool, str]], record: _UsersRecord
) -> Callable[[], tuple[bool, str]]:
    """``reload`` (the policy's) that also rereads the users file and records both as admin actions."""
    from sqlbastion.users import UsersFile, UsersFileError

    def _reload() -> tuple[bool, str]:
        actor = ADMIN_ACTOR.get() or _SIGHUP
        ok, message = reload()
        users_path = services.users.path
        users_result = "ok"
        try:
            users = UsersFile.load(users_path, missing_ok=True)
        except UsersFileError as exc:
            users_result = "rejected"
            log.error("users file reload rejected; the persons in force stay", error=str(exc))
            message = f"{message}; users file not reloaded: {exc}"
            ok = False
        else:
            _record_users(services, record, users, actor)
            services.users = users
        emit = services.runtime.audit.emit
        emit(
            admin_action_event(
                action="reload",
                target="policy and users file",
                result="ok" if ok else "rejected",
                actor=actor,
                details={"message": message[:500], "users_result": users_result},
            )
        )
        return ok, message

    return _reload
