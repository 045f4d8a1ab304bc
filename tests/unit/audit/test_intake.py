"""The intake ring: entries survive in shared memory, torn ones are ignored, recovery spools the rest once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlbastion.audit.intake import IntakeRing
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.spool import Spool

from .conftest import SECRET, verify
from .test_pipeline import MemorySink, _statement, _wait


def _payload(i: int) -> bytes:
    return json.dumps(_statement(i)).encode()


def test_entries_round_trip_in_intake_order(tmp_path: Path) -> None:
    ring = IntakeRing(tmp_path / "ring", size=1 << 16)
    ring.open()
    for i in range(20):
        assert ring.append(i, 1000 + i, _payload(i))
    ring.close()
    again = IntakeRing(tmp_path / "ring", size=1 << 16)
    again.open()  # a new process maps the same file
    entries = again.scan()
    assert [e.intake for e in entries] == list(range(20))
    assert entries[3].ts_ns == 1003
    assert json.loads(entries[3].payload)["event_id"] == _statement(3)["event_id"]


def test_a_torn_entry_is_ignored(tmp_path: Path) -> None:
    ring = IntakeRing(tmp_path / "ring", size=1 << 16)
    ring.open()
    for i in range(5):
        ring.append(i, i, _payload(i))
    assert ring._map is not None
    # Corrupt the payload of entry 2 (as if the process died in the middle of copying it).
    data = ring._map[:]
    at = data.find(b"000000000002")
    ring._map[at : at + 4] = b"XXXX"
    assert [e.intake for e in ring.scan()] == [0, 1, 3, 4]


def test_the_ring_wraps_and_keeps_the_newest_lap(tmp_path: Path) -> None:
    ring = IntakeRing(tmp_path / "ring", size=8192)
    ring.open()
    for i in range(200):
        ring.append(i, i, _payload(i))
    intakes = [e.intake for e in ring.scan()]
    assert intakes[-1] == 199
    assert intakes == sorted(intakes)
    assert len(intakes) >= 10
    assert intakes == list(range(intakes[0], 200)) or set(intakes) <= set(range(200))


def test_an_oversized_entry_is_not_kept_in_the_ring(tmp_path: Path) -> None:
    ring = IntakeRing(tmp_path / "ring", size=1 << 16)
    ring.open()
    assert not ring.append(1, 1, b"x" * (2 << 20))


def test_recovery_spools_entries_newer_than_the_spool_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    ring_path = tmp_path / "ring"
    # A process spooled intake 0..4, emitted 5..9 into the ring, and was killed before writing them.
    spool = Spool(spool_dir, secret=SECRET)
    spool.open()
    spool.append([_statement(i) for i in range(5)], [0, 1, 2, 3, 4])
    spool.close()
    ring = IntakeRing(ring_path, size=1 << 16)
    ring.open()
    now = time.time_ns()
    for i in range(10):
        ring.append(i, now + i, _payload(i))
    ring.close()

    sink = MemorySink()
    p = AuditPipeline(spool=Spool(spool_dir, secret=SECRET), sinks=[sink], intake_ring=IntakeRing(ring_path, 1 << 16))
    p.open()
    _wait(lambda: len(sink.events) >= 11)
    p.emit(_statement(10))
    _wait(lambda: len(sink.events) >= 12)
    p.close()
    ids = [e["event_id"] for e in sink.events if e["kind"] == "statement"]
    assert ids == [_statement(i)["event_id"] for i in range(11)]  # 0..4 spooled before, 5..9 recovered, then 10
    alert = next(e for e in sink.events if e["kind"] == "alert")
    assert alert["details"]["alert"] == "audit_intake_recovered"  # type: ignore[index]  # a details dict
    assert alert["details"]["recovered"] == 5  # type: ignore[index]  # a details dict
    assert not ring_path.exists()  # a clean stop discards the ring
    assert verify(spool_dir).ok

    # A second start recovers nothing again.
    sink2 = MemorySink()
    p2 = AuditPipeline(spool=Spool(spool_dir, secret=SECRET), sinks=[sink2], intake_ring=IntakeRing(ring_path, 1 << 16))
    p2.open()
    p2.close()
    assert [e for e in sink2.events if e["kind"] == "statement"] == []


def test_rings_whose_spool_is_gone_are_removed(tmp_path: Path) -> None:
    from sqlbastion.audit.intake import remove_orphans

    rings = tmp_path / "shm"
    rings.mkdir()
    alive, gone = tmp_path / "alive-spool", tmp_path / "gone-spool"
    alive.mkdir()
    gone.mkdir()
    for name, owner in (("sqlbastion-intake-a", alive), ("sqlbastion-intake-b", gone)):
        ring = IntakeRing(rings / name, size=1 << 16, owner=owner)
        ring.open()
        ring.append(1, 1, b"{}")
        ring.close()
    gone.rmdir()
    assert remove_orphans(rings) == 1
    assert [p.name for p in rings.iterdir()] == ["sqlbastion-intake-a"]
