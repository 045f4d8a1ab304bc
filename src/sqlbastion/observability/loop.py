"""Event loop lag: how late the loop runs a timer, a direct measure of proxy saturation.

Every connection of both proxies shares one event loop, so when CPU-bound work
(parsing, masking) or a blocking call holds it, every statement waits. The
monitor sleeps ``interval_s`` and records how much later than asked it woke,
keeping the highest lag seen over each reporting period in
``sqlbastion_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio
import time

from sqlbastion.observability.metrics import METRICS, Metrics

__all__ = ["monitor_event_loop_lag"]


async def monitor_event_loop_lag(
    *, interval_s: float = 0.25, report_every_s: float = 1.0, metrics: Metrics = METRICS
) -> None:
    """Run until cancelled."""
    worst = 0.0
    period_start = time.monotonic()
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval_s)
        now = time.monotonic()
        worst = max(worst, now - before - interval_s)
        if now - period_start >= report_every_s:
            metrics.event_loop_lag.set(max(0.0, worst))
            worst = 0.0
            period_start = now
