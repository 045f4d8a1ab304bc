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
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IntakeEntry", "IntakeRing", "remove_orphans", "ring_path_for"]

_MAGIC = b"SBI1"
_OWNER_MAGIC = b"SBIO"
_DATA_START = 4096  # the first page names the owning spool
_HEADER = struct.Struct("<4sIQQII")
_ALIGN = 8
DEFAULT_RING_BYTES = 32 << 20
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

    def open(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)
            self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        owner = str(self.owner or "").encode("utf-8")[: _DATA_START - 8]
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
