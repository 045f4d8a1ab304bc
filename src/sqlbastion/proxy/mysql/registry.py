"""The process-wide registry of live sessions, for KILL and COM_PROCESS_KILL.

Every person's connection through sqlbastion shares the backend account, so a
plain ``KILL <id>`` would reach other persons' connections. The registry maps
each live session to its person, its client-facing connection id (the one in
sqlbastion's greeting, which clients use for ``KILL QUERY`` on Ctrl-C) and the
backend connection id (``CONNECTION_ID()``). A KILL is allowed only for ids of
the same person's sessions, and is translated to the backend id.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

__all__ = ["SESSIONS", "SessionRegistry"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RegisteredSession:
    person: str
    proxy_id: int
    backend: str
    backend_id: int


class SessionRegistry:
    """Thread-safe: proxies on several event loops (tests, benchmarks) may share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._by_proxy_id: dict[int, RegisteredSession] = {}

    def next_proxy_id(self) -> int:
        with self._lock:
            return next(self._ids) & 0xFFFFFFFF or next(self._ids)

    def register(self, *, person: str, proxy_id: int, backend: str, backend_id: int) -> None:
        with self._lock:
            self._by_proxy_id[proxy_id] = RegisteredSession(
                person=person, proxy_id=proxy_id, backend=backend, backend_id=backend_id
            )

    def unregister(self, proxy_id: int) -> None:
        with self._lock:
            self._by_proxy_id.pop(proxy_id, None)

    def resolve_kill(self, person: str, backend: str, target: int) -> int | None:
        """The backend connection id to kill for ``KILL target``, or None when it is not the person's.

        ``target`` may be a client-facing id or a backend id; the person's own
        client-facing ids are tried first.
        """
        with self._lock:
            own = [s for s in self._by_proxy_id.values() if s.person == person and s.backend == backend]
        for s in own:
            if s.proxy_id == target:
                return s.backend_id
        for s in own:
            if s.backend_id == target:
                return s.backend_id
        return None

    def own_backend_ids(self, person: str, backend: str) -> frozenset[int]:
        """The backend connection ids of the person's live sessions (what process lists show)."""
        with self._lock:
            return frozenset(
                s.backend_id for s in self._by_proxy_id.values() if s.person == person and s.backend == backend
            )

    def own_ids(self, person: str, backend: str) -> list[int]:
        with self._lock:
            return sorted(s.proxy_id for s in self._by_proxy_id.values() if s.person == person and s.backend == backend)


SESSIONS = SessionRegistry()
