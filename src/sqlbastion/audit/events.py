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

from sqlbastion.audit.redact import RedactedText, statement_text

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


# The last second formatted and its text, swapped as one tuple so threads never see a mix.
_ts_second: list[tuple[int, str]] = [(-1, "")]


def format_ts(ts_ns: int) -> str:
    """UTC RFC 3339 with microseconds and a ``Z``."""
    sec, rem = divmod(ts_ns, 1_000_000_000)
    entry = _ts_second[0]
    if entry[0] != sec:
        entry = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        _ts_second[0] = entry
    return f"{entry[1]}.{rem // 1000:06d}Z"


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
    text = value if type(value) is str else str(value)
    return text if len(text) <= MAX_STRING else text[:MAX_STRING] + "…"


def _strs(value: object) -> list[str]:
    if not value:  # None, or the common empty list
        return []
    if type(value) in (list, tuple):
        items: Any = value
        # The common case, checked cheaply (a loop, no generator): a short list of short strings,
        # taken as it is.
        if len(items) <= MAX_ITEMS:
            for v in items:
                if type(v) is not str or len(v) > MAX_STRING:
                    break
            else:
                return list(items)
        items = list(items)[:MAX_ITEMS]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        items = list(value)[:MAX_ITEMS]
    else:
        items = [value]
    return [t for t in (_s(v) for v in items) if t is not None]


def _i(value: object) -> int | None:
    if type(value) is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
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


def _masks(value: object) -> list[dict[str, str]]:
    if not value or not isinstance(value, Iterable) or isinstance(value, (str, bytes)):
        return []
    out = []
    for item in list(value)[:MAX_ITEMS]:
        if isinstance(item, Mapping):
            column, function = item.get("column"), item.get("function")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            column, function = item
        else:
            continue
        if column is not None and function is not None:
            out.append({"column": _s(column) or "", "function": _s(function) or ""})
    return out


# Top-level keys of kind-specific events (policy_reloaded, alert, admin_action) kept under details.
_EXTRA_DETAIL_KEYS = ("alert", "severity", "message", "action", "target", "result", "old_version", "new_version",
                      "lost", "sink", "actor", "files")  # fmt: skip
_KIND_SET = frozenset(KINDS)


@dataclass(kw_only=True, slots=True)
class EventBuilder:
    """Turns the data path's dicts into ``AuditEvent`` values.

    ``raw_backends`` are the backends configured with ``raw_statements_in_audit``;
    ``secrets`` are backend passwords that must never appear in statement text.
    """

    raw_backends: frozenset[str] = frozenset()
    secrets: tuple[str, ...] = ()

    def build(self, raw: Mapping[str, Any], ts_ns: int, event_id: str) -> AuditEvent:
        """The typed event (for readers and tests; the writer uses ``build_record``)."""
        return AuditEvent.from_dict(self.build_record(raw, ts_ns, event_id))

    def build_record(self, raw: Mapping[str, Any], ts_ns: int, event_id: str) -> dict[str, Any]:
        """The event's JSON form, exactly ``AuditEvent.to_dict()`` of ``build``, built directly
        because this runs once per event on the writer thread."""
        kind = raw.get("kind")
        if kind not in _KIND_SET:
            # An unknown kind is recorded as an alert rather than dropped.
            raw = {"kind": "alert", "details": {"alert": "unknown_event_kind", "message": _s(kind) or ""}}
            kind = "alert"
        get = raw.get
        sensitive = _strs(get("sensitive_columns"))
        backend = _s(get("backend"))
        protocol = _s(get("protocol"))
        sql = get("sql_text")
        if get("sql_text_withheld") is True:
            # The data path dropped a text too long to tokenize before queueing it (writer.bounded_event).
            text = RedactedText(text=None, mode="withheld")
        else:
            text = statement_text(
                sql if type(sql) is str else None,
                dialect=protocol or "mysql",
                raw_allowed=backend in self.raw_backends,
                sensitive=bool(sensitive),
                secrets=self.secrets,
            )
        details: dict[str, Any] = {}
        given = get("details")
        if isinstance(given, Mapping):
            details.update({str(k)[:64]: _detail(v) for k, v in list(given.items())[:32]})
        for key in _EXTRA_DETAIL_KEYS:
            if key in raw:
                details[key] = _detail(raw[key])
        tls = get("tls")
        # The common values (short strings, ints, None) are taken inline; anything else goes through
        # _s / _i, which bound or convert it. This runs once per event in the writer process.
        session_id, person, client_address = get("session_id"), get("person"), get("client_address")
        application_name, database, decision = get("application_name"), get("database"), get("decision")
        policy_version, rows, affected = get("policy_version"), get("rows"), get("affected")
        bytes_sent, proxy_us, backend_us = get("bytes_sent"), get("proxy_us"), get("backend_us")
        masked_values, statements = get("masked_values"), get("statements")
        backend_error = get("backend_error")
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id,
            "ts": format_ts(ts_ns),
            "kind": kind,
            "session_id": session_id if type(session_id) is str and len(session_id) <= MAX_STRING else _s(session_id),
            "person": person if type(person) is str and len(person) <= MAX_STRING else _s(person),
            "roles": _strs(get("roles")),
            "client_address": client_address
            if type(client_address) is str and len(client_address) <= MAX_STRING
            else _s(client_address),
            "application_name": application_name
            if type(application_name) is str and len(application_name) <= MAX_STRING
            else _s(application_name),
            "protocol": protocol,
            "tls": tls if type(tls) is bool else None,
            "backend": backend,
            "database": database if type(database) is str and len(database) <= MAX_STRING else _s(database),
            "statement_types": _strs(get("statement_types")),
            "fingerprint": _s(get("fingerprint")) or None,
            "statement_text": text.text,
            "statement_text_mode": text.mode,
            "objects_read": _strs(get("objects_read")),
            "objects_written": _strs(get("objects_written")),
            "columns_read": _strs(get("columns_read")),
            "sensitive_columns": sensitive,
            "masks_applied": _masks(get("masks_applied")),
            "decision": decision if type(decision) is str and len(decision) <= MAX_STRING else _s(decision),
            "rule_ids": _strs(get("rule_ids")),
            "reason": _s(get("reason")) or None,
            "rows": rows if type(rows) is int else _i(rows),
            "affected": affected if type(affected) is int else _i(affected),
            "bytes_sent": bytes_sent if type(bytes_sent) is int else _i(bytes_sent),
            "backend_error": None if backend_error is None else _error_code(backend_error),
            "proxy_us": proxy_us if type(proxy_us) is int else _i(proxy_us),
            "backend_us": backend_us if type(backend_us) is int else _i(backend_us),
            "masked_values": masked_values if type(masked_values) is int else _i(masked_values),
            "policy_version": policy_version
            if type(policy_version) is str and len(policy_version) <= MAX_STRING
            else _s(policy_version),
            "statements": statements if type(statements) is int else _i(statements),
            "details": details,
        }


def _detail(value: object) -> Any:
    """Details are small JSON values: strings, numbers, booleans, lists of strings."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return list(_strs(value))
    return _s(value)
