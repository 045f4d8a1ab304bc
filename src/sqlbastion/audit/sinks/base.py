"""What every audit sink implements, retry backoff, and the factory from settings.

Delivery contract (docs/audit.md, "Delivery"):

* ``deliver(records)`` returns once the destination has accepted every record
  (committed, acknowledged, written); it raises ``SinkError`` (or any
  ``Exception``) otherwise, and the pipeline retries the same records later.
* Delivery is at least once: after a crash or a retry a record may arrive
  twice. Every sink makes that harmless with the event id (a primary key, an
  ``_id``, a message id) or says how consumers deduplicate.
* ``confirmed(delivered_seq)`` lets a sink whose protocol has no
  application-level acknowledgement (plain TCP syslog) hold the cursor back
  until it is confident; the pipeline re-reads from the confirmed cursor after
  a failure.
* Sinks run on the pipeline's delivery thread, never on the proxy's loop.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlbastion.audit import jsontext
from sqlbastion.audit.spool import SpooledRecord
from sqlbastion.config import SinkSettings

__all__ = ["Backoff", "Sink", "SinkError", "build_sink", "event_json"]


class SinkError(Exception):
    """A delivery failed; the message says why (never with secrets or event contents)."""


def event_json(event: dict[str, Any]) -> str:
    """One event as compact JSON (the form JSONL, Kafka, Elasticsearch and Loki carry)."""
    return jsontext.dumps_str(event)


class Backoff:
    """Exponential backoff with full jitter (delay in [0, min(cap, base * 2**n)]), at least ``floor``."""

    def __init__(self, *, base: float = 0.1, cap: float = 30.0, floor: float = 0.05, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.floor = floor
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return max(self.floor, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


class Sink(ABC):
    """One destination for audit events, with its own cursor in the spool."""

    def __init__(self, *, name: str, required: bool = True, batch_size: int = 500) -> None:
        self.name = name
        self.required = required
        self.batch_size = max(1, batch_size)

    async def open(self) -> None:  # noqa: B027  # optional hook
        """Connect or create tables. Failures here are retried like deliveries."""

    @abstractmethod
    async def deliver(self, records: Sequence[SpooledRecord]) -> None: ...

    def confirmed(self, delivered_seq: int) -> int:
        """The highest seq the destination surely holds (default: all that was delivered)."""
        return delivered_seq

    async def reset(self) -> None:  # noqa: B027  # optional hook
        """Called after a failed delivery: drop connections so the next try starts clean."""

    async def close(self) -> None:  # noqa: B027  # optional hook
        """Release connections and files."""


def build_sink(settings: SinkSettings, resolve_path: Callable[[str], Path]) -> Sink:
    """The sink a ``[[audit.sinks]]`` entry describes."""
    name = settings.name or settings.type
    common: dict[str, Any] = {"name": name, "required": settings.required, "batch_size": settings.batch_size}
    if settings.type == "sqlite":
        from sqlbastion.audit.sinks.sqlite import SQLiteSink

        return SQLiteSink(
            path=resolve_path(settings.path or "audit.db"),
            retention_days=settings.retention_days,
            max_bytes=settings.max_bytes,
            **common,
        )
    if settings.type == "jsonl":
        from sqlbastion.audit.sinks.jsonl import JSONLSink

        return JSONLSink(
            path=resolve_path(settings.path or "audit.jsonl"),
            max_bytes=settings.max_bytes or (256 << 20),
            retention_days=settings.retention_days,
            **common,
        )
    if settings.type == "postgres":
        from sqlbastion.audit.sinks.postgres import PostgresSink

        if settings.dsn is None:
            raise SinkError(f"a {settings.type} sink needs dsn")
        return PostgresSink(dsn=settings.dsn, table=settings.table, **common)
    if settings.type == "syslog":
        from sqlbastion.audit.sinks.syslog import SyslogSink

        if settings.address is None:
            raise SinkError(f"a {settings.type} sink needs address")
        return SyslogSink(
            address=settings.address,
            tls=settings.tls,
            ca_file=str(resolve_path(settings.ca_file)) if settings.ca_file else None,
            app_name=settings.app_name,
            **common,
        )
    if settings.type == "kafka":
        from sqlbastion.audit.sinks.kafka import KafkaSink

        return KafkaSink(bootstrap_servers=list(settings.bootstrap_servers), topic=settings.topic, **common)
    from sqlbastion.audit.sinks.http import ElasticsearchSink, LokiSink

    if settings.url is None:
        raise SinkError(f"a {settings.type} sink needs url")
    if settings.type == "elasticsearch":
        return ElasticsearchSink(url=settings.url, index=settings.index, auth_header=settings.auth_header, **common)
    return LokiSink(url=settings.url, auth_header=settings.auth_header, **common)
