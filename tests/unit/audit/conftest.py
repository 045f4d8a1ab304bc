"""Helpers for the audit unit tests: a spool with a known key and some events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sqlbastion.audit.chain import Algorithm, VerifyReport, initial_key, verify_spool
from sqlbastion.audit.spool import Spool

SECRET = b"test chain secret"


def statement(i: int, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "event_id": f"00000000-0000-7000-8000-{i:012d}",
        "ts": "2026-11-25T00:00:00.000000Z",
        "kind": "statement",
        "person": "dev",
        "statement_text": "SELECT ? FROM t",
    }
    event.update(extra)
    return event


def write_spool(
    directory: Path, n: int, *, algorithm: Algorithm = "hmac-sha256", segment_bytes: int = 1 << 20
) -> Spool:
    spool = Spool(directory, algorithm=algorithm, secret=SECRET, segment_bytes=segment_bytes)
    spool.open()
    for i in range(n):
        spool.append([statement(i)])
    spool.close()
    return spool


def verify(directory: Path, *, algorithm: Algorithm = "hmac-sha256", live: bool = False) -> VerifyReport:
    return verify_spool(directory, algorithm=algorithm, key0=initial_key(algorithm, SECRET), live=live)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"
