"""Retry backoff: grows exponentially with jitter, capped, reset on success."""

from __future__ import annotations

import random

from sqlbastion.audit.sinks.base import Backoff


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(base=0.1, cap=5.0, floor=0.0, rng=random.Random(1))
    ceilings = []
    for n in range(12):
        delay = b.next_delay()
        ceiling = min(5.0, 0.1 * 2**n)
        assert 0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings[-1] == 5.0
    assert b.failures == 12


def test_backoff_has_a_floor_and_resets() -> None:
    b = Backoff(base=0.1, cap=5.0, floor=0.05, rng=random.Random(2))
    assert all(b.next_delay() >= 0.05 for _ in range(50))
    b.reset()
    assert b.failures == 0
    assert b.next_delay() <= 0.1


def test_jitter_spreads_retries() -> None:
    delays = {round(Backoff(base=1, cap=10, rng=random.Random(seed)).next_delay(), 6) for seed in range(20)}
    assert len(delays) > 10
