"""The intake ring as a queue (the writer in its own process): nothing is overwritten before the
consumer released it, laps are followed, a new reader resumes where the last one released."""

from __future__ import annotations

import json
import random
from pathlib import Path

from sqlbastion.audit.intake import (
    CTRL_CONSUMED_TOTAL,
    CTRL_HANDLED,
    CTRL_LAST_INTAKE,
    MAX_ENTRY_BYTES,
    IntakeReader,
    IntakeRing,
)


def _ring(tmp_path: Path, size: int = 8192, next_intake: int = 0) -> IntakeRing:
    ring = IntakeRing(tmp_path / "ring", size=size)
    ring.open()
    IntakeReader.reset(ring, next_intake)
    ring.start_queue(next_intake)
    return ring


def _payload(i: int, pad: int = 0) -> bytes:
    return json.dumps({"i": i, "pad": "x" * pad}).encode()


def test_entries_come_out_in_order_across_many_laps(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=4096 + 2048)
    reader = IntakeReader(ring)
    rng = random.Random(7)
    sent = got = 0
    while got < 2000:
        # The producer appends until the ring is full, the consumer takes and releases a few.
        while sent < 2000 and ring.push(sent, sent * 10, _payload(sent, rng.randrange(0, 300))):
            sent += 1
        entries = reader.read(rng.randrange(1, 8))
        for e in entries:
            assert e.intake == got
            assert e.ts_ns == got * 10
            assert json.loads(e.payload)["i"] == got
            got += 1
        reader.release(len(entries))
    assert ring.ctrl(CTRL_HANDLED) == 1999
    assert ring.ctrl(CTRL_LAST_INTAKE) == 1999


def test_the_producer_never_overwrites_what_the_consumer_has_not_released(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=4096 + 1024)
    reader = IntakeReader(ring)
    n = 0
    while ring.push(n, 0, _payload(n, 40)):
        n += 1
    assert n > 5
    # Read everything but release nothing: still no room.
    assert len(reader.read(1000)) == n
    assert not ring.push(n, 0, _payload(n, 40))
    reader.release(1)
    assert ring.push(n, 0, _payload(n, 40))
    assert not ring.push(n + 1, 0, _payload(n + 1, 40))
    assert ring.ctrl(CTRL_CONSUMED_TOTAL) > 0


def test_a_new_reader_resumes_at_the_oldest_unreleased_entry(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=1 << 16, next_intake=100)
    for i in range(100, 110):
        assert ring.push(i, i, _payload(i))
    first = IntakeReader(ring)
    assert [e.intake for e in first.read(6)] == [100, 101, 102, 103, 104, 105]
    first.release(3)  # 100..102 handled; 103..105 read but not handled when it "dies"
    again = IntakeReader(ring)
    assert [e.intake for e in again.read(100)] == list(range(103, 110))


def test_entries_of_an_earlier_run_are_not_taken_for_new_ones(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=1 << 16, next_intake=0)
    for i in range(20):
        ring.push(i, i, _payload(i))
    # A restart after recovery: numbering goes on from 20, reading starts at the data area again.
    IntakeReader.reset(ring, 20)
    ring.start_queue(20)
    reader = IntakeReader(ring)
    assert reader.read(10) == []  # the old entries 0..19 are still there, but none is number 20
    ring.push(20, 0, _payload(20))
    assert [e.intake for e in reader.read(10)] == [20]


def test_a_torn_entry_is_not_read_until_it_is_whole(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=1 << 16)
    reader = IntakeReader(ring)
    assert ring.push(0, 0, _payload(0, 100))
    assert ring._map is not None
    saved = ring._map[4096 + 40 : 4096 + 44]
    ring._map[4096 + 40 : 4096 + 44] = b"ZZZZ"  # as if the copy were still under way
    assert reader.read(10) == []
    ring._map[4096 + 40 : 4096 + 44] = saved
    assert [e.intake for e in reader.read(10)] == [0]


def test_an_entry_larger_than_allowed_is_refused(tmp_path: Path) -> None:
    ring = _ring(tmp_path, size=4 << 20)
    assert not ring.push(0, 0, b"x" * (MAX_ENTRY_BYTES + 1))
    assert ring.push(0, 0, b"{}")


def test_random_interleavings_with_consumer_restarts_deliver_every_entry_in_order(tmp_path: Path) -> None:
    """Producer pushes, consumer reads, handles a prefix, and sometimes "dies" (a new reader takes
    over from the control block): every entry is handled exactly once, in order, across many laps."""
    rng = random.Random(2026)
    ring = _ring(tmp_path, size=4096 + 3000)
    reader = IntakeReader(ring)
    handled: list[int] = []
    sent = 0
    in_hand: list[int] = []  # read, not yet handled
    for _ in range(4000):
        for _ in range(rng.randrange(0, 6)):
            if sent < 3000 and ring.push(sent, sent, _payload(sent, rng.randrange(0, 500))):
                sent += 1
        in_hand.extend(e.intake for e in reader.read(rng.randrange(0, 10)))
        done = rng.randrange(0, len(in_hand) + 1)
        handled.extend(in_hand[:done])
        reader.release(done)
        in_hand = in_hand[done:]
        if rng.random() < 0.05:
            reader = IntakeReader(ring)  # the writer process died: what it held unhandled is read again
            in_hand = []
    while len(handled) < sent:
        in_hand.extend(e.intake for e in reader.read(100))
        handled.extend(in_hand)
        reader.release(len(in_hand))
        in_hand = []
    assert handled == list(range(sent))
    assert sent > 500
