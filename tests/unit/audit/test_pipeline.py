"""The pipeline: non-blocking emit, delivery with retries, release, and the failure policies."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sqlbastion.audit.chain import list_segments
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.base import Sink, SinkError
from sqlbastion.audit.spool import Spool, SpooledRecord
from sqlbastion.observability.metrics import METRICS

from .conftest import SECRET, verify


class MemorySink(Sink):
    """Keeps delivered events; can fail a number of times or block until released."""

    def __init__(self, name: str = "memory", *, required: bool = True, failures: int = 0) -> None:
        super().__init__(name=name, required=required, batch_size=100)
        self.events: list[dict[str, object]] = []
        self.failures = failures
        self.attempts = 0
        self.gate: asyncio.Event | None = None
        self.blocked = False

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        self.attempts += 1
        if self.blocked:
            if self.gate is None:
                self.gate = asyncio.Event()
            await self.gate.wait()
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("injected failure")
        self.events.extend(r.event for r in records)


class FailingSpool(Spool):
    """A spool whose writes fail with ENOSPC while ``broken`` is set (an injected I/O error)."""

    broken = False

    def _write(self, data: bytes) -> None:
        if self.broken:
            raise OSError(errno.ENOSPC, "No space left on device")
        super()._write(data)


def _statement(i: int) -> dict[str, object]:
    return {
        "kind": "statement",
        "event_id": f"0191e7c0-0000-7000-8000-{i:012d}",
        "person": "dev",
        "protocol": "mysql",
        "backend": "core",
        "sql_text": f"SELECT * FROM t WHERE id = {i}",
        "decision": "allow",
    }


def _wait(predicate: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]  # a zero-argument callable
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _pipeline(spool: Spool, *sinks: Sink, **kw: object) -> AuditPipeline:
    p = AuditPipeline(spool=spool, sinks=list(sinks), fsync_interval_ms=5, **kw)  # type: ignore[arg-type]  # test knobs
    p.open()
    return p


def test_events_reach_every_sink_in_order_and_the_spool_verifies(spool_dir: Path) -> None:
    a, b = MemorySink("a"), MemorySink("b")
    p = _pipeline(Spool(spool_dir, secret=SECRET), a, b)
    for i in range(500):
        p.emit(_statement(i))
    assert p.flush(10)
    _wait(lambda: len(a.events) == 500 and len(b.events) == 500)
    p.close()
    assert [e["event_id"] for e in a.events] == [_statement(i)["event_id"] for i in range(500)]
    assert all(e["statement_text"] == "SELECT * FROM t WHERE id = ?" for e in a.events)
    assert verify(spool_dir).ok


def test_connection_opened_is_preceded_by_auth_succeeded(spool_dir: Path) -> None:
    sink = MemorySink()
    p = _pipeline(Spool(spool_dir, secret=SECRET), sink)
    p.emit({"kind": "connection_opened", "event_id": "e1", "session_id": "s1", "person": "dev", "protocol": "mysql"})
    _wait(lambda: len(sink.events) == 2)
    p.close()
    assert [e["kind"] for e in sink.events] == ["auth_succeeded", "connection_opened"]
    assert sink.events[0]["session_id"] == "s1"
    assert sink.events[0]["event_id"] != "e1"


def test_a_failing_sink_is_retried_and_gets_everything(spool_dir: Path) -> None:
    sink = MemorySink(failures=3)
    errors_before = METRICS.audit_sink_errors.labels("memory")._value.get()
    p = _pipeline(Spool(spool_dir, secret=SECRET), sink)
    for i in range(50):
        p.emit(_statement(i))
    _wait(lambda: len(sink.events) >= 50)
    p.close()
    assert sink.attempts >= 4
    assert METRICS.audit_sink_errors.labels("memory")._value.get() - errors_before == 3
    assert len({e["event_id"] for e in sink.events}) == 50


def test_a_stuck_sink_never_slows_emit_and_holds_the_spool(spool_dir: Path) -> None:
    stuck = MemorySink("stuck")
    stuck.blocked = True
    fine = MemorySink("fine")
    p = _pipeline(Spool(spool_dir, secret=SECRET, segment_bytes=4000), stuck, fine)
    started = time.perf_counter()
    for i in range(2000):
        p.emit(_statement(i))
    emit_s = time.perf_counter() - started
    assert emit_s < 1.0  # about a microsecond each; generous for a loaded two-core machine
    _wait(lambda: len(fine.events) == 2000)
    # The stuck required sink has acknowledged nothing, so no segment may be released.
    assert list_segments(spool_dir)[0][0] == 0
    p.sink_grace_s = 0.5
    p.close()


def test_segments_are_released_once_every_required_sink_acknowledged(spool_dir: Path) -> None:
    required = MemorySink("required")
    optional = MemorySink("optional", required=False)
    optional.blocked = True
    p = _pipeline(Spool(spool_dir, secret=SECRET, segment_bytes=4000), required, optional)
    for i in range(1000):
        p.emit(_statement(i))
    _wait(lambda: len(required.events) == 1000)
    _wait(lambda: len(list_segments(spool_dir)) == 1)  # an optional sink does not hold segments
    p.sink_grace_s = 0.5
    p.close()


def test_fail_closed_refuses_while_the_spool_fails_and_loses_nothing(spool_dir: Path) -> None:
    spool = FailingSpool(spool_dir, secret=SECRET)
    sink = MemorySink()
    p = _pipeline(spool, sink, on_failure="fail_closed")
    p.emit(_statement(0))
    _wait(lambda: len(sink.events) == 1)
    assert p.accepting()
    spool.broken = True
    p.emit(_statement(1))
    _wait(lambda: not p.accepting())
    assert METRICS.audit_spool_writable._value.get() == 0
    p.emit(_statement(2))  # a connection event can still arrive while statements are refused
    time.sleep(0.2)
    assert len(sink.events) == 1
    spool.broken = False
    _wait(p.accepting)
    assert METRICS.audit_spool_writable._value.get() == 1
    _wait(lambda: len(sink.events) == 4)
    p.close()
    kinds = [e["kind"] for e in sink.events]
    assert kinds == ["statement", "alert", "statement", "statement"]
    alert = sink.events[1]
    assert alert["details"]["alert"] == "audit_spool_failure"  # type: ignore[index]  # a details dict
    assert alert["details"]["lost"] == 0  # type: ignore[index]  # a details dict
    assert "No space left" in alert["details"]["message"]  # type: ignore[index]  # a details dict
    assert verify(spool_dir).ok


def test_fail_open_keeps_accepting_and_counts_lost_events(spool_dir: Path) -> None:
    spool = FailingSpool(spool_dir, secret=SECRET)
    sink = MemorySink()
    lost_before = METRICS.audit_lost._value.get()
    p = _pipeline(spool, sink, on_failure="fail_open")
    spool.broken = True
    for i in range(5):
        p.emit(_statement(i))
    _wait(lambda: METRICS.audit_lost._value.get() - lost_before == 5)
    assert p.accepting()
    spool.broken = False
    p.emit(_statement(99))
    _wait(lambda: len(sink.events) == 2)
    p.close()
    assert sink.events[0]["kind"] == "alert"
    assert sink.events[0]["details"]["lost"] == 5  # type: ignore[index]  # a details dict
    assert sink.events[1]["event_id"] == _statement(99)["event_id"]


def test_a_full_spool_triggers_the_failure_policy(spool_dir: Path) -> None:
    # max_spool_bytes stands in for a tiny file system: the spool refuses before the disk does.
    sink = MemorySink()
    sink.blocked = True  # nothing is acknowledged, so nothing is released
    spool = Spool(spool_dir, secret=SECRET, max_bytes=12000, segment_bytes=1500)
    p = _pipeline(spool, sink, on_failure="fail_closed")
    for i in range(100):
        p.emit(_statement(i))
        if not p.accepting():
            break
    _wait(lambda: not p.accepting())
    assert spool.bytes_used() <= 12000
    assert sink.gate is not None
    sink.blocked = False
    gate = sink.gate
    assert p._runner is not None
    assert p._runner._loop is not None
    p._runner._loop.call_soon_threadsafe(gate.set)
    _wait(p.accepting, timeout=20)  # delivery releases segments, the spool takes the backlog again
    p.close()
    assert verify(spool_dir).ok


def test_emit_on_a_full_queue_counts_loss_and_refuses(spool_dir: Path) -> None:
    p = AuditPipeline(spool=Spool(spool_dir, secret=SECRET), sinks=[], max_queue=3)
    # Not started: nothing drains the queue.
    lost_before = METRICS.audit_lost._value.get()
    for i in range(5):
        p.emit(_statement(i))
    assert METRICS.audit_lost._value.get() - lost_before == 2
    assert not p.accepting()


def test_restart_resumes_sinks_from_their_cursors(spool_dir: Path) -> None:
    sink = MemorySink()
    p = _pipeline(Spool(spool_dir, secret=SECRET), sink)
    for i in range(30):
        p.emit(_statement(i))
    _wait(lambda: len(sink.events) == 30)
    p.close()
    sink2 = MemorySink()
    p2 = _pipeline(Spool(spool_dir, secret=SECRET), sink2)
    p2.emit(_statement(30))
    _wait(lambda: len(sink2.events) >= 1)
    p2.close()
    assert [e["event_id"] for e in sink2.events] == [_statement(30)["event_id"]]
    assert verify(spool_dir).ok


async def test_async_start_and_stop(spool_dir: Path) -> None:
    sink = MemorySink()
    p = AuditPipeline(spool=Spool(spool_dir, secret=SECRET), sinks=[sink])
    await p.start()
    p.emit(_statement(1))
    assert await p.wait_written(5)
    await p.stop()
    assert len(sink.events) == 1


@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sm3"])
def test_both_chain_algorithms_work_end_to_end(spool_dir: Path, algorithm: str) -> None:
    sink = MemorySink()
    p = _pipeline(Spool(spool_dir, secret=SECRET, algorithm=algorithm), sink)  # type: ignore[arg-type]  # literal
    for i in range(20):
        p.emit(_statement(i))
    _wait(lambda: len(sink.events) == 20)
    p.close()
    assert verify(spool_dir, algorithm=algorithm).ok  # type: ignore[arg-type]  # literal


async def test_barrier_resolves_once_emitted_events_are_in_the_spool(spool_dir: Path) -> None:
    sink = MemorySink()
    p = AuditPipeline(spool=Spool(spool_dir, secret=SECRET), sinks=[sink])
    await p.start()
    try:
        assert p.barrier() is None  # nothing emitted yet
        for i in range(200):
            p.emit(_statement(i))
        waiter = p.barrier()
        if waiter is not None:
            await asyncio.wait_for(waiter, 10)
        assert p._written_count >= 200
        assert p.spool.written_seq >= 200  # start marker + 200 events
    finally:
        await p.stop()


def test_a_statement_allowed_with_an_alert_rule_also_writes_an_alert_event(spool_dir: Path) -> None:
    sink = MemorySink()
    p = _pipeline(Spool(spool_dir, secret=SECRET), sink)
    p.emit({**_statement(1), "decision": "alert", "rule_ids": ["HR-BULK-EXPORT"], "reason": "large export"})
    _wait(lambda: len(sink.events) == 2)
    p.close()
    statement, alert = sink.events
    assert statement["kind"] == "statement"
    assert alert["kind"] == "alert"
    assert alert["rule_ids"] == ["HR-BULK-EXPORT"]
    assert alert["details"] == {
        "alert": "rule",
        "severity": "warning",
        "statement_event_id": statement["event_id"],
        "message": "large export",
    }


def test_odd_values_from_the_data_path_never_stop_the_writer(spool_dir: Path, tmp_path: Path) -> None:
    from sqlbastion.audit.intake import IntakeRing

    sink = MemorySink()
    p = AuditPipeline(
        spool=Spool(spool_dir, secret=SECRET),
        sinks=[sink],
        fsync_interval_ms=5,
        intake_ring=IntakeRing(tmp_path / "ring", 1 << 20),
    )
    p.open()
    odd: list[dict[str, object]] = [
        {**_statement(1), "sql_text": "SELECT '\udcff' AS lone_surrogate"},
        {**_statement(2), "person": b"\xff\xfe", "rows": 10**30, "roles": {"a", "b"}},
        {**_statement(3), "application_name": "x" * 100_000, "objects_read": [object()] * 3},
        {**_statement(4), "details": {"nested": {"deep": [1, 2, {"x": None}]}}, "tls": "yes"},
        {**_statement(5), "sql_text": None, "backend_error": 1146},
        {"kind": "statement"},  # nothing else at all
        {"kind": None},
    ]
    for event in odd:
        p.emit(event)
    p.emit(_statement(99))
    _wait(lambda: any(e["event_id"] == _statement(99)["event_id"] for e in sink.events))
    p.close()
    assert len(sink.events) == len(odd) + 1
    assert verify(spool_dir).ok
    by_id = {e["event_id"]: e for e in sink.events}
    assert str(by_id[_statement(3)["event_id"]]["application_name"]).endswith("…")
    assert by_id[_statement(5)["event_id"]]["backend_error"] == "1146"


def test_serve_refuses_to_start_on_a_spool_another_process_writes(spool_dir: Path) -> None:
    from sqlbastion.config import loads
    from sqlbastion.proxy.server import run

    holder = Spool(spool_dir, secret=SECRET)
    holder.open()
    try:
        settings = loads(f'[admin]\nenabled = false\n\n[audit]\nspool_dir = "{spool_dir}"\ndelivery = "thread"\n')
        assert run(settings) == 1
    finally:
        holder.close()


def test_with_no_required_sink_the_slowest_sink_releases_segments(spool_dir: Path) -> None:
    a = MemorySink("a", required=False)
    b = MemorySink("b", required=False)
    p = _pipeline(Spool(spool_dir, secret=SECRET, segment_bytes=4000), a, b)
    for i in range(500):
        p.emit(_statement(i))
    _wait(lambda: len(a.events) == 500 and len(b.events) == 500)
    _wait(lambda: len(list_segments(spool_dir)) == 1)
    p.close()
