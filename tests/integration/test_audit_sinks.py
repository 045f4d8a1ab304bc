"""Audit sinks against the real things this machine runs: SQLite, PostgreSQL and rsyslog.

Kafka, Elasticsearch and Loki run only when ``SQLBASTION_TEST_KAFKA`` (bootstrap
servers), ``SQLBASTION_TEST_ELASTICSEARCH`` or ``SQLBASTION_TEST_LOKI`` (base URLs)
name an endpoint; their requests are checked byte for byte in tests/unit/audit.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.base import Sink
from sqlbastion.audit.sinks.postgres import PostgresSink
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.sinks.syslog import SyslogSink
from sqlbastion.audit.spool import Spool
from sqlbastion.devtools.servers import ServerInfo, free_port

pytestmark = pytest.mark.integration

SECRET = b"integration chain secret"


def _event(i: int, run: str) -> dict[str, object]:
    return {
        "kind": "statement",
        "event_id": f"{run}-{i:08d}",
        "session_id": f"{run}-s{i % 17}",
        "person": "dev" if i % 2 else "analyst",
        "roles": ["developer"],
        "protocol": "mysql" if i % 3 else "postgres",
        "backend": "core",
        "database": "bank",
        "sql_text": f"SELECT name FROM customers WHERE id = {i}",
        "decision": "block" if i % 10 == 0 else "allow",
        "rule_ids": ["HR-DDL-DROP"] if i % 10 == 0 else [],
        "statement_types": ["select"],
        "objects_read": ["bank.customers"],
        "columns_read": ["bank.customers.name"],
        "rows": 1,
        "proxy_us": 50,
        "backend_us": 300,
        "policy_version": "v1",
    }


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]  # a zero-argument callable
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _caught_up(p: AuditPipeline, sink: Sink) -> bool:
    return p.sink_cursors().get(sink.name, -1) >= p.spool.written_seq


def _run(tmp_path: Path, sink: Sink, n: int, run: str) -> AuditPipeline:
    p = AuditPipeline(spool=Spool(tmp_path / "spool", secret=SECRET), sinks=[sink])
    p.open()
    for i in range(n):
        p.emit(_event(i, run))
    assert p.flush(60)
    return p


def test_sqlite_sink_gets_every_event_under_load(tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    n = 20_000
    sink = SQLiteSink(path=tmp_path / "audit.db")
    p = _run(tmp_path, sink, n, run)
    _wait(lambda: _caught_up(p, sink), 120, "the SQLite sink")
    p.close()
    conn = sqlite3.connect(tmp_path / "audit.db")
    assert conn.execute("SELECT count(*) FROM audit_events WHERE kind = 'statement'").fetchone()[0] == n
    assert conn.execute("SELECT count(DISTINCT event_id) FROM audit_events").fetchone()[0] == n
    assert conn.execute("SELECT count(*) FROM audit_event_rules").fetchone()[0] == n // 10
    plan = " ".join(
        str(r) for r in conn.execute("EXPLAIN QUERY PLAN SELECT * FROM audit_events WHERE person = 'dev' ORDER BY ts")
    )
    assert "audit_events_person" in plan


@pytest.fixture
def pg_dsn(postgres_server: ServerInfo) -> str:
    s = postgres_server
    return f"postgresql://{s.admin_user}:{s.admin_password}@{s.host}:{s.port}/postgres"


async def test_postgres_sink_table_is_time_indexed_and_idempotent(tmp_path: Path, pg_dsn: str) -> None:
    run = uuid.uuid4().hex[:8]
    table = f"audit_{run}"
    n = 5000
    sink = PostgresSink(dsn=pg_dsn, table=table)
    p = AuditPipeline(spool=Spool(tmp_path / "spool", secret=SECRET), sinks=[sink])
    await p.start()
    for i in range(n):
        p.emit(_event(i, run))
    assert await p.wait_written(60)
    deadline = time.monotonic() + 120
    while not _caught_up(p, sink) and time.monotonic() < deadline:
        await __import__("asyncio").sleep(0.1)
    await p.stop()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == n
        # Redelivering the same spool records is a no-op.
        again = PostgresSink(dsn=pg_dsn, table=table)
        from sqlbastion.audit.spool import SpoolReader

        reader = SpoolReader(tmp_path / "spool", -1)
        records, _ = reader.read(10**9, 100)
        await again.deliver(records)
        await again.close()
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == n
        # What a Grafana time-series panel runs ($__timeFilter / $__timeGroup expand to these).
        rows = await conn.fetch(
            f"SELECT date_trunc('minute', ts) AS time, decision, count(*) FROM {table} "
            "WHERE ts > now() - interval '1 hour' GROUP BY 1, 2 ORDER BY 1"
        )
        assert sum(r["count"] for r in rows) == n
        assert {r["decision"] for r in rows} == {"allow", "block"}
        blocked = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE rule_ids @> ARRAY['HR-DDL-DROP']")
        assert blocked == n // 10
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE objects @> ARRAY['bank.customers']") == n
        indexes = {
            r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", table)
        }
        assert f"{table}_ts" in indexes
        event = await conn.fetchval(f"SELECT event->>'statement_text' FROM {table} LIMIT 1")
        assert event == "SELECT name FROM customers WHERE id = ?"
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


# -- rsyslog ------------------------------------------------------------------------------------


class Rsyslog:
    """rsyslogd run by the test itself: imtcp on a loopback port, writing raw messages to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.out = directory / "received.log"
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslog.pid"
        work = directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="audit") {{
  action(type="omfile" file="{self.out}" template="raw")
}}
input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="audit")
""",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        import socket

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None

    def received_ids(self) -> list[str]:
        if not self.out.exists():
            return []
        return re.findall(r'event_id="([^"]+)"', self.out.read_text(encoding="utf-8", errors="replace"))


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    if not os.path.exists("/usr/sbin/rsyslogd"):
        if os.environ.get("CI"):
            pytest.fail("rsyslogd is not installed (scripts/install-deps.sh installs it)")
        pytest.skip("rsyslogd is not installed")
    r = Rsyslog(tmp_path / "rsyslog")
    r.start()
    yield r
    r.stop()


def test_syslog_sink_loses_nothing_when_rsyslog_stops_and_restarts_under_load(tmp_path: Path, rsyslog: Rsyslog) -> None:
    run = uuid.uuid4().hex[:8]
    sink = SyslogSink(address=f"127.0.0.1:{rsyslog.port}", confirm_after_s=1.0)
    p = AuditPipeline(spool=Spool(tmp_path / "spool", secret=SECRET), sinks=[sink])
    p.open()
    n = 0
    started = time.monotonic()

    def emit_for(seconds: float) -> None:
        nonlocal n
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for _ in range(100):
                p.emit(_event(n, run))
                n += 1
            time.sleep(0.01)

    emit_for(1.0)
    rsyslog.stop()
    emit_for(1.5)  # the receiver is down: events pile up in the spool
    lag_while_down = p.spool.written_seq - p.sink_cursors()["syslog"]
    rsyslog.start()
    emit_for(1.0)
    assert p.flush(30)
    _wait(lambda: _caught_up(p, sink), 90, "the syslog backlog to drain")
    p.close()
    assert lag_while_down > 0
    received = set(rsyslog.received_ids())
    expected = {f"{run}-{i:08d}" for i in range(n)}
    assert not expected - received, f"{len(expected - received)} of {n} events lost"
    assert time.monotonic() - started < 120


def test_syslog_messages_arrive_parsed_as_rfc5424(tmp_path: Path, rsyslog: Rsyslog) -> None:
    run = uuid.uuid4().hex[:8]
    sink = SyslogSink(address=f"127.0.0.1:{rsyslog.port}", confirm_after_s=0.2)
    p = _run(tmp_path, sink, 3, run)
    _wait(lambda: _caught_up(p, sink), 30, "delivery")
    p.close()
    _wait(lambda: len(rsyslog.received_ids()) >= 3, 10, "rsyslog to write")
    text = rsyslog.out.read_text(encoding="utf-8")
    assert re.search(
        r"^<110>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ sqlbastion \d+ statement \[sqlbastion@32473 ", text, re.M
    )


# -- optional live endpoints ----------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("SQLBASTION_TEST_KAFKA"), reason="set SQLBASTION_TEST_KAFKA=host:port")
def test_kafka_live(tmp_path: Path) -> None:
    from sqlbastion.audit.sinks.kafka import KafkaSink

    run = uuid.uuid4().hex[:8]
    sink = KafkaSink(bootstrap_servers=os.environ["SQLBASTION_TEST_KAFKA"].split(","), topic=f"sqlbastion-test-{run}")
    p = _run(tmp_path, sink, 200, run)
    _wait(lambda: _caught_up(p, sink), 60, "Kafka delivery")
    p.close()


@pytest.mark.skipif(not os.environ.get("SQLBASTION_TEST_ELASTICSEARCH"), reason="set SQLBASTION_TEST_ELASTICSEARCH")
def test_elasticsearch_live(tmp_path: Path) -> None:
    from sqlbastion.audit.sinks.http import ElasticsearchSink

    run = uuid.uuid4().hex[:8]
    sink = ElasticsearchSink(url=os.environ["SQLBASTION_TEST_ELASTICSEARCH"], index=f"sqlbastion-test-{run}")
    p = _run(tmp_path, sink, 200, run)
    _wait(lambda: _caught_up(p, sink), 60, "Elasticsearch delivery")
    p.close()


@pytest.mark.skipif(not os.environ.get("SQLBASTION_TEST_LOKI"), reason="set SQLBASTION_TEST_LOKI")
def test_loki_live(tmp_path: Path) -> None:
    from sqlbastion.audit.sinks.http import LokiSink

    run = uuid.uuid4().hex[:8]
    sink = LokiSink(url=os.environ["SQLBASTION_TEST_LOKI"])
    p = _run(tmp_path, sink, 200, run)
    _wait(lambda: _caught_up(p, sink), 60, "Loki delivery")
    p.close()
