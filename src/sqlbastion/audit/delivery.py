"""Sink delivery: one task per sink, reading the spool from its own cursor.

``SinkRunner`` is the delivery loop. It runs either on a thread of the proxy
process (``audit.delivery = "thread"``) or, by default, in a child process
(``"process"``): then sinks' work (reading segments, decoding JSON, SQLite
inserts, network clients) never competes with the proxy for its interpreter
lock, and a sink that misbehaves cannot stall the proxy at all.

Child process protocol (``python -m sqlbastion.audit.delivery``):

* stdin: one JSON object — ``spool_dir``, ``base_dir`` (for relative sink
  paths), ``parent_pid``, ``grace_s`` and ``sinks`` (each ``[[audit.sinks]]``
  table as the configuration gave it, secrets as references, which the child
  resolves itself from its inherited environment).
* ``<spool>/writer.state`` (``WriterState``): a 16-byte shared mapping the
  writer updates with plain memory stores — the last seq written (records up
  to it are complete on disk) and a "closed" flag once the spool is closed.
* The child writes each sink's cursor to ``<spool>/cursors/<sink>`` and its
  counters to ``<spool>/delivery.stats`` (JSON, about twice a second); the
  parent reads both to release segments and to export the metrics.
* The child exits once the spool is closed and every sink caught up, when the
  grace period after closing ran out, or when its parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import mmap
import os
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlbastion import logs
from sqlbastion.audit.sinks.base import Backoff, Sink
from sqlbastion.audit.spool import SpoolReader
from sqlbastion.observability.metrics import METRICS

__all__ = ["STATS_FILE", "SinkRunner", "WriterState", "load_cursor", "read_stats"]

log = logs.get_logger("audit.delivery")

STATS_FILE = "delivery.stats"
STATE_FILE = "writer.state"
_IDLE_WAKE_S = 0.5
_STATS_EVERY_S = 0.5
_STATE = struct.Struct("<qq")


class WriterState:
    """The writer's progress in a tiny shared mapping: written seq and a closed flag."""

    def __init__(self, directory: Path, *, create: bool) -> None:
        path = directory / STATE_FILE
        flags = os.O_RDWR | (os.O_CREAT if create else 0) | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, _STATE.size)
            self._map = mmap.mmap(fd, _STATE.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        if create:
            self.publish(-1, closed=False)

    def publish(self, written_seq: int, *, closed: bool) -> None:
        _STATE.pack_into(self._map, 0, written_seq, 1 if closed else 0)

    def read(self) -> tuple[int, bool]:
        seq, closed = _STATE.unpack_from(self._map, 0)
        return int(seq), bool(closed)

    def close(self) -> None:
        with contextlib.suppress(ValueError, BufferError):
            self._map.close()


def cursor_path(spool_dir: Path, name: str) -> Path:
    return spool_dir / "cursors" / name


def load_cursor(spool_dir: Path, name: str) -> int:
    try:
        return int(cursor_path(spool_dir, name).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return -1


def _save_cursor(spool_dir: Path, name: str, seq: int) -> None:
    path = cursor_path(spool_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{seq}\n", encoding="ascii")
    os.replace(tmp, path)


def read_stats(spool_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((spool_dir / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(kw_only=True, slots=True)
class _SinkState:
    sink: Sink
    confirmed: int
    delivered: int
    delivered_total: int = 0
    errors_total: int = 0
    up: bool = False


class SinkRunner:
    """Delivers the spool to every sink; see the module docstring for where it runs."""

    def __init__(
        self,
        spool_dir: Path,
        sinks: Sequence[Sink],
        *,
        limit: Callable[[], int],
        writer_done: Callable[[], bool],
        on_confirmed: Callable[[], None] | None = None,
        export_metrics: bool = True,
        poll_s: float | None = None,
    ) -> None:
        self.spool_dir = spool_dir
        self.sinks = list(sinks)
        self._limit = limit
        self._writer_done = writer_done
        self._on_confirmed = on_confirmed
        self._export = export_metrics
        self._poll_s = poll_s  # process mode: no writer thread to wake us, so poll
        self.states: list[_SinkState] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop_wake: asyncio.Event | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._drain_deadline: float | None = None

    # -- thread-safe controls ------------------------------------------------------------------

    def notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already stopped
                loop.call_soon_threadsafe(wake.set)

    def begin_drain(self, grace_s: float) -> None:
        """The spool is closing: sinks get ``grace_s`` more to catch up."""
        self._drain_deadline = time.monotonic() + grace_s
        loop, stop_wake = self._loop, self._stop_wake
        if loop is not None and stop_wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_wake.set)
        self.notify()

    def cursors(self) -> dict[str, int]:
        return {st.sink.name: st.confirmed for st in self.states}

    def required_cursor(self) -> int | None:
        """How far every required sink has acknowledged; with no required sink, every sink."""
        required = [st.confirmed for st in self.states if st.sink.required] or [st.confirmed for st in self.states]
        return min(required) if required else None

    def _drain_expired(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() > self._drain_deadline

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, started: Callable[[], None] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop_wake = asyncio.Event()
        self.states = [
            _SinkState(sink=s, confirmed=load_cursor(self.spool_dir, s.name), delivered=-1) for s in self.sinks
        ]
        for st in self.states:
            st.delivered = st.confirmed
        self._events = {s.name: asyncio.Event() for s in self.sinks}
        if started is not None:
            started()
        tasks = [asyncio.create_task(self._deliver(st), name=f"audit-sink-{st.sink.name}") for st in self.states]
        waker = asyncio.create_task(self._fan_out_wakes(), name="audit-sink-waker")
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.2)
            if pending and self._drain_expired():
                # The grace period is over: a sink stuck in a delivery is cancelled.
                # Its events stay in the spool for the next start.
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                break
        waker.cancel()
        for st in self.states:
            with contextlib.suppress(Exception):
                await st.sink.close()

    async def _fan_out_wakes(self) -> None:
        wake = self._wake
        while wake is not None:
            if self._poll_s is None:
                await wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._poll_s)
            wake.clear()
            for ev in self._events.values():
                ev.set()

    async def _deliver(self, st: _SinkState) -> None:
        sink = st.sink
        wake = self._events[sink.name]
        reader = SpoolReader(self.spool_dir, st.confirmed)
        backoff = Backoff()
        opened = False
        try:
            while True:
                limit = self._limit()
                done = self._writer_done()
                if done and st.confirmed >= limit:
                    return
                if done and self._drain_expired():
                    log.warning("audit sink did not catch up before shutdown", sink=sink.name)
                    return
                try:
                    if not opened:
                        await sink.open()
                        opened = True
                    records, pos = reader.read(limit, sink.batch_size)
                    if records:
                        await sink.deliver(records)
                        st.delivered_total += len(records)
                        if self._export:
                            METRICS.audit_sink_delivered.labels(sink.name).inc(len(records))
                    st.delivered = pos
                    # The cursor never moves back: a sink may confirm less than it was given.
                    confirmed = max(st.confirmed, sink.confirmed(st.delivered))
                except Exception as exc:
                    await self._failed(st, reader, backoff, exc)
                    opened = False
                    continue
                backoff.reset()
                st.up = True
                if self._export:
                    METRICS.audit_sink_up.labels(sink.name).set(1)
                if confirmed != st.confirmed:
                    st.confirmed = confirmed
                    _save_cursor(self.spool_dir, sink.name, confirmed)
                    if self._on_confirmed is not None:
                        try:
                            self._on_confirmed()
                        except Exception:  # releasing segments must never stop a sink's delivery
                            log.exception("releasing acknowledged spool segments failed")
                if self._export:
                    METRICS.audit_sink_lag.labels(sink.name).set(max(0, self._limit() - st.confirmed))
                if not records and st.delivered >= self._limit():
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), _IDLE_WAKE_S)
        finally:
            reader.close()

    async def _failed(self, st: _SinkState, reader: SpoolReader, backoff: Backoff, exc: Exception) -> None:
        """Count the failure, drop the sink's connection, rewind to the confirmed cursor, wait."""
        sink = st.sink
        st.errors_total += 1
        st.up = False
        if self._export:
            METRICS.audit_sink_errors.labels(sink.name).inc()
            METRICS.audit_sink_up.labels(sink.name).set(0)
        delay = backoff.next_delay()
        log.warning("audit sink delivery failed", sink=sink.name, error=str(exc)[:300], retry_in_s=round(delay, 3))
        with contextlib.suppress(Exception):
            await sink.reset()
        reader.rewind(st.confirmed)
        st.delivered = st.confirmed
        if self._stop_wake is not None:
            # Shutdown cuts the wait short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_wake.wait(), delay)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {
            st.sink.name: {
                "confirmed": st.confirmed,
                "delivered_total": st.delivered_total,
                "errors_total": st.errors_total,
                "up": st.up,
                "required": st.sink.required,
            }
            for st in self.states
        }


# -- the child process ------------------------------------------------------------------------------


def _child_main(config: dict[str, Any]) -> int:
    from sqlbastion.audit.sinks.base import build_sink
    from sqlbastion.audit.writer import CHILD_NICENESS
    from sqlbastion.config import LoggingSettings, SinkSettings
    from sqlbastion.settings_schema import build

    # Audit work yields the CPU to the proxy's event loop: under contention the ring absorbs the
    # difference (and the failure policy applies if it ever fills) instead of clients waiting.
    with contextlib.suppress(OSError):
        os.nice(CHILD_NICENESS)
    logs.configure(LoggingSettings(format=config.get("log_format", "console"), level=config.get("log_level", "info")))
    spool_dir = Path(config["spool_dir"])
    base_dir = Path(config["base_dir"])
    parent = int(config["parent_pid"])
    grace_s = float(config["grace_s"])

    def resolve(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base_dir / p

    sinks = [
        build_sink(build(SinkSettings, data, file="<audit delivery>", prefix=f"audit.sinks[{i}]"), resolve)
        for i, data in enumerate(config["sinks"])
    ]
    state = WriterState(spool_dir, create=False)
    closed_seen: list[float] = []

    def writer_done() -> bool:
        _, closed = state.read()
        if closed and not closed_seen:
            closed_seen.append(time.monotonic())
            runner.begin_drain(grace_s)
        return closed

    runner = SinkRunner(
        spool_dir,
        sinks,
        limit=lambda: state.read()[0],
        writer_done=writer_done,
        export_metrics=False,
        poll_s=0.01,
    )

    async def watch() -> None:
        while True:
            await asyncio.sleep(_STATS_EVERY_S)
            _write_stats(spool_dir, runner.stats())
            if os.getppid() != parent:
                log.warning("the proxy process is gone; audit delivery stops (the next start resumes)")
                runner.begin_drain(0)
            writer_done()

    async def main() -> None:
        watcher = asyncio.create_task(watch(), name="audit-delivery-watch")
        try:
            await runner.run()
        finally:
            watcher.cancel()
            _write_stats(spool_dir, runner.stats())

    # Spooled records are acyclic and freed by reference counting; the cyclic collector would only
    # rescan every batch in flight. The objects of start-up are frozen out of it.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)
    asyncio.run(main())
    state.close()
    return 0


def _write_stats(spool_dir: Path, stats: dict[str, dict[str, Any]]) -> None:
    tmp = spool_dir / (STATS_FILE + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(stats), encoding="utf-8")
        os.replace(tmp, spool_dir / STATS_FILE)


def _delta(now: int, before: int) -> int:
    # A restarted child counts from zero again.
    return now - before if now >= before else now


class DeliveryProcess:
    """The parent's handle on the child: start, watch (metrics, release), restart, stop."""

    def __init__(self, *, spool_dir: Path, base_dir: Path, sinks: list[dict[str, Any]], grace_s: float) -> None:
        self.spool_dir = spool_dir
        self.base_dir = base_dir
        self.sink_settings = sinks
        self.grace_s = grace_s
        self.proc: Any = None
        self._last: dict[str, dict[str, Any]] = {}
        self.names = [str(d.get("name") or d["type"]) for d in sinks]
        self.required_names = [str(d.get("name") or d["type"]) for d in sinks if d.get("required", True)]

    def start(self, *, log_format: str = "console", log_level: str = "info") -> None:
        import subprocess

        config = {
            "spool_dir": str(self.spool_dir),
            "base_dir": str(self.base_dir),
            "parent_pid": os.getpid(),
            "grace_s": self.grace_s,
            "sinks": self.sink_settings,
            "log_format": log_format,
            "log_level": log_level,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sqlbastion.audit.delivery"], stdin=subprocess.PIPE, close_fds=True
        )
        assert self.proc.stdin is not None  # stdin=PIPE was asked for
        self.proc.stdin.write(json.dumps(config).encode("utf-8"))
        self.proc.stdin.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll_stats(self) -> dict[str, dict[str, Any]]:
        """Read the child's counters and export them as metrics (deltas for counters)."""
        stats = read_stats(self.spool_dir)
        for name, s in stats.items():
            before = self._last.get(name, {})
            delivered = _delta(int(s.get("delivered_total", 0)), int(before.get("delivered_total", 0)))
            errors = _delta(int(s.get("errors_total", 0)), int(before.get("errors_total", 0)))
            if delivered > 0:
                METRICS.audit_sink_delivered.labels(name).inc(delivered)
            if errors > 0:
                METRICS.audit_sink_errors.labels(name).inc(errors)
            if s.get("delivered_total", 0) or s.get("errors_total", 0):
                METRICS.audit_sink_up.labels(name).set(1 if s.get("up") else 0)
        self._last = stats
        return stats

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except Exception:  # subprocess.TimeoutExpired: it had its grace period
            self.proc.kill()
            self.proc.wait(5)


if __name__ == "__main__":
    _config = json.loads(sys.stdin.read())
    threading.current_thread().name = "audit-delivery"
    raise SystemExit(_child_main(_config))
