"""The spool writer in a process of its own, fed through the intake ring.

With ``audit.delivery = "process"`` (the default) the proxy process does no audit
work beyond serialising each event (orjson) into the shared-memory intake ring
(intake.py, queue mode). Everything else — decoding, literal redaction with
sqlglot's tokenizer, building the event record, sealing the chain, writing and
fsyncing the spool, releasing acknowledged segments — happens here, in a child
process, so it never competes with the proxy's event loop for the interpreter
lock. The sinks run in a second child (delivery.py), which follows the spool
through ``writer.state`` as before.

Protocol (``python -m sqlbastion.audit.writer``):

* stdin: one JSON object (``WriterProcess.start``): spool settings, the chain
  secret (a reference the child resolves from its inherited environment, or
  hex bytes for tests and benchmarks), the ring's path and size, the backends
  whose raw text may be kept and the backend passwords that must never appear
  in statement text (so they travel through a pipe, never a command line or a
  log), sink names (for releasing segments), ``parent_pid`` and ``mode``.
* ``mode = "fresh"`` (the proxy starts): recover the spool, spool every ring
  entry a killed process left behind, reset the ring's control block.
  ``mode = "resume"`` (a writer process died and the proxy lives on): continue
  at the ring's read position, skipping entries the spool already holds.
* stdout: one line, ``{"ready": <next intake number>}`` or ``{"error": "…"}``.
* The ring's control block carries progress both ways (intake.py): the reader
  releases ring bytes only for events the writer thread wrote (or lost under
  ``fail_open``), so a killed writer process loses nothing the ring held, and
  ``CTRL_FAILED`` tells the proxy the spool cannot take events (fail_closed).
* ``<spool>/writer.stats`` (JSON, about twice a second): events written by
  kind, events lost, spool bytes, whether the spool is writable; the proxy
  exports them as metrics.
* The child exits once the proxy set ``CTRL_CLOSING`` and everything it
  appended is handled, or when the proxy process is gone and the ring holds
  nothing more to read.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

from sqlbastion import logs
from sqlbastion.audit import jsontext
from sqlbastion.audit.intake import (
    CTRL_CLOSING,
    CTRL_FAILED,
    CTRL_HANDLED,
    CTRL_OWNER_PID,
    MAX_ENTRY_BYTES,
    IntakeRing,
)
from sqlbastion.observability.metrics import METRICS

__all__ = ["STATS_FILE", "RingFeeder", "WriterProcess", "bounded_event", "read_writer_stats"]

log = logs.get_logger("audit.writer")

STATS_FILE = "writer.stats"
_STATS_EVERY_S = 0.5
# Events read from the ring but not yet written: bounded, so a failing spool stops the reading
# (the ring then fills up and the proxy applies the failure policy) instead of growing memory.
_MAX_IN_FLIGHT = 16_384
_READ_BATCH = 2048
_BUSY_SLEEP_S = 0.001
_IDLE_SLEEP_S = 0.005
# Backlogged events appended per emit (on the event loop) and per lock hold of the monitor's pump.
_PUMP_ON_EMIT = 16
_PUMP_CHUNK = 512
# How much lower than the proxy the delivery process runs (nice(2) increment).
CHILD_NICENESS = 5


def read_writer_stats(spool_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((spool_dir / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class WriterProcess:
    """The proxy's handle on the writer child: start (and wait until it is ready), watch, stop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.proc: Any = None

    def start(self, *, mode: str, timeout_s: float = 120.0) -> int:
        """Start the child and wait for its ready line; returns the next intake number.
        Raises SpoolError with the child's reason when it cannot open the spool."""
        import subprocess

        from sqlbastion.audit.spool import SpoolError

        config = dict(self.config, mode=mode, parent_pid=os.getpid())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sqlbastion.audit.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:
            raise SpoolError("cannot talk to the audit writer process")
        stdin.write(json.dumps(config).encode("utf-8"))
        stdin.close()
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise SpoolError("the audit writer process did not become ready in time")
            ready, _, _ = select.select([stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        stdout.close()
        try:
            answer = json.loads(line)
        except ValueError:
            answer = {"error": "the audit writer process exited during start-up"}
        if not isinstance(answer, dict) or not isinstance(answer.get("ready"), int):
            self.wait(5)
            reason = answer.get("error") if isinstance(answer, dict) else None
            raise SpoolError(str(reason or "the audit writer process failed to start"))
        return int(answer["ready"])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> bool:
        """Wait for the child to exit; True if it exited cleanly."""
        if self.proc is None:
            return True
        try:
            return bool(self.proc.wait(timeout) == 0)
        except Exception:  # subprocess.TimeoutExpired: it had its time
            self.kill()
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(5)


class RingFeeder:
    """The proxy's side of queue mode: ``emit`` serialises the event into the intake ring.

    When the ring has no room (the writer process slow, failing or dead): ``fail_closed``
    keeps the serialised event in a bounded backlog, appended to the ring as soon as room
    comes back, and ``accepting()`` turns false so sessions refuse new statements;
    ``fail_open`` counts the event as lost. Either way, once the ring takes events again
    the next one written is an ``alert`` event saying what happened. Before the writer
    process is ready, events wait in the backlog."""

    def __init__(
        self, ring: IntakeRing, *, on_failure: Literal["fail_closed", "fail_open"], max_backlog: int = 100_000
    ) -> None:
        self.ring = ring
        self.on_failure = on_failure
        self.max_backlog = max_backlog
        self.lock = threading.Lock()
        self.next_intake = 0
        self.running = False
        self.backlog: deque[tuple[int, bytes]] = deque()
        self.lost_since_alert = 0
        self.full = False
        # Statements are refused (fail_closed) once less than this much of the ring is free, so
        # the events of statements already under way still fit.
        self.low_water = ring.capacity // 8

    def start(self, next_intake: int) -> None:
        with self.lock:
            self.ring.set_ctrl(CTRL_OWNER_PID, os.getpid())
            self.ring.start_queue(next_intake)
            self.next_intake = next_intake
            self.running = True
        self.pump()  # events emitted before the writer was ready

    def stop(self) -> None:
        with self.lock:
            self.running = False
            self.ring.set_ctrl(CTRL_CLOSING, 1)

    def emit(self, event: dict[str, object]) -> None:
        ts_ns = time.time_ns()
        payload = jsontext.dumps(event)
        if len(payload) > MAX_ENTRY_BYTES:
            payload = jsontext.dumps(bounded_event(event))
        with self.lock:
            if not self.backlog and self.running:
                if self.ring.push(self.next_intake, ts_ns, payload):
                    self.next_intake += 1
                    return
                self._ring_full(len(payload))
            self._keep_or_lose(ts_ns, payload)
            if self.running:
                self._pump_locked(_PUMP_ON_EMIT)

    def pump(self) -> None:
        """Move backlogged events into the ring as far as it has room (the monitor calls this), a
        bounded number at a time so that an emit on the event loop never waits long for the lock."""
        while True:
            with self.lock:
                if not self.running or not self._pump_locked(_PUMP_CHUNK):
                    return

    def _pump_locked(self, limit: int) -> bool:
        """Append up to ``limit`` backlogged events; True when more are waiting and there may be room."""
        backlog, ring = self.backlog, self.ring
        for _ in range(limit):
            if not backlog:
                break
            ts_ns, payload = backlog[0]
            if not ring.push(self.next_intake, ts_ns, payload):
                return False
            backlog.popleft()
            self.next_intake += 1
        else:
            return bool(backlog)
        if self.full and ring.free_bytes() > 2 * self.low_water:
            self.full = False
            lost, self.lost_since_alert = self.lost_since_alert, 0
            log.warning("the audit intake queue has room again", lost=lost)
            from sqlbastion.proxy.session import new_event_id

            alert = {
                "kind": "alert",
                "event_id": new_event_id(),
                "details": {
                    "alert": "audit_queue_full",
                    "severity": "critical",
                    "message": "the audit writer fell behind and the intake queue was full",
                    "lost": lost,
                    "policy": self.on_failure,
                },
            }
            if ring.push(self.next_intake, time.time_ns(), jsontext.dumps(alert)):
                self.next_intake += 1
        return False

    def _ring_full(self, entry_bytes: int) -> None:
        if not self.full:
            self.full = True
            ring = self.ring
            # The ring's accounting goes into the log: it tells a writer that fell behind (little
            # free) from an entry that did not fit for another reason.
            log.error("the audit intake queue is full: the writer process is behind or stopped",
                      policy=self.on_failure, entry_bytes=entry_bytes, free_bytes=ring.free_bytes(),
                      handled=self.handled(), last_intake=self.last_intake)  # fmt: skip

    def _keep_or_lose(self, ts_ns: int, payload: bytes) -> None:
        if (self.on_failure == "fail_closed" or not self.running) and len(self.backlog) < self.max_backlog:
            self.backlog.append((ts_ns, payload))
            return
        self.full = True
        self.lost_since_alert += 1
        METRICS.audit_lost.inc()

    def accepting(self) -> bool:
        if self.on_failure == "fail_open":
            return True
        ring = self.ring
        return self.running and not self.backlog and ring.ctrl(CTRL_FAILED) == 0 and ring.free_bytes() > self.low_water

    @property
    def last_intake(self) -> int:
        """The newest intake number appended to the ring (-1 before any)."""
        return self.next_intake - 1

    def handled(self) -> int:
        """The newest intake number the writer process has written (or lost by policy)."""
        return self.ring.ctrl(CTRL_HANDLED)

    def all_handled(self) -> bool:
        return not self.backlog and self.handled() >= self.last_intake


def bounded_event(event: dict[str, object]) -> dict[str, object]:
    """An event too large for one ring entry, cut the way the event builder would cut it anyway:
    strings at MAX_STRING characters, lists at MAX_ITEMS items; a statement text too long to
    tokenize is withheld (as the builder would withhold it)."""
    from sqlbastion.audit.events import MAX_ITEMS, MAX_STRING
    from sqlbastion.audit.redact import MAX_TOKENIZE_CHARS

    out: dict[str, object] = {}
    for key, value in event.items():
        kept: object = value
        if key == "sql_text" and isinstance(value, str):
            if len(value) > MAX_TOKENIZE_CHARS:
                out["sql_text_withheld"] = True
                kept = None
        elif isinstance(value, str):
            kept = value[:MAX_STRING]
        elif isinstance(value, (list, tuple)):
            kept = [v[:MAX_STRING] if isinstance(v, str) else v for v in list(value)[:MAX_ITEMS]]
        out[key] = kept
    if len(jsontext.dumps(out)) > MAX_ENTRY_BYTES:
        # Still too large (hundreds of long names): keep the scalar fields, which say what happened.
        out = {k: v for k, v in out.items() if not isinstance(v, (list, dict))}
    return out


# -- the child process ------------------------------------------------------------------------------


def _secret(value: Any) -> Any:
    from sqlbastion.settings_schema import SecretRef

    if isinstance(value, dict) and isinstance(value.get("ref"), str):
        return SecretRef(value["ref"])
    if isinstance(value, dict) and isinstance(value.get("hex"), str):
        return bytes.fromhex(value["hex"])
    return None


def _answer(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        os.write(1, (json.dumps(message) + "\n").encode("utf-8"))
        # stdout now points at /dev/null rather than being closed, so no file opened later gets fd 1.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _check_ring(ring: IntakeRing, config: dict[str, Any]) -> None:
    """Map the proxy's ring file, and be sure it is the very file the proxy mapped (not one created
    anew after the proxy's was removed), so both processes share one memory."""
    ring.open()
    want = config.get("ring_inode")
    st = os.stat(ring.path, follow_symlinks=False)
    if isinstance(want, list) and [st.st_dev, st.st_ino] != want:
        ring.close()
        raise OSError(f"{ring.path} is not the intake ring the proxy mapped")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        ring.close()
        raise OSError(f"{ring.path} is not a private file of this user")


def _other_proxy_alive(ring: IntakeRing) -> bool:
    """Whether the writer process holding the spool still belongs to a live proxy (a second serve on
    this spool: refused at once) rather than being orphaned by a killed one (draining: waited for)."""
    from sqlbastion.audit.intake import CTRL_PID

    owner, writer = ring.ctrl(CTRL_OWNER_PID), ring.ctrl(CTRL_PID)
    if owner <= 0 or writer <= 0:
        return False
    try:
        # /proc/<pid>/stat: "pid (comm) state ppid …" (proc(5)); the name may hold spaces or parentheses.
        stat = Path(f"/proc/{writer}/stat").read_text(encoding="ascii", errors="replace")
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return ppid == owner


def _write_stats(spool_dir: Path, stats: dict[str, Any]) -> None:
    tmp = spool_dir / (STATS_FILE + ".tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(stats), encoding="utf-8")
        os.replace(tmp, spool_dir / STATS_FILE)


def _child_main(config: dict[str, Any]) -> int:
    from sqlbastion.audit.events import KINDS, EventBuilder
    from sqlbastion.audit.intake import CTRL_LAST_INTAKE, CTRL_PID, CTRL_READY, IntakeReader
    from sqlbastion.audit.pipeline import AuditPipeline
    from sqlbastion.audit.spool import Spool, SpoolLocked
    from sqlbastion.config import LoggingSettings

    # The writer runs at the proxy's own priority: it is what keeps the intake ring from filling,
    # and a writer starved by the proxy's own load would turn sustained traffic into refusals
    # (fail_closed) once the ring is full. Only the delivery process, whose backlog is the
    # durable spool on disk, yields the CPU (CHILD_NICENESS).
    logs.configure(LoggingSettings(format=config.get("log_format", "console"), level=config.get("log_level", "info")))
    spool_dir = Path(config["spool_dir"])
    parent = int(config["parent_pid"])
    fresh = config.get("mode") == "fresh"
    spool = Spool(
        spool_dir,
        algorithm=config["algorithm"],
        secret=_secret(config.get("secret")),
        segment_bytes=int(config["segment_bytes"]),
        max_bytes=int(config["max_bytes"]),
    )
    ring = IntakeRing(Path(config["ring_path"]), size=int(config["ring_bytes"]), owner=spool_dir)
    pipeline = AuditPipeline(
        spool=spool,
        sinks=[],
        builder=EventBuilder(raw_backends=frozenset(config["raw_backends"]), secrets=tuple(config["secrets"])),
        on_failure=config["on_failure"],
        fsync=config["fsync"],
        fsync_interval_ms=int(config["fsync_interval_ms"]),
        max_queue=1 << 40,  # bounded by _MAX_IN_FLIGHT below
        intake_ring=ring if fresh else None,
    )
    pipeline.drain_timeout_s = float(config["drain_timeout_s"])
    pipeline._sink_names = list(config["sink_names"])
    pipeline._required_names = list(config["required_names"])
    try:
        _check_ring(ring, config)
    except OSError as exc:
        _answer({"error": str(exc)})
        return 3
    # A writer process of a previous run (its proxy killed) may still be draining: wait for its lock.
    # A spool whose ring belongs to another live proxy is a second serve on the same spool: refused.
    deadline = time.monotonic() + 60
    while True:
        try:
            pipeline.open_writer()
            break
        except SpoolLocked as exc:
            if time.monotonic() > deadline or (fresh and _other_proxy_alive(ring)):
                _answer({"error": str(exc)})
                return 3
            time.sleep(0.1)
        except (OSError, ValueError) as exc:
            _answer({"error": str(exc)})
            return 3
    if fresh:
        # Recovery spooled what the ring held; from here the ring is a queue starting afresh.
        pipeline._ring = None
        IntakeReader.reset(ring, pipeline._intake_next)
    reader = IntakeReader(ring)
    already_spooled = spool.last_intake  # resume: entries the previous writer wrote but did not release
    ring.set_ctrl(CTRL_PID, os.getpid())
    ring.set_ctrl(CTRL_READY, reader.expected + 1)
    _answer({"ready": reader.expected})
    # Events are acyclic dicts freed by reference counting; the cyclic collector would only rescan
    # the thousands of them in flight, again and again. The objects of start-up are frozen out of it.
    gc.freeze()
    gc.set_threshold(100_000, 50, 50)

    base = pipeline._written_count
    enqueued = 0
    released = 0
    last_busy = time.monotonic()
    next_stats = 0.0
    parent_gone = False
    queue, wake = pipeline._queue, pipeline._wake
    loads = jsontext.loads
    try:
        while True:
            handled = pipeline._written_count - base
            if handled > released:
                reader.release(handled - released)
                released = handled
            entries = reader.read(min(_READ_BATCH, _MAX_IN_FLIGHT - (enqueued - handled)))
            before = enqueued
            for e in entries:
                if e.intake <= already_spooled and enqueued == handled:
                    reader.release(1)  # written before the previous writer process died
                    continue
                try:
                    raw = loads(e.payload)
                except ValueError:
                    raw = None
                queue.append((e.ts_ns, raw if isinstance(raw, dict) else {"kind": "?"}, e.intake))
                enqueued += 1
            if entries:
                pipeline._emitted += enqueued - before
                wake.set()
                last_busy = time.monotonic()
            now = time.monotonic()
            ring.set_ctrl(CTRL_FAILED, 1 if pipeline._failed else 0)
            if now >= next_stats:
                next_stats = now + _STATS_EVERY_S
                with contextlib.suppress(Exception):  # releasing must never stop the writer
                    pipeline._release()
                _write_stats(
                    spool_dir,
                    {
                        "events": {k: METRICS.audit_events.labels(k)._value.get() for k in KINDS},
                        "lost": METRICS.audit_lost._value.get(),
                        "spool_bytes": spool.bytes_used(),
                        "writable": 0 if pipeline._failed else 1,
                        "failure": pipeline._failure,
                        "pid": os.getpid(),
                    },
                )
                if os.getppid() != parent and not parent_gone:
                    parent_gone = True
                    log.warning("the proxy process is gone; the audit writer spools what the ring holds and stops")
            if entries:
                continue
            # CLOSING first: once it is set, the producer's last intake number is final.
            if ring.ctrl(CTRL_CLOSING) == 1 and reader.expected > ring.ctrl(CTRL_LAST_INTAKE):
                break
            if parent_gone and enqueued - handled < _MAX_IN_FLIGHT:
                break  # nothing more to read: a fresh start recovers anything left behind
            if pipeline._writer is None or not pipeline._writer.is_alive():
                log.error("the audit writer thread stopped")
                break
            time.sleep(_BUSY_SLEEP_S if now - last_busy < 0.2 else _IDLE_SLEEP_S)
    finally:
        pipeline._stopping = True
        wake.set()
        if pipeline._writer is not None:
            pipeline._writer.join(pipeline.drain_timeout_s + 5)
        handled = pipeline._written_count - base
        if handled > released:
            reader.release(handled - released)
        with contextlib.suppress(Exception):
            pipeline._release()
        if pipeline._writer_state is not None:
            pipeline._writer_state.close()
        ring.close()
    return 0


if __name__ == "__main__":
    import signal

    # The proxy decides when the writer stops (CTRL_CLOSING) and the writer notices when the proxy is
    # gone; a Ctrl-C or a SIGTERM sent to the whole process group must not cut a spool write short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _config = json.loads(sys.stdin.read())
    threading.current_thread().name = "audit-writer"
    raise SystemExit(_child_main(_config))
