"""JSONL files with size rotation, for Filebeat, Vector, Promtail or Fluent Bit.

One event per line (docs/audit-schema.json), appended to ``path`` and fsynced
before the batch counts as delivered. When the file passes ``max_bytes`` it is
renamed to ``<stem>-<UTC time>.jsonl`` and a new one is started; shippers that
follow renames (all four above) read both. Rotated files older than
``retention_days`` are deleted.

Redelivery after a crash: on open the sink reads the last line of the live
file and skips events whose chain seq is not newer, so a restart does not
duplicate the tail. Consumers can still deduplicate on ``event_id``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from sqlbastion.audit.sinks.base import Sink, SinkError
from sqlbastion.audit.spool import SpooledRecord

__all__ = ["JSONLSink"]


class JSONLSink(Sink):
    def __init__(
        self,
        *,
        path: Path,
        max_bytes: int = 256 << 20,
        retention_days: float | None = None,
        name: str = "jsonl",
        required: bool = True,
        batch_size: int = 1000,
    ) -> None:
        super().__init__(name=name, required=required, batch_size=batch_size)
        self.path = path
        self.max_bytes = max_bytes
        self.retention_days = retention_days
        self._last_seq = -1
        self._fd = -1

    async def open(self) -> None:
        if self._fd < 0:
            await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._last_seq = self._tail_seq()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def _tail_seq(self) -> int:
        """The chain seq of the last event written: in the live file, or in the newest
        rotated one when the live file is still empty."""
        for candidate in [self.path, *reversed(self.rotated_files())]:
            seq = self._last_seq_in(candidate)
            if seq is not None:
                return seq
        return -1

    def _last_seq_in(self, path: Path) -> int | None:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 65536))
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            if line.strip():
                try:
                    return int(json.loads(line)["chain"]["seq"])
                except (ValueError, KeyError, TypeError):
                    return -1
        return None

    async def deliver(self, records: Sequence[SpooledRecord]) -> None:
        if self._fd < 0:
            await self.open()
        await asyncio.to_thread(self._write, records)

    def _write(self, records: Sequence[SpooledRecord]) -> None:
        fresh = [r for r in records if r.seq > self._last_seq]
        if not fresh:
            return
        data = "".join(r.json + "\n" for r in fresh).encode("utf-8")
        try:
            os.write(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}") from exc
        self._last_seq = fresh[-1].seq
        if os.fstat(self._fd).st_size >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f".{time.time_ns() // 1000 % 1_000_000:06d}"
        os.replace(self.path, self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        if self.retention_days is not None:
            cutoff = time.time() - self.retention_days * 86400
            for old in self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"):
                if old.stat().st_mtime < cutoff:
                    old.unlink(missing_ok=True)

    def rotated_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))

    async def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
