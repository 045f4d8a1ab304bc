"""``sqlbastion check``: decision, rules, objects, masks; --json; --file; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqlbastion.cli import main
from tests.unit.policies.support import EXAMPLE_POLICY


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "sqlbastion.toml"
    cfg.write_text(
        f'[policy]\nfiles = ["{EXAMPLE_POLICY}"]\n'
        '[[backends]]\nname = "core"\nprotocol = "mysql"\nlisten = "127.0.0.1:13998"\nhost = "127.0.0.1"\n'
        'port = 9\nuser = "svc"\ndatabase = "bank"\nconnect_timeout_s = 1.0\n'
        '[[backends]]\nname = "ledger"\nprotocol = "postgres"\nlisten = "127.0.0.1:13997"\nhost = "127.0.0.1"\n'
        'port = 9\nuser = "svc"\ndatabase = "bank"\nconnect_timeout_s = 1.0\n'
    )
    return cfg


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_exit_codes(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", str(config), "--backend", "core"]
    assert run(capsys, *base, "--person", "dev", "SELECT 1")[0] == 0
    code, out, err = run(capsys, *base, "--person", "dev", "UPDATE accounts SET status = 'x' WHERE 1=1")
    assert code == 1
    assert "HR-DML-TAUTOLOGY" in out
    assert "always true" in out
    assert "catalog of core could not be loaded" in err
    assert run(capsys, *base, "--person", "dba", "DROP TABLE customers")[0] == 2
    assert run(capsys, *base, "--person", "dba", "ALTER TABLE customers DROP COLUMN email")[0] == 0
    assert run(capsys, "--config", str(config), "--backend", "nope", "--person", "dev", "SELECT 1")[0] == 3
    assert (
        run(capsys, "--config", str(config.parent / "absent.toml"), "--backend", "core", "--person", "x", "SELECT 1")[0]
        == 3
    )


def test_json_output(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "--config",
        str(config),
        "--backend",
        "core",
        "--person",
        "dba",
        "--json",
        "SELECT c.mobile, a.card_no FROM customers c JOIN accounts a ON a.customer_id = c.id WHERE c.id = 1",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["decision"] == "allow"
    assert doc["objects_read"] == ["bank.accounts", "bank.customers"]
    assert [m["column"] for m in doc["masks"][0]] == ["mobile", "card_no"]
    assert {m["treatment"] for m in doc["masks"][0]} == {"clear"}
    code, out, _ = run(
        capsys,
        "--config",
        str(config),
        "--backend",
        "ledger",
        "--person",
        "dev",
        "--json",
        "SELECT mobile FROM customers WHERE mobile LIKE '1%'",
    )
    doc = json.loads(out)
    assert code == 1
    assert [r["id"] for r in doc["rules"]] == ["MASK-UNPROVABLE", "MASK-INFERENCE"]


def test_file_checks_every_statement(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = tmp_path / "work.sql"
    sql.write_text("SELECT 1;\n-- a comment\nDELETE FROM accounts WHERE id = 1;\nDROP TABLE customers;\n")
    code, out, _ = run(
        capsys, "--config", str(config), "--backend", "core", "--person", "dev", "--json", "--file", str(sql)
    )
    doc = json.loads(out)
    assert [d["decision"] for d in doc] == ["allow", "allow", "block"]
    assert code == 1
