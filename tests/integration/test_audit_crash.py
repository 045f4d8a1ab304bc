"""kill -9 while events are being emitted, then a restart: nothing acknowledged is lost, sinks catch up,
and the chain still verifies (the crashed segment is closed as "recovered")."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sqlbastion.audit.chain import initial_key, verify_spool
from sqlbastion.audit.delivery import DeliveryProcess
from sqlbastion.audit.intake import IntakeRing, ring_path_for
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.spool import Spool

pytestmark = pytest.mark.integration

SECRET = b"crash test secret"

CHILD = """
import sys, time
from pathlib import Path
from tests.integration.test_audit_crash import pipeline_for

directory, run, writer = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
pipeline = pipeline_for(directory, writer)
pipeline.open()
i = 0
while True:
    for _ in range(40):
        pipeline.emit({"kind": "statement", "event_id": f"{run}-{i:08d}", "person": "dev", "protocol": "mysql",
                       "backend": "core", "sql_text": f"UPDATE accounts SET balance = {i} WHERE id = {i}",
                       "decision": "allow"})
        i += 1
    # The "reply": only events the pipeline has written are reported as acknowledged.
    pipeline.flush(30)
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
"""


def pipeline_for(directory: Path, writer: str) -> AuditPipeline:
    """The pipeline as serve builds it: with writer "process", the proxy process only fills the
    intake ring; the writer and the SQLite sink run in child processes, orphaned by the kill."""
    spool = Spool(directory / "spool", secret=SECRET)
    if writer == "thread":
        return AuditPipeline(spool=spool, sinks=[SQLiteSink(path=directory / "audit.db")])
    ring_path = ring_path_for(spool.directory)
    assert ring_path is not None
    delivery = DeliveryProcess(
        spool_dir=spool.directory,
        base_dir=directory,
        sinks=[{"type": "sqlite", "name": "sqlite", "path": str(directory / "audit.db")}],
        grace_s=30,
    )
    return AuditPipeline(
        spool=spool,
        sinks=[],
        intake_ring=IntakeRing(ring_path, owner=spool.directory),
        delivery_process=delivery,
        writer="process",
    )


def _acked_then_kill(tmp_path: Path, run: str, writer: str, *, at_least: int) -> int:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), run, writer],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    acked = 0
    deadline = time.monotonic() + 60
    try:
        assert proc.stdout is not None
        while acked < at_least and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child died: {proc.stderr.read() if proc.stderr else ''}")
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        # Lines already printed before the kill are acknowledgements too.
        for line in proc.stdout:
            if line.strip():
                acked = max(acked, int(line))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return acked


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_kill_9_loses_no_acknowledged_event_and_sinks_catch_up(tmp_path: Path, writer: str) -> None:
    run = uuid.uuid4().hex[:8]
    acked = _acked_then_kill(tmp_path, run, writer, at_least=3000)
    db = tmp_path / "audit.db"
    before = sqlite3.connect(db).execute("SELECT count(*) FROM audit_events").fetchone()[0] if db.exists() else 0

    # Restart: the spool recovers (torn tail cut, live segment closed), the sink resumes from its cursor.
    p = pipeline_for(tmp_path, writer)
    p.open()
    deadline = time.monotonic() + 60
    while p.sink_cursors().get("sqlite", -1) < p.written_seq() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.close()

    conn = sqlite3.connect(db)
    ids = {r[0] for r in conn.execute("SELECT event_id FROM audit_events")}
    missing = [i for i in range(acked) if f"{run}-{i:08d}" not in ids]
    assert not missing, f"{len(missing)} acknowledged events lost (first {missing[:5]})"
    # The sinks may hold more than was acknowledged (events emitted after the last reply), never less.
    assert len(ids) >= max(acked, before)
    report = verify_spool(tmp_path / "spool", algorithm="hmac-sha256", key0=initial_key("hmac-sha256", SECRET))
    assert report.ok, report.describe()
    texts = {r[0] for r in conn.execute("SELECT json_extract(event, '$.statement_text') FROM audit_events")}
    assert texts == {"UPDATE accounts SET balance = ? WHERE id = ?"}
