"""Sinks in a child process (audit.delivery = "process"): delivery, metrics, release, restart after a crash."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.config import loads
from sqlbastion.observability.metrics import METRICS

from .test_pipeline import _statement, _wait


def _pipeline(tmp_path: Path) -> AuditPipeline:
    config = tmp_path / "sqlbastion.toml"
    config.write_text(
        """
[audit]
spool_dir = "spool"
segment_bytes = 20000
sink_grace_s = 10.0

[[audit.sinks]]
type = "sqlite"
name = "local"
path = "audit.db"

[[audit.sinks]]
type = "jsonl"
name = "files"
path = "out/audit.jsonl"
required = false
""",
        encoding="utf-8",
    )
    settings = loads(config.read_text(), source=str(config))
    p = AuditPipeline.from_settings(settings)
    assert p._process is not None
    return p


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM audit_events").fetchone()[0])
    except sqlite3.OperationalError:  # the child has not created the table yet
        return 0


def test_sinks_run_in_a_child_process(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    delivered_before = METRICS.audit_sink_delivered.labels("local")._value.get()
    p.open()
    try:
        assert p._process is not None
        assert p._process.alive()
        assert p._process.proc.pid != os.getpid()
        for i in range(300):
            p.emit(_statement(i))
        _wait(lambda: _count(tmp_path / "audit.db") == 300, timeout=30)
        _wait(lambda: p.sink_cursors()["local"] >= p.spool.written_seq, timeout=10)
        # Segments every required sink acknowledged are released (the optional jsonl sink does not hold them).
        _wait(lambda: len(list((tmp_path / "spool").glob("seg-*.log"))) == 1, timeout=10)
        _wait(lambda: METRICS.audit_sink_delivered.labels("local")._value.get() - delivered_before >= 300, 10)
    finally:
        p.close()
    assert not p._process.alive()
    lines = (tmp_path / "out" / "audit.jsonl").read_text().splitlines()
    assert len({json.loads(line)["event_id"] for line in lines}) == 300


def test_a_killed_delivery_process_is_restarted_and_resumes(tmp_path: Path) -> None:
    p = _pipeline(tmp_path)
    p.open()
    try:
        assert p._process is not None
        for i in range(100):
            p.emit(_statement(i))
        _wait(lambda: _count(tmp_path / "audit.db") == 100, timeout=30)
        os.kill(p._process.proc.pid, signal.SIGKILL)
        time.sleep(0.2)
        for i in range(100, 200):
            p.emit(_statement(i))  # the data path does not notice
        _wait(lambda: _count(tmp_path / "audit.db") == 200, timeout=30)
    finally:
        p.close()


def test_a_bad_sink_setting_is_a_configuration_error_at_start(tmp_path: Path) -> None:
    import pytest

    from sqlbastion.config import ConfigError

    settings = loads(
        '[audit]\nspool_dir = "spool"\n\n[[audit.sinks]]\ntype = "postgres"\ndsn = "env:X"\ntable = "Bad Name; DROP"\n',
        source=str(tmp_path / "c.toml"),
    )
    with pytest.raises(ConfigError, match=r"audit\.sinks\[0\]"):
        AuditPipeline.from_settings(settings)
