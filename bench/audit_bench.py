"""Audit pipeline throughput into SQLite, and what emitting costs the data path.

Run: ``.venv/bin/python bench/audit_bench.py [--events 200000] [--rate 20000] [--seconds 5] [--json]``

Three measurements, each with a fresh spool and SQLite database in a temporary directory:

1. **Burst**: emit ``--events`` statement events as fast as one thread can, then wait until the
   SQLite sink has committed all of them. Reports the emit cost per call (the data path's whole
   share) and end-to-end events/s (emit → redaction → chained spool → SQLite commit).
2. **Paced**: emit at ``--rate`` events/s for ``--seconds`` from an asyncio loop (as the proxy
   does) and measure the loop's own scheduling lag while the pipeline works, the sink's lag at
   the end, and how long the backlog takes to drain. "Keeps up" means the drain time is small.
3. **Loop lag baseline**: the same loop with no pipeline, to compare the lag against.

The events look like the ones ``Session.finish`` emits: a redacted statement with literals, a
person, objects and columns, a decision, timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.spool import Spool


def statement_event(i: int) -> dict[str, object]:
    return {
        "kind": "statement",
        "event_id": f"0193a000-0000-7000-8000-{i:012d}",
        "session_id": f"0193a000-0000-7000-9000-{i % 64:012d}",
        "person": ("dev", "analyst", "dba")[i % 3],
        "roles": ["developer"],
        "client_address": "127.0.0.1",
        "application_name": "sysbench",
        "protocol": "mysql" if i % 2 else "postgres",
        "backend": "core",
        "database": "bank",
        "sql_text": f"SELECT id, name, city FROM customers WHERE id = {i} AND city = 'Shanghai'",
        "decision": "allow",
        "rule_ids": [],
        "reason": "",
        "statement_types": ["select"],
        "fingerprint": "9f2c1e",
        "objects_read": ["bank.customers"],
        "objects_written": [],
        "columns_read": ["bank.customers.id", "bank.customers.name", "bank.customers.city"],
        "sensitive_columns": [],
        "rows": 1,
        "affected": 0,
        "bytes_sent": 180,
        "backend_error": None,
        "proxy_us": 60,
        "backend_us": 250,
        "masked_values": 0,
        "policy_version": "v1",
    }


def _pipeline(directory: Path) -> tuple[AuditPipeline, SQLiteSink]:
    sink = SQLiteSink(path=directory / "audit.db")
    spool = Spool(directory / "spool", secret=b"bench", segment_bytes=64 << 20)
    return AuditPipeline(spool=spool, sinks=[sink], fsync="interval", fsync_interval_ms=50, max_queue=1_000_000), sink


def _wait_delivered(p: AuditPipeline, sink: SQLiteSink, timeout: float) -> float:
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if p._written_count >= p._emitted and p.sink_cursors().get(sink.name, -1) >= p.spool.written_seq:
            break
        time.sleep(0.005)
    return time.perf_counter() - started


def burst(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqlbastion-audit-bench-") as d:
        p, sink = _pipeline(Path(d))
        p.open()
        events = [statement_event(i) for i in range(n)]
        started = time.perf_counter()
        samples: list[int] = []
        for i, e in enumerate(events):
            if i % 100 == 0:
                t0 = time.perf_counter_ns()
                p.emit(e)
                samples.append(time.perf_counter_ns() - t0)
            else:
                p.emit(e)
        emitted_s = time.perf_counter() - started
        _wait_delivered(p, sink, 600)
        total_s = time.perf_counter() - started
        p.close()
        samples.sort()
        return {
            "events": n,
            "emit_seconds": round(emitted_s, 3),
            "emit_ns_p50": samples[len(samples) // 2],
            "emit_ns_p99": samples[int(len(samples) * 0.99)],
            "end_to_end_seconds": round(total_s, 3),
            "events_per_second": round(n / total_s),
        }


async def _paced_loop(p: AuditPipeline | None, rate: int, seconds: float) -> dict[str, Any]:
    """Emit ``rate`` events/s in 1 ms ticks and record how late each tick ran."""
    loop = asyncio.get_running_loop()
    tick = 0.001
    per_tick = max(1, rate // 1000)
    lags: list[float] = []
    start = loop.time()
    i = 0
    next_at = start
    while loop.time() - start < seconds:
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        lags.append(max(0.0, loop.time() - next_at))
        if p is not None:
            for _ in range(per_tick):
                p.emit(statement_event(i))
                i += 1
    lags.sort()
    return {
        "loop_lag_ms_p50": round(statistics.median(lags) * 1000, 3),
        "loop_lag_ms_p99": round(lags[int(len(lags) * 0.99)] * 1000, 3),
        "emitted": i,
    }


def paced(rate: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqlbastion-audit-bench-") as d:
        p, sink = _pipeline(Path(d))
        p.open()
        result = asyncio.run(_paced_loop(p, rate, seconds))
        result["rate"] = rate
        result["sink_lag_at_end"] = max(0, p.spool.written_seq - p.sink_cursors().get(sink.name, -1))
        result["drain_seconds"] = round(_wait_delivered(p, sink, 600), 3)
        result["achieved_events_per_second"] = round(result["emitted"] / (seconds + result["drain_seconds"]))
        p.close()
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = {
        "burst": burst(args.events),
        "paced": paced(args.rate, args.seconds),
        "baseline_loop": asyncio.run(_paced_loop(None, args.rate, args.seconds)),
    }
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return 0
    b, pc, base = results["burst"], results["paced"], results["baseline_loop"]
    sys.stdout.write(
        f"burst: {b['events']} events, emit {b['emit_ns_p50']} ns p50 / {b['emit_ns_p99']} ns p99 per call, "
        f"end to end {b['events_per_second']} events/s into SQLite\n"
        f"paced {pc['rate']}/s for {args.seconds}s: loop lag p50 {pc['loop_lag_ms_p50']} ms, "
        f"p99 {pc['loop_lag_ms_p99']} ms (without the pipeline: {base['loop_lag_ms_p50']} / "
        f"{base['loop_lag_ms_p99']} ms); sink lag at the end {pc['sink_lag_at_end']} events, "
        f"drained in {pc['drain_seconds']} s\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
