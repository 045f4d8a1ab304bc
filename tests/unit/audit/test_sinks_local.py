"""SQLite and JSONL sinks: idempotent redelivery, retention, rotation."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from sqlbastion.audit.events import format_ts
from sqlbastion.audit.sinks.jsonl import JSONLSink
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.spool import SpooledRecord

_NOW = time.time_ns()


def _record(seq: int, *, ts_ns: int | None = None, **extra: object) -> SpooledRecord:
    event: dict[str, object] = {
        "schema_version": 1,
        "event_id": f"0191e7c0-0000-7000-8000-{seq:012d}",
        # The same event always carries the same ts, as a redelivered spool record does.
        "ts": format_ts(ts_ns if ts_ns is not None else _NOW + seq * 1000),
        "kind": "statement",
        "person": "dev",
        "decision": "block" if seq % 2 else "allow",
        "rule_ids": ["HR-DDL-DROP"] if seq % 2 else [],
        "objects_read": ["bank.customers"],
        "columns_read": ["bank.customers.mobile"],
        "sensitive_columns": ["bank.customers.mobile"],
        "statement_types": ["select"],
        "chain": {"seq": seq, "mac": "00" * 32},
    }
    event.update(extra)
    return SpooledRecord(seq=seq, event=event)


async def test_sqlite_redelivery_is_a_no_op(tmp_path: Path) -> None:
    sink = SQLiteSink(path=tmp_path / "a.db")
    await sink.deliver([_record(i) for i in range(10)])
    await sink.deliver([_record(i) for i in range(5, 15)])
    await sink.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 15
    assert conn.execute("SELECT count(*) FROM audit_event_rules WHERE rule_id = 'HR-DDL-DROP'").fetchone()[0] == 7
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"audit_events_ts", "audit_events_person", "audit_events_decision"} <= indexes


async def test_a_new_sqlite_database_gets_16k_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    """16 KiB pages for a new database (fewer pages touched per insert of ~1 KiB events); a
    database an earlier version created with 4 KiB pages is used as it is, and stays durable."""
    sink = SQLiteSink(path=tmp_path / "new.db")
    await sink.deliver([_record(i) for i in range(3)])
    await sink.close()
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
    conn.close()

    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.close()
    sink = SQLiteSink(path=tmp_path / "old.db")
    await sink.deliver([_record(i) for i in range(3)])
    await sink.deliver([_record(i) for i in range(3)])  # redelivered: no duplicates
    assert sink._conn is not None
    assert sink._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    await sink.close()
    conn = sqlite3.connect(tmp_path / "old.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 3
    conn.close()


async def test_sqlite_retention_by_age_and_size(tmp_path: Path) -> None:
    sink = SQLiteSink(path=tmp_path / "r.db", retention_days=1)
    old = time.time_ns() - 3 * 86400 * 10**9
    await sink.deliver([_record(i, ts_ns=old + i) for i in range(20)] + [_record(100 + i) for i in range(5)])
    assert sink.apply_retention() == 20
    assert sink._conn is not None
    assert sink._conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 5
    assert sink._conn.execute("SELECT count(*) FROM audit_event_objects").fetchone()[0] == 10
    await sink.close()

    sized = SQLiteSink(path=tmp_path / "s.db", max_bytes=200_000)
    padding = "x" * 900
    for batch in range(10):
        await sized.deliver([_record(batch * 100 + i, reason=padding) for i in range(100)])
    sized.apply_retention()
    assert sized._conn is not None
    pages, free, size = (
        sized._conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
    )
    assert (pages - free) * size <= 200_000
    remaining = sized._conn.execute("SELECT min(chain_seq) FROM audit_events").fetchone()[0]
    assert remaining > 0  # the oldest went first
    await sized.close()


async def test_jsonl_rotates_and_does_not_duplicate_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "out" / "audit.jsonl"
    sink = JSONLSink(path=path, max_bytes=4000)
    await sink.deliver([_record(i) for i in range(20)])
    await sink.close()
    reopened = JSONLSink(path=path, max_bytes=4000)
    await reopened.deliver([_record(i) for i in range(15, 25)])  # redelivery overlapping what was written
    await reopened.close()
    files = [*reopened.rotated_files(), path]
    assert len(files) >= 2
    ids = [json.loads(line)["event_id"] for f in files for line in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 25
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
