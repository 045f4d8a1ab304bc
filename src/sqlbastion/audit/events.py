"""The audit event schema (version 1), documented in docs/audit-schema.json and docs/audit.md.

The data path emits plain dicts (``Session.finish``, ``Session.opened/closed``,
``auth_failed`` in proxy/session.py); the pipeline's writer thread turns each
into an ``AuditEvent`` here, off the data path. Invariants:

* Every event has ``schema_version``, a time-ordered unique ``event_id``
  (UUIDv7, the one the data path gave, so a client's "Audit ref" finds it) and
  ``ts``: the UTC emit time with microseconds, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``.
* Every value a peer could influence is bounded: strings are cut at
  ``MAX_STRING`` characters, lists at ``MAX_ITEMS`` items.
* Statement text is never copied as given: ``redact.statement_text`` decides
  what may be kept. Backend error text is reduced to its code, because error
  messages echo values (a duplicate key, a failed cast).
* Fields are added, never renamed or retyped, within one schema version.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from sqlbastion.audit.redact import statement_text

__all__ = ["KINDS", "SCHEMA_VERSION", "AuditEvent", "EventBuilder", "format_ts"]

SCHEMA_VERSION = 1
Kind = Literal[
    "connection_opened",
    "connection_closed",
    "auth_succeeded",
    "auth_failed",
    "statement",
    "policy_reloaded",
    "alert",
    "admin_action",
]
KINDS: tuple[str, ...] = (
    "connection_opened",
    "connection_closed",
    "auth_succeeded",
    "auth_failed",
    "statement",
    "policy_reloaded",
    "alert",
    "admin_action",
)
MAX_STRING = 1024
MAX_ITEMS = 512
# A backend error's code, the only part kept: "SQLSTATE 42P01" (PostgreSQL),
# "1146 (42S02)" (MySQL errno and SQLSTATE), a bare SQLSTATE, or a short lowercase
# description the proxy wrote itself ("backend connection lost").
_ERROR_CODES = (
    re.compile(r"^\s*(SQLSTATE [0-9A-Z]{5})\b"),
    re.compile(r"^\s*(\d{1,5}(?: \([0-9A-Z]{5}\))?)(?![\w(])"),
    re.compile(r"^\s*([0-9A-Z]{5})\b"),
    re.compile(r"^\s*([a-z][a-z _]{0,39})$"),
)


def format_ts(ts_ns: int) -> str:
    """UTC RFC 3339 with microseconds and a ``Z``."""
    sec, rem = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{rem // 1000:06d}Z"


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskApplied:
    column: str
    function: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditEvent:
    """One audit event. Kind-specific fields are None (or empty) for other kinds."""

    schema_version: int = SCHEMA_VERSION
    event_id: str
    ts: str
    kind: Kind
    session_id: str | None = None
    person: str | None = None
    roles: tuple[str, ...] = ()
    client_address: str | None = None
    application_name: str | None = None
    protocol: str | None = None
    tls: bool | None = None
    backend: str | None = None
    database: str | None = None
    # statement
    statement_types: tuple[str, ...] = ()
    fingerprint: str | None = None
    statement_text: str | None = None
    statement_text_mode: Literal["redacted", "raw", "withheld", "none"] = "none"
    objects_read: tuple[str, ...] = ()
    objects_written: tuple[str, ...] = ()
    columns_read: tuple[str, ...] = ()
    sensitive_columns: tuple[str, ...] = ()
    masks_applied: tuple[MaskApplied, ...] = ()
    decision: str | None = None
    rule_ids: tuple[str, ...] = ()
    reason: str | None = None
    rows: int | None = None
    affected: int | None = None
    bytes_sent: int | None = None
    backend_error: str | None = None
    proxy_us: int | None = None
    backend_us: int | None = None
    masked_values: int | None = None
    policy_version: str | None = None
    # connection_closed
    statements: int | None = None
    # auth_failed, connection_closed: why
    # policy_reloaded / alert / admin_action: what happened, kind-specific keys
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (docs/audit-schema.json)."""
        out: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if name == "masks_applied":
                value = [{"column": m.column, "function": m.function} for m in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        """Read an event back (sinks, CLI). Unknown keys (a newer minor schema, chain fields) are ignored."""
        kwargs: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            if name not in data:
                continue
            value = data[name]
            if name == "masks_applied":
                value = tuple(MaskApplied(column=str(m["column"]), function=str(m["function"])) for m in value or ())
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in fields(AuditEvent))


def _s(value: object) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_STRING else text[:MAX_STRING] + "…"


def _strs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    items = list(value)[:MAX_ITEMS] if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    return tuple(t for t in (_s(v) for v in items) if t is not None)


def _i(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (str, float)):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _error_code(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = str(value)
    for pattern in _ERROR_CODES:
        m = pattern.match(text)
        if m:
            return m.group(1)
    return "error"


def _masks(value: object) -> tuple[MaskApplied, ...]:
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        return ()
    out = []
    for item in list(value)[:MAX_ITEMS]:
        if isinstance(item, Mapping):
            column, function = item.get("column"), item.get("function")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            column, function = item
        else:
            continue
        if column is not None and function is not None:
            out.append(MaskApplied(column=_s(column) or "", function=_s(function) or ""))
    return tuple(out)


_DETAIL_KEYS = frozenset({"reason", "alert", "severity", "message", "action", "target", "result", "old_version",
                          "new_version", "lost", "sink", "actor", "files"})  # fmt: skip
_KNOWN_KEYS = frozenset(_FIELD_NAMES) | {"sql_text", "kind", "event_id"}


@dataclass(kw_only=True, slots=True)
class EventBuilder:
    """Turns the data path's dicts into ``AuditEvent`` values.

    ``raw_backends`` are the backends configured with ``raw_statements_in_audit``;
    ``secrets`` are backend passwords that must never appear in statement text.
    """

    raw_backends: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = ()

    def build(self, raw: Mapping[str, Any], ts_ns: int, event_id: str) -> AuditEvent:
        kind = raw.get("kind")
        if kind not in KINDS:
            # An unknown kind is recorded as an alert rather than dropped.
            return AuditEvent(
                event_id=event_id,
                ts=format_ts(ts_ns),
                kind="alert",
                details={"alert": "unknown_event_kind", "message": _s(kind) or ""},
            )
        sensitive = _strs(raw.get("sensitive_columns"))
        backend = _s(raw.get("backend"))
        text = statement_text(
            raw.get("sql_text") if isinstance(raw.get("sql_text"), str) else None,
            dialect=str(raw.get("protocol") or "mysql"),
            raw_allowed=backend in self.raw_backends,
            sensitive=bool(sensitive),
            secrets=self.secrets,
        )
        details: dict[str, Any] = {}
        if isinstance(raw.get("details"), Mapping):
            details.update({str(k)[:64]: _detail(v) for k, v in list(raw["details"].items())[:32]})
        for key in _DETAIL_KEYS:
            if key in raw and key not in _KNOWN_KEYS:
                details[key] = _detail(raw[key])
        tls = raw.get("tls")
        return AuditEvent(
            event_id=event_id,
            ts=format_ts(ts_ns),
            kind=kind,
            session_id=_s(raw.get("session_id")),
            person=_s(raw.get("person")),
            roles=_strs(raw.get("roles")),
            client_address=_s(raw.get("client_address")),
            application_name=_s(raw.get("application_name")),
            protocol=_s(raw.get("protocol")),
            tls=tls if isinstance(tls, bool) else None,
            backend=backend,
            database=_s(raw.get("database")),
            statement_types=_strs(raw.get("statement_types")),
            fingerprint=_s(raw.get("fingerprint")) or None,
            statement_text=text.text,
            statement_text_mode=text.mode,
            objects_read=_strs(raw.get("objects_read")),
            objects_written=_strs(raw.get("objects_written")),
            columns_read=_strs(raw.get("columns_read")),
            sensitive_columns=sensitive,
            masks_applied=_masks(raw.get("masks_applied")),
            decision=_s(raw.get("decision")),
            rule_ids=_strs(raw.get("rule_ids")),
            reason=_s(raw.get("reason")) or None,
            rows=_i(raw.get("rows")),
            affected=_i(raw.get("affected")),
            bytes_sent=_i(raw.get("bytes_sent")),
            backend_error=_error_code(raw.get("backend_error")),
            proxy_us=_i(raw.get("proxy_us")),
            backend_us=_i(raw.get("backend_us")),
            masked_values=_i(raw.get("masked_values")),
            policy_version=_s(raw.get("policy_version")),
            statements=_i(raw.get("statements")),
            details=details,
        )


def _detail(value: object) -> Any:
    """Details are small JSON values: strings, numbers, booleans, lists of strings."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return list(_strs(value))
    return _s(value)
