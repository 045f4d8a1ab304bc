"""The local, durable audit spool: chained segment files, a writer and cursor readers.

Strategy:

* One writer (the pipeline's writer thread) appends sealed records to the live
  segment with ``os.write`` on an ``O_APPEND`` descriptor. A batch is written
  with one call; if the call fails part-way (disk full, I/O error) the file is
  cut back to its previous length and the chain state is restored, so the
  same events can be retried and the chain never has a hole.
* ``written_seq`` moves only after a write returned. Readers never read past
  it, so they never see half a record. A process killed with SIGKILL loses no
  written record: the bytes are in the kernel's page cache; fsync (every
  batch, or every ``fsync_interval_ms``) is what protects against power loss.
* Every segment starts with a ``start`` record and, once closed, ends with an
  ``end`` record (chain.py). Opening a spool always closes the previous live
  segment (with ``reason = "recovered"`` after a crash, cutting a torn last
  line) and starts a new one, so a restart is visible in the chain.
* The writer holds an exclusive ``flock`` on ``spool.lock``: two processes can
  never write one spool, and ``audit verify`` can tell a live segment from a
  truncated one.
* ``chain.state`` (0600) holds a recent chain position (seq, key, MAC) so a
  restart need not move the key forward from K_0 through every record ever
  written. It is rewritten at every rotation, at close and about once a second.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlbastion.audit import jsontext
from sqlbastion.audit.chain import (
    ZERO_MAC,
    Algorithm,
    ChainSealer,
    initial_key,
    key_at,
    list_segments,
    next_key,
    record_mac,
    segment_name,
    split_record,
)
from sqlbastion.audit.events import format_ts
from sqlbastion.settings_schema import SecretRef, SecretUnavailable

__all__ = [
    "KEY_FILE",
    "STATE_FILE",
    "Spool",
    "SpoolError",
    "SpoolFull",
    "SpoolLocked",
    "SpoolReader",
    "SpooledRecord",
    "load_or_create_key",
]

KEY_FILE = "chain.key"
STATE_FILE = "chain.state"
LOCK_FILE = "spool.lock"
_CHECKPOINT_EVERY_S = 1.0
_MARKER_RESERVE = 1024


class SpoolError(OSError):
    """The spool cannot accept records (I/O error, broken chain, locked by another process).

    An ``OSError`` so that ``sqlbastion serve`` reports it as a start-up failure with its reason."""


class SpoolFull(SpoolError):
    """Accepting the records would take the spool past ``max_bytes``."""


class SpoolLocked(SpoolError):
    """Another process holds the spool's lock (a writer still draining, or a second ``serve``)."""


def load_or_create_key(directory: Path, *, create: bool) -> bytes:
    """The chain secret stored beside the spool when ``audit.chain_key`` is unset (0600)."""
    path = directory / KEY_FILE
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        if not create:
            raise SpoolError(f"no chain key: set audit.chain_key or restore {path}") from None
    except ValueError:
        raise SpoolError(f"{path} does not hold a hex key") from None
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def is_locked(directory: Path) -> bool:
    """True when a writer holds the spool (its newest segment is live)."""
    path = directory / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass(frozen=True, kw_only=True, slots=True)
class _Segment:
    first_seq: int
    path: Path
    size: int


class Spool:
    """The writer's side of a spool directory. Not thread-safe for writing: one writer thread."""

    def __init__(
        self,
        directory: Path,
        *,
        algorithm: Algorithm = "hmac-sha256",
        secret: bytes | SecretRef | None = None,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 4 << 30,
        fsync_always: bool = False,
    ) -> None:
        self.directory = directory
        self.algorithm: Algorithm = algorithm
        self._secret = secret
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_always = fsync_always
        self.written_seq = -1
        self.last_intake = -1  # the newest intake number (intake.py) the spool holds
        self._sealer: ChainSealer | None = None
        self._fd = -1
        self._lock_fd = -1
        self._live: _Segment | None = None
        self._size = 0
        self._closed_segments: list[_Segment] = []
        self._segments_lock = threading.Lock()
        self._last_checkpoint = 0.0
        self._dirty = False

    # -- opening and recovery -------------------------------------------------------------------

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise SpoolLocked(f"another process is writing the audit spool {self.directory}") from None
        try:
            self._open_locked()
        except BaseException:
            os.close(self._lock_fd)  # a spool that failed to open must not stay locked
            self._lock_fd = -1
            raise

    def _open_locked(self) -> None:
        segments = list_segments(self.directory)
        # A segment file created but never written (a crash right after creating it) holds nothing.
        while segments and segments[-1][1].stat().st_size == 0:
            segments.pop()[1].unlink()
        if isinstance(self._secret, SecretRef):
            try:
                secret = self._secret.reveal_bytes()
            except SecretUnavailable as exc:
                raise SpoolError(f"audit.chain_key: {exc}") from None
        elif self._secret is not None:
            secret = self._secret
        else:
            secret = load_or_create_key(self.directory, create=not segments)
        key0 = initial_key(self.algorithm, secret)
        if not segments:
            self._sealer = ChainSealer(algorithm=self.algorithm, key=key0, seq=0, prev_mac=ZERO_MAC)
        else:
            self._sealer = self._recover(segments, key0)
        with self._segments_lock:
            self._closed_segments = [
                _Segment(first_seq=s, path=p, size=p.stat().st_size) for s, p in list_segments(self.directory)
            ]
        self._start_segment()
        self._checkpoint()

    def _load_checkpoint(self) -> tuple[int, bytes, bytes] | None:
        try:
            data = json.loads((self.directory / STATE_FILE).read_text(encoding="ascii"))
            if data.get("algorithm") != self.algorithm:
                return None
            self.last_intake = int(data.get("intake", -1))
            return int(data["seq"]), bytes.fromhex(data["key"]), bytes.fromhex(data["prev"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _recover(self, segments: list[tuple[int, Path]], key0: bytes) -> ChainSealer:
        """Find the last good record, cut a torn tail, close the last segment."""
        checkpoint = self._load_checkpoint()
        if checkpoint is not None and checkpoint[0] >= segments[0][0]:
            seq, key, prev = checkpoint
        else:
            # No usable checkpoint: start from the oldest segment's start marker.
            first_line = segments[0][1].open("rb").readline().rstrip(b"\n")
            payload, _ = split_record(first_line)
            start = json.loads(payload)
            seq, key, prev = start["seq"], key_at(self.algorithm, key0, start["seq"]), bytes.fromhex(start["prev"])
        # The segment holding record `seq` (or the last one when seq is just past the end).
        index = max(i for i, (first, _) in enumerate(segments) if first <= seq) if seq >= segments[0][0] else 0
        last_type = None
        for i in range(index, len(segments)):
            path = segments[i][1]
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                nl = data.find(b"\n", pos)
                line = data[pos:nl] if nl >= 0 else data[pos:]
                good = False
                if nl >= 0:
                    try:
                        payload, mac = split_record(line)
                        obj = json.loads(payload)
                        rseq = obj["seq"]
                        if rseq < seq:  # before the checkpoint: already known good
                            last_type = obj.get("type")
                            self._note_intake(obj)
                            pos = nl + 1
                            continue
                        good = rseq == seq and record_mac(self.algorithm, key, prev, payload) == mac
                    except (ValueError, KeyError, TypeError):
                        good = False
                if not good:
                    if nl >= 0 or i != len(segments) - 1:
                        # A complete record that does not verify is tampering, not a crash (a
                        # write is either whole or torn): refuse to write on, and keep the evidence.
                        raise SpoolError(
                            f"the audit chain is broken in {path.name} at byte {pos}: run 'sqlbastion audit verify'"
                        )
                    # Only a torn last record, cut short by the crash, is dropped.
                    self._cut(path, pos, len(data) - pos)
                    break
                prev, key, seq = mac, next_key(self.algorithm, key), seq + 1
                last_type = obj.get("type")
                self._note_intake(obj)
                pos = nl + 1
        sealer = ChainSealer(algorithm=self.algorithm, key=key, seq=seq, prev_mac=prev)
        if last_type != "end":
            # Close the segment the previous process left open.
            line = sealer.seal({"type": "end", "ts": format_ts(time.time_ns()), "reason": "recovered"})
            self._append_to(segments[-1][1], line)
        return sealer

    def _note_intake(self, obj: dict[str, Any]) -> None:
        intake = obj.get("intake")
        if isinstance(intake, int) and intake > self.last_intake:
            self.last_intake = intake

    def _cut(self, path: Path, pos: int, discarded: int) -> None:
        """Cut a torn or invalid tail; it never reached ``written_seq`` in any process."""
        with open(path, "r+b") as f:
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())

    def _append_to(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- writing --------------------------------------------------------------------------------

    def _start_segment(self) -> None:
        sealer = self._require_sealer()
        name = segment_name(sealer.seq)
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        line = sealer.seal(
            {"type": "start", "prev": sealer.prev_mac.hex(), "alg": self.algorithm, "ts": format_ts(time.time_ns())}
        )
        os.write(fd, line)
        os.fsync(fd)
        self._fsync_dir()
        self._fd = fd
        self._size = len(line)
        self._live = _Segment(first_seq=sealer.seq - 1, path=path, size=0)
        self.written_seq = sealer.seq - 1

    def _fsync_dir(self) -> None:
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _require_sealer(self) -> ChainSealer:
        if self._sealer is None:
            raise SpoolError("the spool is not open")
        return self._sealer

    def _write(self, data: bytes) -> None:
        """One append. Split out so tests can inject I/O errors."""
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(errno.EIO, "short write to the audit spool")

    def append(self, events: list[dict[str, Any]], intakes: list[int | None] | None = None) -> int:
        """Seal and write the longest prefix of ``events`` that fits under ``max_bytes``;
        returns how many were written. Raises SpoolFull when not even one fits,
        SpoolError when the write fails (then nothing was written)."""
        sealer = self._require_sealer()
        if self._size >= self.segment_bytes:
            self.rotate()
        saved = (sealer.key, sealer.seq, sealer.prev_mac)
        # Room is kept for the end and start markers of the next rotation, so the
        # markers never take the spool past max_bytes either.
        room = self.max_bytes - self.bytes_used() - _MARKER_RESERVE
        lines: list[bytes] = []
        size = 0
        dumps, seal = jsontext.dumps, sealer.seal_event
        for i, e in enumerate(events):
            key, seq, prev_mac = sealer.key, sealer.seq, sealer.prev_mac
            line = seal(dumps(e), intakes[i] if intakes is not None else None)
            if size + len(line) > room:
                sealer.key, sealer.seq, sealer.prev_mac = key, seq, prev_mac
                break
            lines.append(line)
            size += len(line)
        if not lines:
            raise SpoolFull(f"the audit spool would exceed max_spool_bytes ({self.max_bytes})")
        try:
            self._write(b"".join(lines))
            if self.fsync_always:
                os.fdatasync(self._fd)
        except OSError as exc:
            sealer.key, sealer.seq, sealer.prev_mac = saved
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise SpoolError(f"cannot write the audit spool: {exc.strerror or exc}") from exc
        self._size += size
        self._dirty = True
        self.written_seq = sealer.seq - 1
        if intakes is not None:
            done = [n for n in intakes[: len(lines)] if n is not None]
            if done:
                self.last_intake = max(self.last_intake, *done)
        return len(lines)

    def sync(self) -> None:
        """fsync the live segment (and now and then the checkpoint)."""
        if self._fd >= 0 and self._dirty:
            os.fdatasync(self._fd)
            self._dirty = False
        if time.monotonic() - self._last_checkpoint >= _CHECKPOINT_EVERY_S:
            self._checkpoint()

    def rotate(self) -> None:
        """Close the live segment with an end marker and start the next one."""
        self._close_live("rotate")
        self._start_segment()
        self._checkpoint()

    def _close_live(self, reason: str) -> None:
        sealer = self._require_sealer()
        if self._fd < 0 or self._live is None:
            return
        line = sealer.seal({"type": "end", "ts": format_ts(time.time_ns()), "reason": reason})
        self._write(line)
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._size += len(line)
        self.written_seq = sealer.seq - 1
        with self._segments_lock:
            live = _Segment(first_seq=self._live.first_seq, path=self._live.path, size=self._size)
            self._closed_segments.append(live)
        self._live = None

    def _checkpoint(self) -> None:
        sealer = self._require_sealer()
        state = {
            "algorithm": self.algorithm,
            "seq": sealer.seq,
            "key": sealer.key.hex(),
            "prev": sealer.prev_mac.hex(),
            "intake": self.last_intake,
        }
        tmp = self.directory / (STATE_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(state).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / STATE_FILE)
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        if self._sealer is None:
            return
        try:
            self._close_live("close")
            self._checkpoint()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
            self._sealer = None

    # -- space ----------------------------------------------------------------------------------

    def bytes_used(self) -> int:
        with self._segments_lock:
            return self._size + sum(s.size for s in self._closed_segments)

    def release(self, through_seq: int) -> int:
        """Delete closed segments whose every record has seq <= ``through_seq``. Returns bytes freed."""
        freed = 0
        live = self._live  # read once: the writer thread replaces it when it rotates
        with self._segments_lock:
            keep: list[_Segment] = []
            closed = self._closed_segments
            for i, seg in enumerate(closed):
                next_first = closed[i + 1].first_seq if i + 1 < len(closed) else (
                    live.first_seq if live is not None else None
                )  # fmt: skip
                if next_first is not None and next_first - 1 <= through_seq and not keep:
                    with contextlib.suppress(FileNotFoundError):
                        seg.path.unlink()
                    freed += seg.size
                else:
                    keep.append(seg)
            self._closed_segments = keep
        return freed


_EVENT_PREFIX = b'{"type":"event","event":'
_INTAKE_PREFIX = b'{"type":"event","intake":'
_EVENT_KEY = b',"event":'
_SEQ_KEY = b',"seq":'


_LOWER_HEX = b"0123456789abcdef"


class SpooledRecord:
    """One event as a sink receives it: its JSON text (with ``chain``) and, parsed on first
    use, the event dict. Sinks that can hand the JSON on as it is (SQLite, PostgreSQL,
    JSONL, syslog) never pay for parsing and re-serialising it."""

    __slots__ = ("_event", "_json", "seq")

    def __init__(self, *, seq: int, event: dict[str, Any] | None = None, json_text: str | None = None) -> None:
        if event is None and json_text is None:
            raise ValueError("a spooled record needs its event or its JSON")
        self.seq = seq
        self._event = event
        self._json = json_text

    @property
    def event(self) -> dict[str, Any]:
        if self._event is None:
            self._event = jsontext.loads(self._json or "{}")
        return self._event

    @property
    def json(self) -> str:
        if self._json is None:
            self._json = jsontext.dumps_str(self._event)
        return self._json


class SpoolReader:
    """Reads records after a cursor, up to the writer's ``written_seq``. One per sink."""

    def __init__(self, directory: Path, after_seq: int) -> None:
        self.directory = directory
        self.after_seq = after_seq
        self._file: Any = None
        self._first_seq = -1
        self._ended = False

    def rewind(self, after_seq: int) -> None:
        self.close()
        self.after_seq = after_seq

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, path: Path, first: int) -> bool:
        self.close()
        try:
            self._file = open(path, "rb")  # noqa: SIM115  # kept open across reads
        except FileNotFoundError:
            return False
        self._first_seq = first
        self._ended = False
        return True

    def _open_for(self, want: int) -> bool:
        """Open the segment holding seq ``want`` (or the oldest, when it was released)."""
        segments = list_segments(self.directory)
        if not segments:
            return False
        holding = [(s, p) for s, p in segments if s <= want] or segments[:1]
        return self._open(holding[-1][1], holding[-1][0])

    def _advance(self) -> bool:
        """Move from an ended segment to the next one, if it exists yet."""
        later = [(s, p) for s, p in list_segments(self.directory) if s > self._first_seq]
        return bool(later) and self._open(later[0][1], later[0][0])

    def read(self, limit_seq: int, max_records: int) -> tuple[list[SpooledRecord], int]:
        """Events after the cursor (at most ``max_records``) and the seq the cursor may move to."""
        out: list[SpooledRecord] = []
        cursor = self.after_seq
        while cursor < limit_seq and len(out) < max_records:
            if self._file is None and not self._open_for(cursor + 1):
                break
            pos = self._file.tell()
            line = self._file.readline()
            if not line.endswith(b"\n"):
                self._file.seek(pos)
                if self._ended and self._advance():
                    continue
                break  # the writer is still on this segment
            # "<payload>\t<64 hex digits>\n" (chain.py): the MAC's hex text is kept as written for
            # the event's chain field instead of decoding it and encoding it again.
            # Anything else (a MAC that is not lowercase hex) takes split_record's checked path.
            tab = len(line) - 66
            if tab > 0 and line[tab] == 0x09 and not line[tab + 1 : -1].translate(None, _LOWER_HEX):
                payload, mac_hex = line[:tab], line[tab + 1 : -1]
            else:
                payload, mac = split_record(line[:-1])
                mac_hex = mac.hex().encode("ascii")
            record: SpooledRecord | None = None
            if payload.startswith(_EVENT_PREFIX) or payload.startswith(_INTAKE_PREFIX):
                # Event records are laid out {"type":"event"[,"intake":I],"event":{…},"seq":N}
                # (Spool.append, ChainSealer): cut the event's JSON out instead of parsing it all.
                if payload.startswith(_EVENT_PREFIX):
                    event_at = len(_EVENT_PREFIX)
                else:
                    event_at = payload.index(_EVENT_KEY, len(_INTAKE_PREFIX)) + len(_EVENT_KEY)
                at = payload.rindex(_SEQ_KEY)
                seq, rtype = int(payload[at + len(_SEQ_KEY) : -1]), "event"
                body = payload[event_at : at - 1]  # without the event's closing brace
                chain = b',"chain":{"seq":%d,"mac":"%s"}}' % (seq, mac_hex)
                record = SpooledRecord(seq=seq, json_text=(body + chain).decode("utf-8"))
            else:
                # Markers, and any record not laid out as written (the verifier says why).
                obj = json.loads(payload)
                if not isinstance(obj, dict) or not isinstance(obj.get("seq"), int):
                    raise ValueError("spool record without a seq")
                seq, rtype = obj["seq"], str(obj.get("type"))
                if rtype == "event":
                    event = obj.get("event")
                    if not isinstance(event, dict):
                        raise ValueError("event record without an event")
                    record = SpooledRecord(
                        seq=seq, event={**event, "chain": {"seq": seq, "mac": mac_hex.decode("ascii")}}
                    )
            if seq > limit_seq:
                self._file.seek(pos)
                break
            if rtype == "end":
                self._ended = True
            if seq <= cursor:
                continue
            cursor = seq
            if record is not None:
                out.append(record)
        self.after_seq = cursor
        return out, cursor
