"""Typed events built from the data path's dicts."""

from __future__ import annotations

import json
import re

from sqlbastion.audit.events import KINDS, SCHEMA_VERSION, AuditEvent, EventBuilder, format_ts

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def _statement(**extra: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "kind": "statement",
        "event_id": "0191e7c0-0000-7000-8000-000000000001",
        "session_id": "s1",
        "person": "analyst",
        "roles": ["analyst"],
        "client_address": "127.0.0.1",
        "application_name": "psql",
        "protocol": "postgres",
        "backend": "pg",
        "database": "bank",
        "sql_text": "SELECT mobile FROM customers WHERE mobile = '13800138000'",
        "decision": "allow",
        "rule_ids": [],
        "reason": "",
        "statement_types": ["select"],
        "fingerprint": "abc",
        "objects_read": ["bank.public.customers"],
        "objects_written": [],
        "columns_read": ["bank.public.customers.mobile"],
        "sensitive_columns": ["bank.public.customers.mobile"],
        "rows": 1,
        "affected": 0,
        "bytes_sent": 120,
        "backend_error": None,
        "proxy_us": 80,
        "backend_us": 400,
        "masked_values": 1,
        "policy_version": "v1",
    }
    raw.update(extra)
    return raw


def test_a_statement_event_has_every_field_and_round_trips() -> None:
    event = EventBuilder(raw_backends=frozenset({"pg"})).build(_statement(), 1_764_028_800_123_456_789, "id-1")
    d = event.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION
    assert d["event_id"] == "id-1"
    assert TS_RE.match(d["ts"])
    assert d["ts"] == "2025-11-25T00:00:00.123456Z"
    assert d["statement_text"] == "SELECT mobile FROM customers WHERE mobile = ?"  # sensitive → never raw
    assert d["statement_text_mode"] == "redacted"
    assert d["sensitive_columns"] == ["bank.public.customers.mobile"]
    assert d["rows"] == 1
    assert "13800138000" not in json.dumps(d)
    assert AuditEvent.from_dict(json.loads(json.dumps(d))) == event


def test_backend_error_text_is_reduced_to_its_code() -> None:
    b = EventBuilder()
    for given, code in [
        ("23505", "23505"),
        ("23505: duplicate key value (mobile)=(13800138000)", "23505"),
        ("1062 Duplicate entry '13800138000' for key 'mobile'", "1062"),
        ("1062 (23000): Duplicate entry '13800138000' for key 'mobile'", "1062 (23000)"),
        ('SQLSTATE 22P02: invalid input syntax for type integer: "13800138000"', "SQLSTATE 22P02"),
        ("SQLSTATE 22P02", "SQLSTATE 22P02"),
        ("backend connection lost", "backend connection lost"),
        ("Duplicate entry '13800138000'", "error"),
        ("sqlbastion: result refused 13800138000", "error"),
    ]:
        d = b.build(_statement(backend_error=given), 0, "x").to_dict()
        assert d["backend_error"] == code


def test_values_are_bounded() -> None:
    d = EventBuilder().build(_statement(person="p" * 5000, objects_read=[f"t{i}" for i in range(5000)]), 0, "x")
    assert d.person is not None
    assert len(d.person) <= 1025
    assert len(d.objects_read) == 512


def test_unknown_kinds_become_alerts() -> None:
    d = EventBuilder().build({"kind": "weird"}, 0, "x").to_dict()
    assert d["kind"] == "alert"
    assert d["details"]["alert"] == "unknown_event_kind"


def test_auth_failed_and_connection_events() -> None:
    b = EventBuilder()
    failed = b.build(
        {
            "kind": "auth_failed",
            "person": "dev",
            "client_address": "10.0.0.1",
            "protocol": "mysql",
            "reason": "network",
        },
        0,
        "x",
    ).to_dict()
    assert failed["reason"] == "network"
    closed = b.build({"kind": "connection_closed", "statements": 7, "reason": "client quit", "tls": True}, 0, "y")
    assert closed.statements == 7
    assert closed.tls is True


def test_format_ts_is_utc_with_microseconds() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"
    assert format_ts(1_500_000_001_999_999) == "1970-01-18T08:40:00.001999Z"


def test_the_json_schema_documents_every_field_and_nothing_else() -> None:
    from dataclasses import fields
    from pathlib import Path

    schema = json.loads((Path(__file__).parents[3] / "docs" / "audit-schema.json").read_text(encoding="utf-8"))
    documented = set(schema["properties"])
    emitted = {f.name for f in fields(AuditEvent)}
    assert emitted <= documented
    assert documented - emitted == {"chain", "@timestamp"}  # added on delivery
    assert set(schema["properties"]["kind"]["enum"]) == set(KINDS)
    record = EventBuilder().build_record(_statement(), 0, "x")
    assert set(record) == emitted
    assert set(schema["required"]) <= set(record)
