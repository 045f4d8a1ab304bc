"""The proxy's side of the spool writer in its own process (``AuditPipeline`` with ``writer = "process"``).

``AuditPipeline`` (pipeline.py) takes these methods from ``WriterProcessMode``: starting the
writer process (writer.py) and the ring feeder, stopping them in order, the barrier, the
writer's counters as metrics, and restarting a writer process that died. They live here to
keep pipeline.py to the writer loop the two modes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from sqlbastion import logs
from sqlbastion.audit.delivery import WriterState
from sqlbastion.audit.intake import IntakeRing, remove_orphans
from sqlbastion.audit.writer import RingFeeder, WriterProcess, read_writer_stats
from sqlbastion.observability.metrics import METRICS

if TYPE_CHECKING:
    from sqlbastion.audit.delivery import DeliveryProcess
    from sqlbastion.audit.events import EventBuilder
    from sqlbastion.audit.spool import Spool

__all__ = ["WriterProcessMode"]

log = logs.get_logger("audit.pipeline")


class WriterProcessMode:
    """Mixed into ``AuditPipeline``; the attributes below are the pipeline's own."""

    spool: Spool
    builder: EventBuilder
    on_failure: Literal["fail_closed", "fail_open"]
    fsync_interval_s: float
    drain_timeout_s: float
    _fsync_mode: Literal["always", "interval"]
    _ring: IntakeRing | None
    _feeder: RingFeeder | None
    _writer_process: WriterProcess | None
    _writer_state: WriterState | None
    _writer_stats: dict[str, Any]
    _early: list[tuple[int, bytes]]
    _process: DeliveryProcess | None
    _monitor: threading.Thread | None
    _monitor_stop: threading.Event
    _sink_names: list[str]
    _required_names: list[str]
    _log_settings: dict[str, str]
    _running: bool
    _stopping: bool

    def _start_monitor(self) -> None:
        raise NotImplementedError

    def _poll_process(self) -> None:
        raise NotImplementedError

    def _writer_config(self) -> dict[str, Any]:
        secret = self.spool._secret
        spec: dict[str, str] | None = None
        if isinstance(secret, bytes):
            spec = {"hex": secret.hex()}
        elif secret is not None:
            spec = {"ref": str(secret)}
        ring = self._ring
        return {
            "spool_dir": str(self.spool.directory),
            "algorithm": self.spool.algorithm,
            "secret": spec,
            "segment_bytes": self.spool.segment_bytes,
            "max_bytes": self.spool.max_bytes,
            "ring_path": str(ring.path) if ring is not None else "",
            "ring_bytes": ring.size if ring is not None else 0,
            "raw_backends": sorted(self.builder.raw_backends),
            "secrets": list(self.builder.secrets),
            "on_failure": self.on_failure,
            "fsync": self._fsync_mode,
            "fsync_interval_ms": round(self.fsync_interval_s * 1000),
            "drain_timeout_s": self.drain_timeout_s,
            "sink_names": list(self._sink_names),
            "required_names": list(self._required_names),
            **self._log_settings,
        }

    def _open_writer_process(self) -> bool:
        """writer = "process": map the ring, start the writer process (which recovers the spool and
        whatever the ring holds), then the sinks. False when the ring is unavailable: the writer
        then runs on a thread here."""
        ring, feeder = self._ring, self._feeder
        if ring is None or feeder is None:
            return False
        # The spool directory exists before the ring does: another process cleaning up rings whose
        # spool is gone (remove_orphans) must never take this one for an orphan.
        self.spool.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(OSError):
            remove_orphans(ring.path.parent)
        try:
            ring.open()
            st = os.stat(ring.path, follow_symlinks=False)
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                raise OSError(f"{ring.path} is not a private file of this user")
        except OSError as exc:
            log.warning("audit intake ring unavailable; the spool writer runs in the proxy process", error=str(exc))
            ring.close()
            self._ring = None
            self._feeder = None
            self._early = list(feeder.backlog)  # emitted before open(): written first by the writer thread
            return False
        config = self._writer_config()
        config["ring_inode"] = [st.st_dev, st.st_ino]  # the writer maps this very file, or refuses
        self._writer_process = WriterProcess(config)
        next_intake = self._writer_process.start(mode="fresh")
        self._writer_state = WriterState(self.spool.directory, create=False)
        feeder.start(next_intake)
        METRICS.audit_spool_writable.set(1)
        self._running = True
        self._stopping = False
        self._start_monitor()
        return True

    def _close_writer_process(self, grace: float) -> None:
        feeder, writer = self._feeder, self._writer_process
        if feeder is None or writer is None:
            return
        deadline = time.monotonic() + self.drain_timeout_s
        while feeder.backlog and time.monotonic() < deadline and writer.alive():
            feeder.pump()
            time.sleep(0.005)
        feeder.stop()
        clean = writer.wait(self.drain_timeout_s + 10)
        if self._process is not None:
            # The delivery child saw the closed flag in writer.state and drains for the same grace period.
            self._process.wait(grace + 10)
        self._monitor_stop.set()
        if self._monitor is not None:
            self._monitor.join(5)
        self._poll_process()
        everything = clean and feeder.all_handled()
        if not everything:
            log.warning("audit events left in the intake ring; the next start spools them",
                        emitted=feeder.last_intake, handled=feeder.handled())  # fmt: skip
        if self._writer_state is not None:
            self._writer_state.close()
        feeder.ring.close(discard=everything)
        self._running = False

    def _poll_barrier(self, feeder: RingFeeder) -> asyncio.Future[None] | None:
        """writer = "process": the writer process publishes how far it wrote in the ring's control
        block; a future checks it every millisecond on the caller's loop."""
        target = feeder.last_intake + len(feeder.backlog)
        if feeder.handled() >= target or not self._running:
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def check() -> None:
            if future.done():
                return
            if feeder.handled() >= target or not self._running:
                future.set_result(None)
                return
            feeder.pump()
            loop.call_later(0.001, check)

        loop.call_later(0.001, check)
        return future

    def _poll_writer_stats(self) -> None:
        from sqlbastion.audit.events import KINDS

        stats = read_writer_stats(self.spool.directory)
        if not stats:
            return
        before = self._writer_stats
        if before.get("pid") != stats.get("pid"):
            before = {}  # a restarted writer process counts from zero again
        events, old = stats.get("events") or {}, before.get("events") or {}
        for kind in KINDS:
            n = int(events.get(kind, 0)) - int(old.get(kind, 0))
            if n > 0:
                METRICS.audit_events.labels(kind).inc(n)
        lost = int(stats.get("lost", 0)) - int(before.get("lost", 0))
        if lost > 0:
            METRICS.audit_lost.inc(lost)
        METRICS.audit_spool_bytes.set(int(stats.get("spool_bytes", 0)))
        METRICS.audit_spool_writable.set(int(stats.get("writable", 1)))
        self._writer_stats = stats
        self.spool.written_seq = self.written_seq()

    def _monitor_writer(self, restarts: int) -> int:
        """writer = "process": move backlogged events into the ring, restart a writer process that died."""
        writer, feeder = self._writer_process, self._feeder
        if writer is None or feeder is None or self._stopping:
            return restarts
        feeder.pump()
        if writer.alive():
            return restarts
        restarts += 1
        log.error("audit writer process exited; restarting it", restarts=restarts)
        time.sleep(min(10.0, 0.1 * 2 ** min(restarts, 7)))
        try:
            writer.start(mode="resume")
        except OSError as exc:
            log.error("cannot restart the audit writer process", error=str(exc))
        return restarts

    def written_seq(self) -> int:
        """The last seq written to the spool (either writer)."""
        if self._writer_process is not None and self._writer_state is not None:
            with contextlib.suppress(ValueError):
                return self._writer_state.read()[0]
        return self.spool.written_seq
