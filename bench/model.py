"""What a benchmark run is made of: its options, its workloads, the figures it collects, what it started."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import services
from bench.report import Figure, Target
from bench.workloads import Endpoint
from sqlbastion.devtools.servers import ServerInfo

__all__ = [
    "GROUPS",
    "MASK_SQL",
    "PG_IDLE_MAX",
    "ROOT",
    "Collector",
    "Environment",
    "Options",
    "Workload",
    "say",
]

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("postgres", "mysql", "masking", "connections", "policy", "audit")
# Each PostgreSQL client session holds a backend session; the test server allows 500.
PG_IDLE_MAX = 400
MASK_SQL = f"SELECT id, mobile, id_card, city FROM {services.MASK_TABLE}"


def say(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


@dataclass(frozen=True, kw_only=True)
class Options:
    duration: int
    rounds: int
    warmup: int
    clients: int
    scale: int
    mask_rows: int
    connections: int
    groups: frozenset[str]
    profile: bool
    record: Path | None
    keep: bool
    bare: bool = False


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One row of the table measured in rounds: a client tool against each path of one protocol."""

    key: str
    name: str
    unit: str
    protocol: str  # "mysql" or "postgres": which endpoints it runs against
    paths: tuple[str, ...]
    measure: Callable[[Endpoint], float]
    target: Target | None = None
    baseline: str | None = None
    # Workloads of time (seconds) get no warm-up of their own beyond the first round's caches.
    warm: Callable[[Endpoint], object] | None = None


@dataclass
class Collector:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, path: str, value: float) -> None:
        self.samples.setdefault((key, path), []).append(value)

    def fail(self, key: str, path: str, reason: str) -> None:
        self.reasons.setdefault((key, path), reason)

    def failed(self, key: str, path: str) -> bool:
        return (key, path) in self.reasons

    def figure(self, key: str, path: str) -> Figure:
        if (key, path) in self.reasons:
            return Figure(path=path, reason=self.reasons[key, path])
        values = tuple(self.samples.get((key, path), ()))
        return Figure(path=path, samples=values, reason=None if values else "not measured")


@dataclass
class Environment:
    """What the run started: servers, and per protocol each path's endpoint or the reason it has none."""

    run_dir: Path
    servers: dict[str, ServerInfo] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Endpoint | str]] = field(default_factory=dict)
    proxies: dict[str, services.Started] = field(default_factory=dict)
    server_versions: dict[str, str] = field(default_factory=dict)

    pids: dict[tuple[str, str], int] = field(default_factory=dict)

    def endpoint(self, protocol: str, path: str) -> Endpoint | str:
        return self.endpoints.get(protocol, {}).get(path, f"no {protocol} server")

    def add(self, protocol: str, started: services.Started) -> None:
        """A middlebox path is up: its endpoint for the clients, its process for CPU accounting."""
        self.endpoints.setdefault(protocol, {})[started.endpoint.path] = started.endpoint
        self.pids[protocol, started.endpoint.path] = started.proc.pid
