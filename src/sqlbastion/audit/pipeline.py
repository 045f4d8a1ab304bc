"""The audit pipeline: non-blocking emit → writer → chained spool → sinks.

Threads, processes and ownership (DESIGN.md decision 8; docs/audit.md):

* ``writer = "process"`` (what ``serve`` uses with ``audit.delivery = "process"``):
  ``emit`` only serialises the event into the shared-memory intake ring, used as
  a bounded queue (intake.py), and the writer runs in a child process
  (writer.py: ``RingFeeder`` on this side, the writer loop below over there).
  The proxy process then does no audit work that could hold its interpreter
  lock for long. The rest of this docstring describes ``writer = "thread"``,
  whose writer loop the child process runs as it is.
* ``emit`` runs on the data path. It copies the event into the shared-memory
  intake ring (intake.py: survives ``kill -9``) and appends ``(time, dict,
  intake number)`` to a bounded deque, then sets an event. No system call, no
  lock held beyond a short one that numbers events in order.
* The writer thread owns the ``Spool``. It turns dicts into event records
  (redaction happens here, off the data path), seals and writes them, fsyncs
  per ``audit.fsync``, and publishes how far it wrote (``writer.state``).
* Delivery (delivery.py) runs one task per sink, each reading the spool from
  its own cursor, in a child process (``audit.delivery = "process"``, the
  default) or on a thread. A slow or dead sink only grows its lag.
* Segments are deleted once every *required* sink's cursor is past them.
* At start, events a killed process left in the intake ring and never spooled
  are spooled first, with their original timestamps.

Failure policy: when the spool cannot take a batch (disk full, I/O error,
``max_spool_bytes``), ``fail_closed`` keeps the batch and retries it, and
``accepting()`` turns False so sessions refuse statements; ``fail_open``
drops it and counts ``sqlbastion_audit_events_lost_total``. Either way an
``alert`` event is written once the spool works again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlbastion import logs
from sqlbastion.audit import jsontext
from sqlbastion.audit.delivery import DeliveryProcess, SinkRunner, WriterState, load_cursor
from sqlbastion.audit.events import EventBuilder
from sqlbastion.audit.intake import CTRL_FAILED, IntakeRing, remove_orphans, ring_path_for
from sqlbastion.audit.pipeline_process import WriterProcessMode
from sqlbastion.audit.sinks.base import Sink, SinkError, build_sink
from sqlbastion.audit.spool import Spool, SpoolError, SpoolFull
from sqlbastion.audit.writer import RingFeeder, WriterProcess
from sqlbastion.observability.metrics import METRICS
from sqlbastion.settings_schema import SecretUnavailable, describe

if TYPE_CHECKING:
    from sqlbastion.config import AuditSettings, Settings

__all__ = ["AuditPipeline", "default_sqlite_path"]

log = logs.get_logger("audit.pipeline")

_WRITE_BATCH = 4096
_RETRY_WRITE_S = 0.1
# After the spool filled up, writing resumes once it is below this share of max_spool_bytes.
_RESUME_BELOW = 0.75


def _new_event_id() -> str:
    from sqlbastion.proxy.session import new_event_id

    return new_event_id()


_MEMORY_SPOOLS: dict[int, Path] = {}


def spool_directory(settings: Settings) -> Path:
    """The spool directory. Settings built in memory (tests, tools) with a relative
    ``spool_dir`` get a private temporary directory instead of one under the
    current directory, so concurrent test processes never share a spool."""
    if settings.source == "<memory>" and not Path(settings.audit.spool_dir).is_absolute():
        key = id(settings)
        if key not in _MEMORY_SPOOLS:
            _MEMORY_SPOOLS[key] = Path(tempfile.mkdtemp(prefix="sqlbastion-audit-")) / "spool"
        return _MEMORY_SPOOLS[key]
    return settings.resolve_path(settings.audit.spool_dir)


def validate_sinks(settings: Settings) -> None:
    """Build every configured sink once (opening nothing) so that a bad sink setting stops
    ``serve`` at start with its key, instead of failing delivery after delivery later."""
    import importlib.util

    from sqlbastion.config import ConfigError

    for i, s in enumerate(settings.audit.sinks):
        if s.type == "kafka" and importlib.util.find_spec("aiokafka") is None:
            raise ConfigError(
                settings.source,
                f"audit.sinks[{i}].type",
                "a kafka sink needs aiokafka: pip install 'sqlbastion[kafka]'",
            )
        try:
            build_sink(s, settings.resolve_path)
        except (ValueError, SinkError) as exc:
            raise ConfigError(settings.source, f"audit.sinks[{i}]", str(exc)) from None


def default_sqlite_path(settings: Settings) -> Path:
    """Where the SQLite sink goes when no sink is configured: beside the spool directory."""
    return spool_directory(settings).parent / "audit.db"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AuditPipeline(WriterProcessMode):
    """Implements ``proxy.session.AuditHook``."""

    def __init__(
        self,
        *,
        spool: Spool,
        sinks: Sequence[Sink],
        builder: EventBuilder | None = None,
        on_failure: Literal["fail_closed", "fail_open"] = "fail_closed",
        fsync: Literal["always", "interval"] = "interval",
        fsync_interval_ms: int = 50,
        max_queue: int = 100_000,
        intake_ring: IntakeRing | None = None,
        delivery_process: DeliveryProcess | None = None,
        writer: Literal["thread", "process"] = "thread",
    ) -> None:
        self.spool = spool
        self.sinks = list(sinks)
        self.builder = builder or EventBuilder()
        self.on_failure = on_failure
        self.fsync_interval_s = fsync_interval_ms / 1000
        spool.fsync_always = fsync == "always"
        self.max_queue = max_queue
        self._queue: deque[tuple[int, dict[str, object], int]] = deque()
        self._emit_lock = threading.Lock()
        self._intake_next = 0
        self._ring = intake_ring
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._barriers: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._emitted = 0
        self._written_count = 0
        self._failed = False
        self._full = False
        self._failure: str | None = None
        self._lost_since_alert = 0
        self._stopping = False
        self._running = False
        self._writer: threading.Thread | None = None
        self._delivery: threading.Thread | None = None
        self._runner: SinkRunner | None = None
        self._process = delivery_process
        if delivery_process is not None:
            self._sink_names = delivery_process.names
            self._required_names = delivery_process.required_names
        else:
            self._sink_names = [s.name for s in self.sinks]
            self._required_names = [s.name for s in self.sinks if s.required]
        self._log_settings: dict[str, str] = {}
        self._monitor: threading.Thread | None = None
        self._monitor_stop = threading.Event()
        self._writer_state: WriterState | None = None
        self._writer_done = threading.Event()
        # How long writing the queue may take at shutdown while the spool fails (fail_closed).
        self.drain_timeout_s = 30.0
        # How long sinks may go on catching up after the spool closed. What they miss
        # stays in the spool and is delivered after the next start.
        self.sink_grace_s = 5.0
        self._fsync_mode = fsync
        # writer = "process": emit feeds the ring, a child process writes the spool (writer.py).
        self._feeder: RingFeeder | None = None
        self._writer_process: WriterProcess | None = None
        if writer == "process" and intake_ring is not None:
            self._feeder = RingFeeder(intake_ring, on_failure=on_failure, max_backlog=max_queue)
        self._writer_stats: dict[str, Any] = {}
        self._early: list[tuple[int, bytes]] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, sinks: Sequence[Sink] | None = None) -> AuditPipeline:
        audit: AuditSettings = settings.audit
        spool = Spool(
            spool_directory(settings),
            algorithm=audit.chain_algorithm,
            secret=audit.chain_key,
            segment_bytes=audit.segment_bytes,
            max_bytes=audit.max_spool_bytes,
        )
        process = None
        if sinks is None:
            validate_sinks(settings)
        if sinks is None and audit.delivery == "process":
            tables = [describe(s) for s in audit.sinks] or [
                {"type": "sqlite", "path": str(default_sqlite_path(settings))}
            ]
            base_dir = Path.cwd() if settings.source == "<memory>" else Path(settings.source).resolve().parent
            process = DeliveryProcess(
                spool_dir=spool.directory, base_dir=base_dir, sinks=tables, grace_s=audit.sink_grace_s
            )
            sinks = []
        elif sinks is None:
            sinks = [build_sink(s, settings.resolve_path) for s in audit.sinks]
            if not sinks:
                from sqlbastion.audit.sinks.sqlite import SQLiteSink

                sinks = [SQLiteSink(path=default_sqlite_path(settings))]
        backend_secrets = []
        for b in settings.backends:
            if b.password is not None:
                with contextlib.suppress(SecretUnavailable):
                    backend_secrets.append(b.password.reveal())
        builder = EventBuilder(
            raw_backends=frozenset(b.name for b in settings.backends if b.raw_statements_in_audit),
            secrets=tuple(backend_secrets),
        )
        METRICS.audit_spool_capacity.set(audit.max_spool_bytes)
        ring_path = ring_path_for(spool.directory)
        pipeline = cls(
            # The writer goes into a process of its own whenever the sinks do.
            writer="process" if process is not None else "thread",
            delivery_process=process,
            intake_ring=IntakeRing(ring_path, owner=spool.directory) if ring_path is not None else None,
            spool=spool,
            sinks=sinks,
            builder=builder,
            on_failure=audit.on_audit_failure,
            fsync=audit.fsync,
            fsync_interval_ms=audit.fsync_interval_ms,
        )
        pipeline.sink_grace_s = audit.sink_grace_s
        # At shutdown, events a failing spool cannot take are left to the intake ring (the next
        # start spools them) after the server's own drain timeout.
        pipeline.drain_timeout_s = settings.server.drain_timeout_s
        pipeline._log_settings = {"log_format": settings.logging.format, "log_level": settings.logging.level}
        return pipeline

    # -- the data path ---------------------------------------------------------------------------

    def emit(self, event: dict[str, object]) -> None:
        """Queue one event (never blocks, never raises)."""
        feeder = self._feeder
        if feeder is not None:
            feeder.emit(event)
            return
        if len(self._queue) >= self.max_queue:
            # The writer is far behind (or the spool is failing): this event cannot be kept.
            self._lose(1, "the audit queue is full")
            return
        ts_ns = time.time_ns()
        payload = jsontext.dumps(event) if self._ring is not None else b""
        with self._emit_lock:
            intake = self._intake_next
            self._intake_next = intake + 1
            ring = self._ring
            if ring is not None and payload:
                # A memory copy into the shared intake ring: survives kill -9 (intake.py).
                ring.append(intake, ts_ns, payload)
            self._queue.append((ts_ns, event, intake))
            self._emitted += 1
        self._wake.set()

    def accepting(self) -> bool:
        if self.on_failure == "fail_open":
            return True
        if self._feeder is not None:
            return self._feeder.accepting()
        return self._running and not self._failed and len(self._queue) < self.max_queue

    def _lose(self, n: int, why: str) -> None:
        METRICS.audit_lost.inc(n)
        self._lost_since_alert += n
        if not self._failed:
            self._failed = True
            self._failure = why

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the spool and start the writer and delivery threads (synchronous form of ``start``)."""
        if self._feeder is not None and self._open_writer_process():
            return
        self.open_writer()
        if self._process is not None:
            self._process.start(**self._log_settings)
            self._monitor_stop.clear()
            self._monitor = threading.Thread(target=self._monitor_loop, name="sqlbastion-audit-monitor", daemon=True)
            self._monitor.start()
            return
        self._runner = SinkRunner(
            self.spool.directory,
            self.sinks,
            limit=lambda: self.spool.written_seq,
            writer_done=self._writer_done.is_set,
            on_confirmed=self._release,
        )
        started = threading.Event()
        runner = self._runner
        self._delivery = threading.Thread(
            target=lambda: asyncio.run(runner.run(started.set)), name="sqlbastion-audit-delivery", daemon=True
        )
        self._delivery.start()
        started.wait(10)

    def open_writer(self) -> None:
        """Open the spool, spool what the intake ring holds from a killed process, start the
        writer thread (the writer process runs this too)."""
        self.spool.open()
        METRICS.audit_spool_writable.set(1)
        self._recover_intake()
        self._running = True
        self._stopping = False
        self._writer_state = WriterState(self.spool.directory, create=True)
        self._writer_state.publish(self.spool.written_seq, closed=False)
        with self._emit_lock:
            for ts_ns, payload in self._early:
                raw = jsontext.loads(payload)
                self._queue.append((ts_ns, raw if isinstance(raw, dict) else {"kind": "?"}, self._intake_next))
                self._intake_next += 1
                self._emitted += 1
            self._early = []
        self._writer = threading.Thread(target=self._write_loop, name="sqlbastion-audit-writer", daemon=True)
        self._writer.start()

    def _start_monitor(self) -> None:
        if self._process is not None:
            self._process.start(**self._log_settings)
        self._monitor_stop.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="sqlbastion-audit-monitor", daemon=True)
        self._monitor.start()

    def _recover_intake(self) -> None:
        """Spool what a killed process emitted but never wrote (intake.py), then reuse the ring."""
        ring = self._ring
        self._intake_next = self.spool.last_intake + 1
        if ring is None:
            return
        with contextlib.suppress(OSError):
            remove_orphans(ring.path.parent)
        try:
            ring.open()
            st = os.stat(ring.path, follow_symlinks=False)
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise OSError(f"{ring.path} is not a private file of this user")
        except OSError as exc:
            log.warning("audit intake ring unavailable; events in memory are lost if the process is killed",
                        error=str(exc))  # fmt: skip
            ring.close()
            self._ring = None
            return
        entries = [e for e in ring.scan() if e.intake > self.spool.last_intake]
        if entries:
            events: list[dict[str, Any]] = []
            intakes: list[int | None] = []
            for e in entries:
                try:
                    raw = jsontext.loads(e.payload)
                    built = self._build(e.ts_ns, raw if isinstance(raw, dict) else {"kind": "?"})
                except Exception:  # one bad entry must not stop recovery
                    log.exception("cannot rebuild an audit event from the intake ring")
                    continue
                events.extend(built)
                intakes.extend([None] * (len(built) - 1) + [e.intake])
            alert = self.builder.build_record(
                {"kind": "alert", "details": {"alert": "audit_intake_recovered", "severity": "warning",
                                              "message": "events emitted before the process stopped were recovered",
                                              "lost": 0, "recovered": len(entries)}},
                time.time_ns(),
                _new_event_id(),
            )  # fmt: skip
            while events:
                n = self.spool.append(events, intakes)
                del events[:n], intakes[:n]
            self.spool.append([alert])
            log.warning("audit events recovered from the intake ring", events=len(entries))
        self._intake_next = max(self._intake_next, self.spool.last_intake + 1, *(e.intake + 1 for e in entries))

    def close(self, sink_grace_s: float | None = None) -> None:
        """Write what is queued, close the spool, give sinks ``sink_grace_s`` to catch up, stop."""
        grace = self.sink_grace_s if sink_grace_s is None else sink_grace_s
        self._stopping = True
        if self._writer_process is not None:
            self._close_writer_process(grace)
            return
        self._wake.set()
        if self._writer is not None:
            self._writer.join(self.drain_timeout_s + 5)
        if self._runner is not None:
            self._runner.begin_drain(grace)
            if self._delivery is not None:
                self._delivery.join(grace + 5)
        if self._process is not None:
            # The child saw the closed flag in writer.state and drains for the same grace period.
            self._process.wait(grace + 10)
            self._monitor_stop.set()
            if self._monitor is not None:
                self._monitor.join(5)
            self._poll_process()
        if self._writer_state is not None:
            self._writer_state.close()
        self._running = False

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def stop(self, sink_grace_s: float | None = None) -> None:
        await asyncio.to_thread(self.close, sink_grace_s)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event emitted so far is written to the spool. True if it was."""
        feeder = self._feeder
        if feeder is not None and self._writer_process is not None:
            with feeder.lock:
                target = feeder.last_intake + len(feeder.backlog)
            deadline = time.monotonic() + timeout
            while feeder.handled() < target or feeder.backlog:
                if time.monotonic() > deadline:
                    return False
                feeder.pump()
                time.sleep(0.001)
            return True
        target = self._emitted
        self._wake.set()
        with self._written:
            return self._written.wait_for(lambda: self._written_count >= target, timeout)

    async def wait_written(self, within_s: float = 10.0) -> bool:
        return await asyncio.to_thread(self.flush, within_s)

    def barrier(self) -> asyncio.Future[None] | None:
        """For a proxy that must not answer a client before the statement's event is in
        the spool (so a SIGKILL right after the reply cannot lose it): None when every
        event emitted so far is already written, else a future on the running loop
        that resolves once it is. Awaiting it costs one writer cycle (group commit:
        one write serves every connection waiting at that moment)."""
        feeder = self._feeder
        if feeder is not None and self._writer_process is not None:
            return self._poll_barrier(feeder)
        target = self._emitted
        if self._written_count >= target or not self._running:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._written:
            if self._written_count >= target:
                return None
            self._barriers.append((target, loop, future))
        self._wake.set()
        return future

    # -- the writer thread -----------------------------------------------------------------------

    def _build(self, ts_ns: int, raw: dict[str, object]) -> list[dict[str, Any]]:
        event_id = raw.get("event_id")
        eid = event_id if isinstance(event_id, str) and event_id else _new_event_id()
        built = self.builder.build_record(raw, ts_ns, eid)
        if built["kind"] == "connection_opened":
            # The session emits connection_opened once the person authenticated;
            # the schema records the authentication as its own event first.
            auth = dict(built, kind="auth_succeeded", event_id=_new_event_id())
            return [auth, built]
        if built["kind"] == "statement" and built["decision"] == "alert":
            # A rule with action "alert" let the statement through: SIEMs get an alert event too.
            alert = dict(
                built,
                kind="alert",
                event_id=_new_event_id(),
                details={"alert": "rule", "severity": "warning", "statement_event_id": eid,
                         "message": built["reason"] or ",".join(built["rule_ids"])},
            )  # fmt: skip
            return [built, alert]
        return [built]

    def _write_loop(self) -> None:
        # pending: built events not yet in the spool; ends[i] marks the last event built
        # from one emitted dict, so flush() can count emitted dicts that are written.
        pending: list[dict[str, Any]] = []
        intakes: list[int | None] = []  # set on the last event built from each emitted dict
        last_sync = time.monotonic()
        failing_since: float | None = None
        try:
            while True:
                self._wake.wait(self.fsync_interval_s if not pending else _RETRY_WRITE_S)
                self._wake.clear()
                while self._queue and len(pending) < _WRITE_BATCH:
                    ts_ns, raw, intake = self._queue.popleft()
                    try:
                        built = self._build(ts_ns, raw)
                    except Exception:  # a bug in building one event must not stop the writer
                        log.exception("cannot build an audit event")
                        built = [self.builder.build_record({"kind": "?"}, ts_ns, _new_event_id())]
                    if len(built) == 1:  # the common case, without two throwaway lists per event
                        pending.append(built[0])
                        intakes.append(intake)
                    else:
                        pending.extend(built)
                        intakes.extend([None] * (len(built) - 1) + [intake])
                if pending:
                    written = self._write(pending, intakes)
                    if written:
                        self._mark_written(sum(n is not None for n in intakes[:written]))
                        del pending[:written], intakes[:written]
                    if pending and self.on_failure == "fail_open":
                        lost = sum(n is not None for n in intakes)
                        self._lose(lost, self._failure or "spool failure")
                        self._mark_written(lost)
                        pending, intakes = [], []
                    failing_since = (failing_since or time.monotonic()) if pending else None
                    if pending and self._stopping and time.monotonic() - (failing_since or 0) > self.drain_timeout_s:
                        log.error("audit events not written at shutdown", events=len(pending))
                        break
                if self.fsync_interval_s and time.monotonic() - last_sync >= self.fsync_interval_s:
                    with contextlib.suppress(OSError):
                        self.spool.sync()
                    last_sync = time.monotonic()
                if self._stopping and not self._queue and not pending:
                    break
                if self._queue:
                    self._wake.set()
        finally:
            try:
                self.spool.close()
            except (OSError, SpoolError) as exc:
                log.error("cannot close the audit spool", error=str(exc))
            with self._emit_lock:
                ring, self._ring = self._ring, None
                everything_written = not self._queue and not pending and self._written_count >= self._emitted
            if ring is not None:
                # Everything emitted is in the spool: the ring holds nothing worth keeping.
                ring.close(discard=everything_written)
            self._writer_done.set()
            self._notify_sinks()
            self._mark_written(0)
            with self._written:
                left, self._barriers = self._barriers, []
            for _, loop, future in left:  # nothing more will be written: do not hang anyone
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, future)

    def _write(self, events: list[dict[str, Any]], intakes: list[int | None]) -> int:
        """Write as many of ``events`` as the spool takes; returns how many."""
        if self._full and self.spool.bytes_used() > self.spool.max_bytes * _RESUME_BELOW:
            # Hysteresis: after the spool filled up, wait until sinks freed real room
            # instead of flapping between refusing and accepting a few events at a time.
            return 0
        try:
            if self._failed:
                self._write_recovery_alert()
            written = self.spool.append(events, intakes)
        except SpoolError as exc:
            self._full = isinstance(exc, SpoolFull)
            if not self._failed:
                log.error("audit spool failure", error=str(exc), policy=self.on_failure)
            self._failed = True
            self._failure = str(exc)
            METRICS.audit_spool_writable.set(0)
            return 0
        kinds = Counter([e["kind"] for e in events[:written]])  # counted in C
        for kind, n in kinds.items():
            METRICS.audit_events.labels(kind).inc(n)
        METRICS.audit_spool_bytes.set(self.spool.bytes_used())
        self._notify_sinks()
        return written

    def _write_recovery_alert(self) -> None:
        """Before anything else once the spool works again: an alert saying what happened.
        Raises SpoolError while the spool still fails."""
        alert = self.builder.build_record(
            {
                "kind": "alert",
                "details": {
                    "alert": "audit_spool_failure",
                    "severity": "critical",
                    "message": self._failure or "",
                    "lost": self._lost_since_alert,
                    "policy": self.on_failure,
                },
            },
            time.time_ns(),
            _new_event_id(),
        )
        self.spool.append([alert])
        log.warning("audit spool recovered", lost=self._lost_since_alert)
        METRICS.audit_events.labels("alert").inc()
        self._failed = False
        self._full = False
        self._failure = None
        self._lost_since_alert = 0
        METRICS.audit_spool_writable.set(1)

    def _mark_written(self, n: int) -> None:
        with self._written:
            self._written_count += n
            self._written.notify_all()
            if not self._barriers:
                return
            done = [b for b in self._barriers if b[0] <= self._written_count]
            self._barriers = [b for b in self._barriers if b[0] > self._written_count]
        for _, loop, future in done:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_resolve, future)

    # -- the delivery thread ---------------------------------------------------------------------

    def _notify_sinks(self) -> None:
        state = self._writer_state
        if state is not None:
            # Plain memory stores into the shared writer.state: what the delivery child reads.
            state.publish(self.spool.written_seq, closed=self._writer_done.is_set())
        if self._runner is not None:
            self._runner.notify()

    def _release(self) -> None:
        """Delete segments every required sink has acknowledged."""
        if self._runner is not None:
            through = self._runner.required_cursor()
        else:
            cursors = self.sink_cursors()
            # With no required sink the slowest sink decides, so the spool cannot only grow.
            names = self._required_names or self._sink_names
            required = [cursors.get(name, -1) for name in names]
            through = min(required) if required else None
        if through is None:
            return
        freed = self.spool.release(through)
        if freed:
            METRICS.audit_spool_bytes.set(self.spool.bytes_used())

    def _poll_process(self) -> None:
        if self._writer_process is not None:
            self._poll_writer_stats()
        if self._process is None:
            return
        self._process.poll_stats()
        if self._writer_process is not None:
            # The writer process owns the spool and releases segments itself.
            written = self.written_seq()
            for name, seq in self.sink_cursors().items():
                METRICS.audit_sink_lag.labels(name).set(max(0, written - seq))
            return
        written = self.spool.written_seq
        for name, seq in self.sink_cursors().items():
            METRICS.audit_sink_lag.labels(name).set(max(0, written - seq))
        self._release()

    def _monitor_loop(self) -> None:
        """Process mode: export the children's counters, release segments, restart a child that died."""
        process = self._process
        restarts = 0
        writer_restarts = 0
        ticks = 0
        while (process is not None or self._writer_process is not None) and not self._monitor_stop.wait(0.1):
            writer_restarts = self._monitor_writer(writer_restarts)
            ticks += 1
            if ticks % 5:
                continue
            try:
                self._poll_process()
            except Exception:  # the monitor must keep running
                log.exception("audit delivery monitor error")
            if process is None:
                continue
            done = self._writer_done.is_set() or (self._writer_process is not None and self._stopping)
            if not process.alive() and not done:
                restarts += 1
                log.error("audit delivery process exited; restarting it", restarts=restarts)
                time.sleep(min(30.0, 0.5 * 2 ** min(restarts, 6)))
                process.start(**self._log_settings)

    # -- introspection (tests, /readyz) ----------------------------------------------------------

    def sink_cursors(self) -> dict[str, int]:
        if self._runner is not None:
            return self._runner.cursors()
        return {name: load_cursor(self.spool.directory, name) for name in self._sink_names}

    @property
    def failed(self) -> bool:
        if self._feeder is not None and self._writer_process is not None:
            return self._feeder.ring.ctrl(CTRL_FAILED) == 1
        return self._failed
