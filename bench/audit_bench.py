"""Audit pipeline throughput into SQLite, and what emitting costs the data path.

Run: ``.venv/bin/python bench/audit_bench.py [--events 200000] [--rate 20000] [--seconds 5] [--json]``
(``--steps``: only the writer's and the delivery's steps timed in this process, the figure least
disturbed by other load on the machine).

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

Recorded on the 2-core development machine (2026-11-25), ``--events 60000 --seconds 3``::

    before (writer thread in the proxy, load average 0.5):
      proxy process 40.5 µs CPU per event; burst 20,928 events/s into SQLite;
      paced 20,000/s: loop lag p99 21.6 ms (1.1 ms without the pipeline)
    after (writer process fed through the intake ring, load average 0.9):
      proxy process 7.5 µs, writer process 38.5 µs, delivery process 39.3 µs CPU per event;
      burst 21,821 events/s into SQLite; paced 20,000/s: loop lag p99 4.0 ms (1.4 ms without)
    after, with the children at nice +5 (load average 4.2 from other test suites):
      proxy 7.0 µs, writer 35.0 µs, delivery 34.3 µs CPU per event;
      paced 20,000/s: loop lag p99 11.6 ms (3.0 ms without)

The proxy process only serialises events into the ring; the writer and the delivery processes
each need well under one core at 20,000 events/s. See docs/audit.md, "Throughput".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlbastion.audit.delivery import DeliveryProcess
from sqlbastion.audit.intake import IntakeRing, ring_path_for
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.spool import Spool
from sqlbastion.observability.metrics import METRICS


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


def _pipeline(directory: Path, delivery: str) -> tuple[AuditPipeline, str]:
    """The pipeline as ``serve`` builds it: intake ring, spool, one SQLite sink (in a child process
    by default, or on a thread)."""
    spool = Spool(directory / "spool", secret=b"bench", segment_bytes=64 << 20)
    ring_path = ring_path_for(spool.directory)
    process = None
    sinks: list[SQLiteSink] = []
    if delivery == "process":
        process = DeliveryProcess(
            spool_dir=spool.directory,
            base_dir=directory,
            sinks=[{"type": "sqlite", "name": "sqlite", "path": str(directory / "audit.db"), "batch_size": 2000}],
            grace_s=60,
        )
    else:
        sinks = [SQLiteSink(path=directory / "audit.db")]
    pipeline = AuditPipeline(
        spool=spool,
        sinks=sinks,
        fsync="interval",
        fsync_interval_ms=50,
        max_queue=1_000_000,
        intake_ring=IntakeRing(ring_path, owner=spool.directory) if ring_path is not None else None,
        delivery_process=process,
        # As serve runs it: the spool writer in a process of its own whenever the sinks are.
        writer="process" if delivery == "process" else "thread",
    )
    return pipeline, "sqlite"


def _wait_delivered(p: AuditPipeline, sink: str, timeout: float) -> float:
    started = time.perf_counter()
    deadline = started + timeout
    p.flush(timeout)
    while time.perf_counter() < deadline:
        if p.sink_cursors().get(sink, -1) >= p.written_seq():
            break
        time.sleep(0.005)
    return time.perf_counter() - started


def _cpu_s(proc: Any) -> float:
    """CPU seconds a child process used so far (Linux /proc); 0 when there is none."""
    if proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_cpu_s(p: AuditPipeline) -> float:
    """CPU seconds of the delivery child so far, 0 in thread mode."""
    return _cpu_s(p._process.proc if p._process is not None else None)


def _writer_cpu_s(p: AuditPipeline) -> float:
    """CPU seconds of the writer child so far, 0 when the writer is a thread of this process."""
    return _cpu_s(p._writer_process.proc if p._writer_process is not None else None)


def _settled_cpu_s(p: AuditPipeline, limit_s: float = 5.0) -> tuple[float, float]:
    """The children's CPU seconds once their start-up (imports, spool recovery, SQLite schema) is
    over: polled until neither grows for 0.2 s. Subtracted from the burst's figures, so that they
    are CPU per event in steady state, not start-up spread over the events of one run."""
    deadline = time.monotonic() + limit_s
    last = (_writer_cpu_s(p), _child_cpu_s(p))
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = (_writer_cpu_s(p), _child_cpu_s(p))
        if now == last:
            break
        last = now
    return last


def burst(n: int, delivery: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqlbastion-audit-bench-") as d:
        p, sink = _pipeline(Path(d), delivery)
        p.open()
        writer_start_s, child_start_s = _settled_cpu_s(p)
        events = [statement_event(i) for i in range(n)]
        lost_before = METRICS.audit_lost._value.get()
        cpu_started = time.process_time()
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
        cpu_s = time.process_time() - cpu_started
        child_cpu_s = _child_cpu_s(p) - child_start_s
        writer_cpu_s = _writer_cpu_s(p) - writer_start_s
        p.close()
        samples.sort()
        return {
            "events": n,
            "emit_seconds": round(emitted_s, 3),
            "emit_ns_p50": samples[len(samples) // 2],
            "emit_ns_p99": samples[int(len(samples) * 0.99)],
            "end_to_end_seconds": round(total_s, 3),
            "events_per_second": round(n / total_s),
            # CPU time, which the machine's other load does not inflate the way it does wall time:
            # the proxy process's share (emit, redaction, chain, spool) and the delivery child's.
            "proxy_process_cpu_us_per_event": round(cpu_s / n * 1e6, 1),
            "delivery_process_cpu_us_per_event": round(child_cpu_s / n * 1e6, 1),
            "writer_process_cpu_us_per_event": round(writer_cpu_s / n * 1e6, 1),
            # Start-up CPU of the children (not in the per-event figures above).
            "writer_process_startup_cpu_s": round(writer_start_s, 3),
            "delivery_process_startup_cpu_s": round(child_start_s, 3),
            "events_per_proxy_cpu_second": round(n / cpu_s),
            # Must be 0: an event lost would make every figure above meaningless.
            "lost_events": int(METRICS.audit_lost._value.get() - lost_before),
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


def paced(rate: int, seconds: float, delivery: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sqlbastion-audit-bench-") as d:
        p, sink = _pipeline(Path(d), delivery)
        p.open()
        lost_before = METRICS.audit_lost._value.get()
        result = asyncio.run(_paced_loop(p, rate, seconds))
        result["rate"] = rate
        result["sink_lag_at_end"] = max(0, p.written_seq() - p.sink_cursors().get(sink, -1))
        result["drain_seconds"] = round(_wait_delivered(p, sink, 600), 3)
        result["achieved_events_per_second"] = round(result["emitted"] / (seconds + result["drain_seconds"]))
        result["lost_events"] = int(METRICS.audit_lost._value.get() - lost_before)
        p.close()
        return result


def steps(n: int, repeats: int = 3) -> dict[str, float]:
    """CPU per event of the writer's steps (decode, build with redaction, seal, spool append) and of
    the delivery's (spool read, SQLite rows and insert), run in this process on the same events:
    much less noise than the children's figures on a shared machine. Best of ``repeats``."""
    import gc

    from sqlbastion.audit import jsontext
    from sqlbastion.audit.events import EventBuilder
    from sqlbastion.audit.spool import SpoolReader

    gc.freeze()
    gc.set_threshold(100_000, 50, 50)  # as the writer and delivery processes run
    payloads = [jsontext.dumps(statement_event(i)) for i in range(n)]
    writer_us = delivery_us = float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="sqlbastion-audit-bench-") as d:
            spool = Spool(Path(d) / "spool", secret=b"bench", segment_bytes=64 << 20)
            p = AuditPipeline(spool=spool, sinks=[], builder=EventBuilder(secrets=("a-backend-password",)))
            spool.open()
            started = time.process_time()
            for k in range(0, n, 2048):
                built: list[dict[str, Any]] = []
                intakes: list[int | None] = []
                for i in range(k, min(n, k + 2048)):
                    built.extend(p._build(1_764_043_200_000_000_000 + i * 1000, jsontext.loads(payloads[i])))
                    intakes.append(i)
                spool.append(built, intakes)
                del built
            writer_us = min(writer_us, (time.process_time() - started) / n * 1e6)
            sink = SQLiteSink(path=Path(d) / "audit.db")
            asyncio.run(sink.open())
            reader = SpoolReader(spool.directory, -1)
            started = time.process_time()
            while True:
                records, _ = reader.read(spool.written_seq, 2000)
                if not records:
                    break
                sink._insert(records)
            delivery_us = min(delivery_us, (time.process_time() - started) / n * 1e6)
            spool.close()
            asyncio.run(sink.close())
    return {
        "writer_steps_cpu_us_per_event": round(writer_us, 1),
        "delivery_steps_cpu_us_per_event": round(delivery_us, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--delivery", choices=("process", "thread"), default="process")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--steps", action="store_true", help="only the in-process step timings (writer, delivery)")
    args = parser.parse_args(argv)
    if args.steps:
        sys.stdout.write(json.dumps(steps(min(args.events, 40_000))) + "\n")
        return 0
    load = os.getloadavg()[0]
    results: dict[str, Any] = {
        "burst": burst(args.events, args.delivery),
        "paced": paced(args.rate, args.seconds, args.delivery),
        "baseline_loop": asyncio.run(_paced_loop(None, args.rate, args.seconds)),
        "load_average_at_start": round(load, 2),
        "cpus": os.cpu_count(),
    }
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return 0
    b, pc, base = results["burst"], results["paced"], results["baseline_loop"]
    sys.stdout.write(f"machine: {results['cpus']} CPUs, load average {results['load_average_at_start']}\n")
    sys.stdout.write(
        f"burst: {b['events']} events, emit {b['emit_ns_p50']} ns p50 / {b['emit_ns_p99']} ns p99 per call, "
        f"end to end {b['events_per_second']} events/s into SQLite; CPU per event: "
        f"{b['proxy_process_cpu_us_per_event']} µs in the proxy process "
        f"({b['events_per_proxy_cpu_second']} events per CPU-second), "
        f"{b['writer_process_cpu_us_per_event']} µs in the writer process, "
        f"{b['delivery_process_cpu_us_per_event']} µs in the delivery process\n"
        f"paced {pc['rate']}/s for {args.seconds}s: loop lag p50 {pc['loop_lag_ms_p50']} ms, "
        f"p99 {pc['loop_lag_ms_p99']} ms (without the pipeline: {base['loop_lag_ms_p50']} / "
        f"{base['loop_lag_ms_p99']} ms); sink lag at the end {pc['sink_lag_at_end']} events, "
        f"drained in {pc['drain_seconds']} s\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
