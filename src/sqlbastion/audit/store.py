"""Reading the SQLite audit store: search filters, time parsing, export formats.

Used by ``sqlbastion audit search|tail|export``. Queries only ever bind
values; filters on rule and object go through the indexed side tables.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlbastion.audit.events import format_ts

__all__ = ["CSV_COLUMNS", "SearchFilter", "csv_row", "parse_time", "search", "table_lines"]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, *, now_ns: int | None = None) -> str:
    """``2026-11-25``, ``2026-11-25T08:00:00+08:00``, ``…Z`` or a relative ``15m``/``2h``/``7d`` (ago)
    → the ``ts`` form events use (UTC, microseconds). Raises ValueError."""
    value = value.strip()
    m = _RELATIVE.match(value)
    if m:
        now = now_ns if now_ns is not None else time.time_ns()
        return format_ts(now - int(m.group(1)) * _UNITS[m.group(2)] * 1_000_000_000)
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"cannot read the time {value!r}: use ISO 8601 (2026-11-25T08:00:00Z) or 15m, 2h, 7d"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    return format_ts(ns)


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchFilter:
    since: str | None = None
    until: str | None = None
    person: str | None = None
    decision: str | None = None
    rule: str | None = None
    object: str | None = None
    session: str | None = None
    kind: str | None = None
    limit: int | None = 1000
    after_rowid: int | None = None  # for tail -f


def search(conn: sqlite3.Connection, f: SearchFilter) -> Iterator[tuple[int, dict[str, Any]]]:
    """(rowid, event) in time order (rowid order for tail)."""
    where: list[str] = []
    args: list[Any] = []
    if f.since:
        where.append("e.ts >= ?")
        args.append(f.since)
    if f.until:
        where.append("e.ts < ?")
        args.append(f.until)
    for column, value in (("person", f.person), ("decision", f.decision), ("session_id", f.session), ("kind", f.kind)):
        if value:
            where.append(f"e.{column} = ?")
            args.append(value)
    if f.rule:
        where.append("e.event_id IN (SELECT event_id FROM audit_event_rules WHERE rule_id = ?)")
        args.append(f.rule)
    if f.object:
        # An exact object, or every column of a table when a table is given.
        where.append(
            "e.event_id IN (SELECT event_id FROM audit_event_objects WHERE object = ? OR object LIKE ? ESCAPE '\\')"
        )
        escaped = f.object.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args.extend([f.object, escaped + ".%"])
    if f.after_rowid is not None:
        where.append("e.rowid > ?")
        args.append(f.after_rowid)
    sql = "SELECT e.rowid, e.event FROM audit_events AS e"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY e.rowid" if f.after_rowid is not None else " ORDER BY e.ts, e.rowid"
    if f.limit is not None:
        sql += " LIMIT ?"
        args.append(f.limit)
    for rowid, text in conn.execute(sql, args):
        yield int(rowid), json.loads(text)


CSV_COLUMNS = (
    "ts", "event_id", "kind", "session_id", "person", "roles", "client_address", "application_name", "protocol",
    "backend", "database", "statement_types", "decision", "rule_ids", "reason", "objects_read", "objects_written",
    "sensitive_columns", "statement_text", "rows", "affected", "bytes_sent", "backend_error", "proxy_us",
    "backend_us", "policy_version",
)  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    text = str(value)
    # A cell starting with = + - @ is a formula to spreadsheet programs (CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def csv_row(event: dict[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(event.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def csv_header() -> str:
    return ",".join(CSV_COLUMNS) + "\n"


def table_lines(event: dict[str, Any]) -> str:
    """One human-readable line per event for ``search`` and ``tail``."""
    what = event.get("statement_text") or event.get("reason") or ""
    rules = ",".join(event.get("rule_ids") or [])
    fields = [
        event.get("ts", ""),
        event.get("kind", ""),
        event.get("person") or "-",
        event.get("backend") or "-",
        event.get("decision") or "-",
        rules or "-",
        str(what).replace("\n", " ")[:200],
    ]
    return "  ".join(str(f) for f in fields)
