"""The intake ring: emitted events in shared memory, so a killed process loses none.

``emit`` must not do I/O, yet an event handed to ``emit`` and not yet written by
the writer thread would die with the process on ``kill -9`` — after the client
may already have had its reply. So ``emit`` also copies the event (as JSON) into
a ring in a ``MAP_SHARED`` memory mapping of a file on tmpfs (``/dev/shm``): a
memory copy, no system call. Pages of a shared mapping belong to the kernel's
page cache, so they outlive the process. At the next start the pipeline reads
the ring and spools every entry whose intake number is newer than the last one
the spool holds, with its original timestamp.

Layout: entries aligned to 8 bytes, each ``magic "SBI1" | u32 length | u64 intake
| u64 ts_ns | u32 crc32 | u32 pad | payload``. The CRC covers intake, ts and the
payload, so a torn entry (the process killed in the middle of a copy) or an
entry half overwritten by the next lap is ignored. A scan walks the ring and,
past anything invalid, resynchronises at the next 8-byte boundary.

The ring lives in RAM only (tmpfs, mode 0600, gone at reboot) because entries
hold statement text before redaction; it survives a process crash, not a power
loss, which is what the spool's fsync is for. Old entries are overwritten lap
after lap; if the writer falls a whole ring behind, only a crash at that moment
could lose the overwritten ones.

**Queue mode** (the writer in its own process, writer.py): the ring is then the only
path from the data path to the writer, so nothing may be overwritten before the
writer process has handled it. A control block in the first page (``CTRL_*``, one
64-bit field per slot, each written by one side only) carries the producer's byte
total and the consumer's: the producer refuses an entry that would overwrite bytes
the consumer has not released (``push`` returns False, the caller applies the
failure policy), and the consumer (``IntakeReader``) releases bytes only once the
events they held are in the spool. Both sides count the bytes skipped at the end
of a lap, so the totals agree. Entries are found by expecting the next intake
number at the read position, or at the start of the data area after a lap.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IntakeEntry", "IntakeReader", "IntakeRing", "remove_orphans", "ring_path_for"]

_MAGIC = b"SBI1"
_OWNER_MAGIC = b"SBIO"
_DATA_START = 4096  # the first page names the owning spool
_HEADER = struct.Struct("<4sIQQII")
_ALIGN = 8
# The control block: 16 signed 64-bit slots near the end of the first page (the owner path stops before it).
_CTRL_AT = 3072
# Control slots are read and written by two processes at once. struct's standard ("<q") formats
# copy a value byte by byte, so a reader could see half an update (a consumed total that jumps back
# by 16 MiB made the producer think the ring was full). The native format copies the aligned eight
# bytes with one memcpy, and ``ctrl`` also reads until two reads agree.
_SLOT = struct.Struct("@q")
CTRL_WRITE_TOTAL = 0  # producer: bytes appended since the queue started (lap ends included)
CTRL_LAST_INTAKE = 1  # producer: the newest intake number appended
CTRL_CLOSING = 2  # producer: 1 once the producer stopped appending for good (a clean stop)
CTRL_READY = 4  # consumer: next intake number + 1 once recovery is done and the queue may start
CTRL_READ_POS = 5  # consumer: the byte position of the oldest entry not yet handled
CTRL_CONSUMED_TOTAL = 6  # consumer: bytes released (handled: written to the spool, or lost by policy)
CTRL_EXPECTED = 7  # consumer: the intake number expected at CTRL_READ_POS
CTRL_HANDLED = 8  # consumer: the newest intake number handled
CTRL_FAILED = 9  # consumer: 1 while the spool cannot take events
CTRL_PID = 10  # consumer: its process id
CTRL_OWNER_PID = 11  # producer: the proxy process that appends (tells a second serve from a crashed one)
# About 160,000 statement events: several seconds of a busy proxy's traffic while the writer process
# is held up (an fsync stall, CPU contention), before fail_closed has to refuse statements.
DEFAULT_RING_BYTES = 128 << 20
MAX_ENTRY_BYTES = 1 << 20


def remove_orphans(directory: Path = Path("/dev/shm")) -> int:  # noqa: S108  # where rings live
    """Delete this user's rings whose spool directory no longer exists; returns how many."""
    removed = 0
    for path in directory.glob("sqlbastion-intake-*"):
        try:
            st = path.stat(follow_symlinks=False)
            if st.st_uid != os.getuid():
                continue
            with open(path, "rb") as f:
                head = f.read(_DATA_START)
        except OSError:
            continue
        if head[:4] != _OWNER_MAGIC:
            continue
        (length,) = struct.unpack_from("<I", head, 4)
        owner = head[8 : 8 + length].decode("utf-8", "replace")
        if owner and not Path(owner).exists():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def ring_path_for(spool_dir: Path) -> Path | None:
    """The ring's file for one spool: on tmpfs, named after the spool's absolute path."""
    shm = Path("/dev/shm")  # noqa: S108  # a per-spool name, created 0600 and opened without following links
    if not shm.is_dir():
        return None
    digest = hashlib.sha256(str(spool_dir.resolve()).encode()).hexdigest()[:16]
    return shm / f"sqlbastion-intake-{digest}"


@dataclass(frozen=True, kw_only=True, slots=True)
class IntakeEntry:
    intake: int
    ts_ns: int
    payload: bytes


class IntakeRing:
    """One process appends (under the pipeline's emit lock); recovery scans."""

    def __init__(self, path: Path, size: int = DEFAULT_RING_BYTES, *, owner: Path | None = None) -> None:
        self.path = path
        self.size = size
        # The spool the ring belongs to, written into the ring's first page so that a ring whose
        # spool is gone (a test's temporary directory, a moved installation) can be cleaned up.
        self.owner = owner
        self._map: mmap.mmap | None = None
        self._pos = 0
        self._total = 0  # queue mode: bytes appended (CTRL_WRITE_TOTAL)

    def open(self) -> None:
        if self._map is not None:
            return  # already mapped (the writer process checks the file before recovery uses it)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
            self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        owner = str(self.owner or "").encode("utf-8")[: _CTRL_AT - 8]
        self._map[0:8] = _OWNER_MAGIC + struct.pack("<I", len(owner))
        self._map[8 : 8 + len(owner)] = owner
        self._pos = _DATA_START

    def append(self, intake: int, ts_ns: int, payload: bytes) -> bool:
        """Copy one entry in; False when it is too large to keep (the writer still gets it)."""
        m = self._map
        if m is None or len(payload) > MAX_ENTRY_BYTES:
            return False
        total = _HEADER.size + len(payload)
        total += -total % _ALIGN
        pos = self._pos
        if pos + total > self.size:
            if pos + 4 <= self.size:
                m[pos : pos + 4] = b"\0\0\0\0"  # no entry here: the lap ends
            pos = _DATA_START
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<QQ", intake, ts_ns)))
        end = pos + _HEADER.size + len(payload)
        m[pos + _HEADER.size : end] = payload
        # The header goes in last: a kill in the middle leaves an entry whose CRC fails.
        m[pos : pos + _HEADER.size] = _HEADER.pack(_MAGIC, len(payload), intake, ts_ns, crc, 0)
        self._pos = pos + total
        return True

    # -- queue mode ----------------------------------------------------------------------------

    def ctrl(self, slot: int) -> int:
        m = self._map
        if m is None:
            return 0
        at = _CTRL_AT + slot * 8
        unpack = _SLOT.unpack_from
        value: int = unpack(m, at)[0]
        while True:
            again: int = unpack(m, at)[0]
            if again == value:
                return value
            value = again

    def set_ctrl(self, slot: int, value: int) -> None:
        m = self._map
        if m is not None:
            _SLOT.pack_into(m, _CTRL_AT + slot * 8, value)

    @property
    def capacity(self) -> int:
        return self.size - _DATA_START

    def start_queue(self, next_intake: int) -> None:
        """The producer starts a queue at the beginning of the data area (after the consumer's recovery)."""
        self._pos = _DATA_START
        self._total = 0
        self.set_ctrl(CTRL_WRITE_TOTAL, 0)
        self.set_ctrl(CTRL_LAST_INTAKE, next_intake - 1)
        self.set_ctrl(CTRL_CLOSING, 0)

    def free_bytes(self) -> int:
        """Bytes the producer may still append before it would overwrite unhandled entries."""
        return self.capacity - (self._total - self.ctrl(CTRL_CONSUMED_TOTAL))

    def push(self, intake: int, ts_ns: int, payload: bytes) -> bool:
        """Queue mode's append: False (nothing written) when the entry does not fit in the room
        the consumer has released, or is larger than an entry may be."""
        m = self._map
        if m is None or len(payload) > MAX_ENTRY_BYTES:
            return False
        total = _HEADER.size + len(payload)
        total += -total % _ALIGN
        pos = self._pos
        wrap = pos + total > self.size  # a new lap (the rest of this one may be 0 bytes)
        skip = self.size - pos if wrap else 0
        if skip + total > self.free_bytes():
            return False
        if wrap:
            if pos + 4 <= self.size:
                m[pos : pos + 4] = b"\0\0\0\0"
            pos = _DATA_START
        crc = zlib.crc32(payload, zlib.crc32(struct.pack("<QQ", intake, ts_ns)))
        end = pos + _HEADER.size + len(payload)
        m[pos + _HEADER.size : end] = payload
        # The header goes in last: the consumer sees a whole entry or none (its CRC fails).
        m[pos : pos + _HEADER.size] = _HEADER.pack(_MAGIC, len(payload), intake, ts_ns, crc, 0)
        self._pos = pos + total
        self._total += skip + total
        self.set_ctrl(CTRL_LAST_INTAKE, intake)
        self.set_ctrl(CTRL_WRITE_TOTAL, self._total)
        return True

    def entry_at(self, pos: int, intake: int) -> tuple[IntakeEntry, int] | None:
        """The complete entry numbered ``intake`` at ``pos`` and its aligned size, or None."""
        m = self._map
        if m is None or pos + _HEADER.size > self.size:
            return None
        magic, length, found, ts_ns, crc, _ = _HEADER.unpack_from(m, pos)
        if magic != _MAGIC or found != intake or length > MAX_ENTRY_BYTES:
            return None
        start = pos + _HEADER.size
        if start + length > self.size:
            return None
        payload = m[start : start + length]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<QQ", intake, ts_ns))) != crc:
            return None  # torn, or still being written
        total = _HEADER.size + length
        return IntakeEntry(intake=intake, ts_ns=ts_ns, payload=payload), total + (-total % _ALIGN)

    def scan(self) -> list[IntakeEntry]:
        """Every valid entry, in intake order."""
        m = self._map
        if m is None:
            return []
        found: dict[int, IntakeEntry] = {}
        pos = _DATA_START
        data = m[:]  # one copy, then pure bytes work
        limit = len(data) - _HEADER.size
        while pos <= limit:
            at = data.find(_MAGIC, pos)
            if at < 0 or at > limit:
                break
            if at % _ALIGN:
                pos = at + 1
                continue
            _, length, intake, ts_ns, crc, _ = _HEADER.unpack_from(data, at)
            start = at + _HEADER.size
            payload = data[start : start + length]
            if (
                length <= MAX_ENTRY_BYTES
                and len(payload) == length
                and zlib.crc32(payload, zlib.crc32(struct.pack("<QQ", intake, ts_ns))) == crc
            ):
                found[intake] = IntakeEntry(intake=intake, ts_ns=ts_ns, payload=payload)
                total = _HEADER.size + length
                pos = at + total + (-total % _ALIGN)
            else:
                pos = at + _ALIGN
        return [found[k] for k in sorted(found)]

    def close(self, *, discard: bool = False) -> None:
        """Unmap; ``discard`` (a clean shutdown, everything spooled) removes the file."""
        if self._map is not None:
            self._map.close()
            self._map = None
        if discard:
            self.path.unlink(missing_ok=True)


class IntakeReader:
    """The consumer side of queue mode (the writer process). ``read`` returns entries in intake
    order; ``release`` gives the bytes of the oldest ``n`` read entries back to the producer once
    their events are handled. The reader's position lives in the control block, so a restarted
    writer process resumes at the oldest entry not yet handled."""

    def __init__(self, ring: IntakeRing) -> None:
        self.ring = ring
        self._pos = ring.ctrl(CTRL_READ_POS)
        self._expected = ring.ctrl(CTRL_EXPECTED)
        self._total = ring.ctrl(CTRL_CONSUMED_TOTAL)
        # For every entry read and not released: (intake, position after it, byte total after it).
        self._unreleased: deque[tuple[int, int, int]] = deque()

    @staticmethod
    def reset(ring: IntakeRing, next_intake: int) -> None:
        """A fresh queue (after recovery): reading starts at the data area's beginning."""
        ring.set_ctrl(CTRL_READ_POS, _DATA_START)
        ring.set_ctrl(CTRL_EXPECTED, next_intake)
        ring.set_ctrl(CTRL_CONSUMED_TOTAL, 0)
        ring.set_ctrl(CTRL_HANDLED, next_intake - 1)

    @property
    def expected(self) -> int:
        return self._expected

    def read(self, limit: int) -> list[IntakeEntry]:
        ring = self.ring
        out: list[IntakeEntry] = []
        pos, total, expected = self._pos, self._total, self._expected
        if self._unreleased:
            newest, pos, total = self._unreleased[-1]
            expected = newest + 1
        while len(out) < limit:
            found = ring.entry_at(pos, expected)
            if found is None:
                # The producer may have started a new lap: it skipped the rest of the ring.
                found = ring.entry_at(_DATA_START, expected) if pos != _DATA_START else None
                if found is None:
                    break
                total += ring.size - pos
                pos = _DATA_START
            entry, size = found
            pos += size
            total += size
            out.append(entry)
            self._unreleased.append((expected, pos, total))
            expected += 1
        return out

    def release(self, n: int) -> None:
        """The oldest ``n`` entries read are handled: their bytes may be overwritten."""
        last: tuple[int, int, int] | None = None
        for _ in range(min(n, len(self._unreleased))):
            last = self._unreleased.popleft()
        if last is None:
            return
        intake, self._pos, self._total = last
        self._expected = intake + 1
        ring = self.ring
        ring.set_ctrl(CTRL_READ_POS, self._pos)
        ring.set_ctrl(CTRL_EXPECTED, self._expected)
        ring.set_ctrl(CTRL_HANDLED, intake)
        # Last: once the total moves, the producer may overwrite what lay before it.
        ring.set_ctrl(CTRL_CONSUMED_TOTAL, self._total)
