"""The spool writer in its own process, fed through the intake ring (``writer = "process"``): events reach
the SQLite sink with a verifying chain, a stopped writer makes fail_closed refuse and fail_open count
losses without ever blocking emit, a killed writer is restarted and loses nothing, and a restart after
the proxy died spools what the ring held."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from sqlbastion.audit.delivery import DeliveryProcess
from sqlbastion.audit.intake import IntakeRing
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.spool import Spool
from sqlbastion.observability.metrics import METRICS

from .conftest import SECRET, verify
from .test_pipeline import _statement, _wait


def _pipeline(
    tmp_path: Path, *, on_failure: Literal["fail_closed", "fail_open"] = "fail_closed", ring_size: int = 1 << 20
) -> AuditPipeline:
    spool = Spool(tmp_path / "spool", secret=SECRET, segment_bytes=200_000)
    process = DeliveryProcess(
        spool_dir=spool.directory,
        base_dir=tmp_path,
        sinks=[{"type": "sqlite", "name": "local", "path": str(tmp_path / "audit.db")}],
        grace_s=10,
    )
    return AuditPipeline(
        spool=spool,
        sinks=[],
        intake_ring=IntakeRing(tmp_path / "ring", size=ring_size, owner=spool.directory),
        delivery_process=process,
        writer="process",
        on_failure=on_failure,
        fsync_interval_ms=5,
    )


def _rows(db: Path) -> list[dict[str, Any]]:
    import json

    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return [json.loads(r[0]) for r in conn.execute("SELECT event FROM audit_events ORDER BY chain_seq")]
    except sqlite3.OperationalError:  # not created yet
        return []


def _statements(db: Path) -> list[dict[str, Any]]:
    return [e for e in _rows(db) if e["kind"] == "statement"]


def _writer_pid(p: AuditPipeline) -> int:
    assert p._writer_process is not None
    return int(p._writer_process.proc.pid)


def test_events_reach_sqlite_through_the_writer_process_and_the_chain_verifies(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    p.open()
    try:
        assert _writer_pid(p) != os.getpid()
        assert p._writer is None  # no writer thread in this process
        for i in range(500):
            e = _statement(i)
            e["sql_text"] = f"SELECT salary FROM staff WHERE name = 'person-{i}' AND id = {i}"
            e["sensitive_columns"] = ["hr.staff.salary"]
            p.emit(e)
        assert p.flush(30)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) == 500, 30)
    finally:
        p.close()
    rows = _statements(tmp_path / "audit.db")
    assert [r["event_id"] for r in rows] == [_statement(i)["event_id"] for i in range(500)]
    assert {r["statement_text"] for r in rows} == {"SELECT salary FROM staff WHERE name = ? AND id = ?"}
    assert not any("person-" in str(r) for r in rows)
    assert verify(tmp_path / "spool").ok
    assert not (tmp_path / "ring").exists()  # a clean stop with everything written discards the ring


def test_fail_closed_refuses_while_the_writer_is_stopped_and_loses_nothing(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, ring_size=4096 + (96 << 10))
    p.open()
    try:
        assert p.accepting()
        os.kill(_writer_pid(p), signal.SIGSTOP)
        emitted = 0
        slowest = 0.0
        while p.accepting() and emitted < 5000:
            t0 = time.perf_counter()
            p.emit(_statement(emitted))
            slowest = max(slowest, time.perf_counter() - t0)
            emitted += 1
        assert not p.accepting()  # the ring is nearly full: sessions refuse new statements
        for _ in range(300):  # statements already under way still emit: kept, not lost
            t0 = time.perf_counter()
            p.emit(_statement(emitted))
            slowest = max(slowest, time.perf_counter() - t0)
            emitted += 1
        assert slowest < 0.05  # emit never waits for the writer
        assert p._feeder is not None
        assert p._feeder.backlog
        os.kill(_writer_pid(p), signal.SIGCONT)
        assert p.flush(60)
        _wait(p.accepting, 30)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) == emitted, 60)
        _wait(lambda: any(e["kind"] == "alert" for e in _rows(tmp_path / "audit.db")), 30)
    finally:
        p.close()
    rows = _rows(tmp_path / "audit.db")
    ids = [r["event_id"] for r in rows if r["kind"] == "statement"]
    assert ids == [_statement(i)["event_id"] for i in range(emitted)]
    alert = next(r for r in rows if r["kind"] == "alert")
    assert alert["details"]["alert"] == "audit_queue_full"
    assert alert["details"]["lost"] == 0
    assert alert["details"]["policy"] == "fail_closed"


def test_fail_open_counts_losses_and_keeps_accepting(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, on_failure="fail_open", ring_size=4096 + (64 << 10))
    lost_before = METRICS.audit_lost._value.get()
    p.open()
    try:
        os.kill(_writer_pid(p), signal.SIGSTOP)
        for i in range(2000):
            p.emit(_statement(i))
            assert p.accepting()
        assert 0 < METRICS.audit_lost._value.get() - lost_before < 2000
        os.kill(_writer_pid(p), signal.SIGCONT)
        assert p.flush(60)
        _wait(lambda: any(e["kind"] == "alert" for e in _rows(tmp_path / "audit.db")), 30)
        p.emit(_statement(2000))  # room again
        assert p.flush(60)
    finally:
        p.close()
    lost = METRICS.audit_lost._value.get() - lost_before
    rows = _rows(tmp_path / "audit.db")
    kept = [r for r in rows if r["kind"] == "statement"]
    assert len(kept) == 2001 - lost
    alert = next(r for r in rows if r["kind"] == "alert")
    assert alert["details"]["alert"] == "audit_queue_full"
    assert alert["details"]["lost"] == lost
    assert alert["details"]["policy"] == "fail_open"
    assert verify(tmp_path / "spool").ok


def test_a_killed_writer_process_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    counted_before = METRICS.audit_events.labels("statement")._value.get()
    p.open()
    try:
        first = _writer_pid(p)
        for i in range(600):
            p.emit(_statement(i))
            if i == 300:
                os.kill(first, signal.SIGKILL)
        _wait(lambda: _writer_pid(p) != first and p._writer_process is not None and p._writer_process.alive(), 30)
        for i in range(600, 700):
            p.emit(_statement(i))
        assert p.flush(60)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) >= 700, 60)
        # The restarted writer's counters reach the metrics although it counts from zero again.
        _wait(lambda: METRICS.audit_events.labels("statement")._value.get() - counted_before >= 350, 10)
    finally:
        p.close()
    ids = [r["event_id"] for r in _statements(tmp_path / "audit.db")]
    assert sorted(set(ids)) == sorted(str(_statement(i)["event_id"]) for i in range(700))
    assert verify(tmp_path / "spool").ok


def test_a_restart_spools_what_a_dead_proxy_left_in_the_ring(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    p.open()
    # The proxy "dies": its children stop with it, before the writer read these events.
    p._monitor_stop.set()
    p._stopping = True
    if p._monitor is not None:
        p._monitor.join(5)
    os.kill(_writer_pid(p), signal.SIGSTOP)
    for i in range(50):
        p.emit(_statement(i))
    assert p._process is not None
    p._process.proc.kill()
    os.kill(_writer_pid(p), signal.SIGKILL)
    os.kill(_writer_pid(p), signal.SIGCONT)
    p._writer_process.proc.wait(10)  # type: ignore[union-attr]  # set in process mode
    p._process.proc.wait(10)

    again = _pipeline(tmp_path)
    again.open()
    try:
        again.emit(_statement(50))
        assert again.flush(30)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) == 51, 30)
    finally:
        again.close()
    rows = _rows(tmp_path / "audit.db")
    assert [r["event_id"] for r in rows if r["kind"] == "statement"] == [_statement(i)["event_id"] for i in range(51)]
    alert = next(r for r in rows if r["kind"] == "alert")
    assert alert["details"]["alert"] == "audit_intake_recovered"
    assert alert["details"]["recovered"] == 50
    assert verify(tmp_path / "spool").ok


def test_an_event_too_large_for_the_ring_keeps_its_facts_and_withholds_its_text(tmp_path: Path) -> None:
    p = _pipeline(tmp_path, ring_size=8 << 20)
    p.open()
    try:
        e = _statement(0)
        e["sql_text"] = "SELECT '" + "s" * (2 << 20) + "'"
        e["objects_read"] = [f"db.t{i}" for i in range(600)]
        p.emit(e)
        assert p.flush(30)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) == 1, 30)
    finally:
        p.close()
    (row,) = _statements(tmp_path / "audit.db")
    assert row["event_id"] == _statement(0)["event_id"]
    assert row["statement_text"] is None
    assert row["statement_text_mode"] == "withheld"
    assert len(row["objects_read"]) == 512


async def test_barrier_resolves_once_the_writer_process_wrote_everything(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    await p.start()
    try:
        for i in range(200):
            p.emit(_statement(i))
        barrier = p.barrier()
        if barrier is not None:
            await asyncio.wait_for(barrier, 30)
        assert p._feeder is not None
        assert p._feeder.handled() >= 199
        assert p.barrier() is None
    finally:
        await p.stop()


def test_without_a_usable_ring_the_writer_runs_here_and_keeps_what_was_emitted_before_open(tmp_path: Path) -> None:
    from .test_pipeline import MemorySink

    sink = MemorySink()
    spool = Spool(tmp_path / "spool", secret=SECRET)
    p = AuditPipeline(
        spool=spool,
        sinks=[sink],
        intake_ring=IntakeRing(tmp_path / "no-such-directory" / "ring", size=1 << 16),
        writer="process",
        fsync_interval_ms=5,
    )
    p.emit(_statement(0))  # before open: waits for the writer
    p.open()
    try:
        assert p._writer_process is None
        assert p._writer is not None
        p.emit(_statement(1))
        assert p.flush(10)
        _wait(lambda: len(sink.events) == 2)
    finally:
        p.close()
    assert [e["event_id"] for e in sink.events] == [_statement(0)["event_id"], _statement(1)["event_id"]]


def test_a_second_proxy_on_the_same_spool_is_refused_at_once(tmp_path: Path) -> None:
    from sqlbastion.audit.spool import SpoolError

    p = _pipeline(tmp_path)
    p.open()
    try:
        p.emit(_statement(0))
        second = _pipeline(tmp_path)
        started = time.monotonic()
        with pytest.raises(SpoolError, match="another process is writing the audit spool"):
            second.open()
        assert time.monotonic() - started < 20
        # The first one is untouched: its events still go through.
        p.emit(_statement(1))
        assert p.flush(30)
        _wait(lambda: len(_statements(tmp_path / "audit.db")) == 2, 30)
    finally:
        p.close()
