"""``sqlbastion audit search | tail | export | verify`` against a real SQLite store and spool."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.sinks.sqlite import SQLiteSink
from sqlbastion.audit.spool import Spool
from sqlbastion.cli import main


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "sqlbastion.toml"
    config.write_text(
        '[audit]\nspool_dir = "spool"\n\n[[audit.sinks]]\ntype = "sqlite"\npath = "audit.db"\n', encoding="utf-8"
    )
    return config


def _fill(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    p = AuditPipeline(spool=spool, sinks=[SQLiteSink(path=tmp_path / "audit.db")])
    p.open()
    for i in range(12):
        p.emit(
            {
                "kind": "statement",
                "event_id": f"0191e7c0-0000-7000-8000-{i:012d}",
                "session_id": "s-a" if i < 6 else "s-b",
                "person": "dev" if i % 2 else "analyst",
                "protocol": "mysql",
                "backend": "core",
                "sql_text": f"DROP TABLE t{i}" if i % 3 == 0 else f"SELECT * FROM bank.customers WHERE id = {i}",
                "decision": "block" if i % 3 == 0 else "allow",
                "rule_ids": ["HR-DDL-DROP"] if i % 3 == 0 else [],
                "objects_read": [] if i % 3 == 0 else ["bank.customers"],
                "columns_read": [] if i % 3 == 0 else ["bank.customers.mobile"],
                "sensitive_columns": [] if i % 3 == 0 else ["bank.customers.mobile"],
            }
        )
    p.emit({"kind": "auth_failed", "person": "=cmd|' /C calc'!A0", "reason": "bad_credentials"})
    p.flush()
    deadline = time.monotonic() + 10
    p.close()
    assert time.monotonic() < deadline


@pytest.fixture
def store(tmp_path: Path) -> Path:
    config = _config(tmp_path)
    _fill(tmp_path)
    return config


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_search_filters(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "search", "-c", str(store), "--decision", "block", "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 4
    assert all(e["rule_ids"] == ["HR-DDL-DROP"] for e in events)
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--rule", "HR-DDL-DROP", "--person", "dev", "--json")
    assert len(out.splitlines()) == 2
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--object", "bank.customers", "--json")
    assert len(out.splitlines()) == 8
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--object", "bank.customers.mobile", "--json")
    assert len(out.splitlines()) == 8
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--session", "s-b", "--json")
    assert len(out.splitlines()) == 6
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--since", "1h", "--kind", "auth_failed")
    assert len(out.splitlines()) == 1
    _, out = _run(capsys, "audit", "search", "-c", str(store), "--until", "2000-01-01")
    assert out == ""
    code, _ = _run(capsys, "audit", "search", "-c", str(store), "--since", "yesterday-ish")
    assert code == 1


def test_tail_shows_the_latest(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "tail", "-c", str(store), "-n", "3", "--json")
    assert code == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["statement", "statement", "auth_failed"]


def test_export_csv_and_jsonl(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "export", "-c", str(store), "--format", "csv", "--since", "1d")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 13
    assert rows[0]["statement_text"] in ("DROP TABLE t0", "DROP TABLE ?")
    assert "customers WHERE id = ?" in rows[1]["statement_text"]
    injected = next(r for r in rows if r["kind"] == "auth_failed")
    assert injected["person"].startswith("'=")  # neutralised for spreadsheets
    target = tmp_path / "out.jsonl"
    code, _ = _run(capsys, "audit", "export", "-c", str(store), "-o", str(target))
    assert code == 0
    assert len(target.read_text().splitlines()) == 13


def test_verify_exit_codes(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "audit", "verify", "-c", str(store))
    assert code == 0, out
    assert out.startswith("chain ok")
    segment = sorted((tmp_path / "spool").glob("seg-*.log"))[-1]
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b"analyst", b"analysT")
    segment.write_bytes(b"".join(lines))
    code, out = _run(capsys, "audit", "verify", "-c", str(store), "--json")
    assert code == 4
    report = json.loads(out)
    assert report["problem"]["kind"] == "modified"
    assert report["problem"]["line"] == 4
    code, _ = _run(capsys, "audit", "verify", "--spool", str(tmp_path / "nowhere"), "-c", str(store))
    assert code == 1


def test_verify_with_a_configured_chain_key_and_an_explicit_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "chain.secret"
    key_file.write_text("a chain secret from the vault\n", encoding="utf-8")
    config = tmp_path / "sqlbastion.toml"
    config.write_text(
        f'[audit]\nspool_dir = "spool"\nchain_algorithm = "hmac-sm3"\nchain_key = "file:{key_file}"\n', encoding="utf-8"
    )
    spool = Spool(tmp_path / "spool", secret=b"a chain secret from the vault", algorithm="hmac-sm3")
    spool.open()
    spool.append([{"kind": "statement", "event_id": "e1"}])
    spool.close()
    assert not (tmp_path / "spool" / "chain.key").exists()  # the configured key is never stored beside the spool
    code, out = _run(capsys, "audit", "verify", "-c", str(config))
    assert code == 0, out
    code, out = _run(
        capsys, "audit", "verify", "--spool", str(tmp_path / "spool"), "--key-file", str(key_file), "--algorithm",
        "hmac-sm3",
    )  # fmt: skip
    assert code == 0, out
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not it\n", encoding="utf-8")
    code, out = _run(
        capsys, "audit", "verify", "--spool", str(tmp_path / "spool"), "--key-file", str(wrong), "--algorithm",
        "hmac-sm3",
    )  # fmt: skip
    assert code == 4
    assert "modified" in out


def test_tail_follow_prints_new_events_as_they_arrive(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import sqlbastion.audit.cli as audit_cli

    calls = []

    def fake_sleep(_seconds: float) -> None:
        calls.append(1)
        if len(calls) == 1:  # a new event lands while tail waits
            with sqlite3.connect(tmp_path / "audit.db") as conn:
                row = conn.execute("SELECT * FROM audit_events ORDER BY rowid DESC LIMIT 1").fetchone()
                event = json.loads(row[-1])
                event["event_id"] = "late-event"
                conn.execute(
                    "INSERT INTO audit_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    ("late-event", *row[1:-1], json.dumps(event)),
                )
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(audit_cli, "time", type("FakeTime", (), {"sleep": staticmethod(fake_sleep)}))
    code, out = _run(capsys, "audit", "tail", "-c", str(store), "-n", "1", "-f", "--json")
    assert code == 0
    assert [json.loads(line)["event_id"] for line in out.splitlines()][-1] == "late-event"
