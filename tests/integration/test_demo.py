"""``scripts/demo.sh`` end to end: servers, sample bank, persons, proxy, and the printed lines really connect."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlbastion.devtools.demo import PERSONS, available_protocols
from sqlbastion.devtools.sample_bank import CANARY
from sqlbastion.devtools.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "demo.sh"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[dict[str, str], str]]:
    # Not pytest's tmp_path: run as root, the servers run as the mysql and postgres
    # accounts, which cannot enter pytest's private (0700) temporary tree.
    with tempfile.TemporaryDirectory(prefix="sqlbastion-demo-") as d:
        os.chmod(d, 0o755)
        yield from _run_demo(Path(d))


def _run_demo(directory: Path) -> Iterator[tuple[dict[str, str], str]]:
    env = dict(os.environ)
    env.update(
        SQLBASTION_DEMO_DIR=str(directory),
        SQLBASTION_DEMO_MYSQL_PORT=str(free_port()),
        SQLBASTION_DEMO_POSTGRES_PORT=str(free_port()),
        SQLBASTION_DEMO_ADMIN_PORT=str(free_port()),
    )
    try:
        r = subprocess.run(
            ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT
        )
        assert r.returncode == 0, r.stdout + r.stderr
        yield env, r.stdout
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120, check=False)


def test_demo_starts_and_reports_what_runs(demo: tuple[dict[str, str], str]) -> None:
    env, out = demo
    assert "10000 customers, 20000 accounts, 70000 transactions" in out
    status = subprocess.run(
        ["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "mariadb:" in status
    assert "postgres:" in status
    for protocol in available_protocols():
        assert f"  {protocol} listener 127.0.0.1:" in status
    users = Path(env["SQLBASTION_DEMO_DIR"]) / "users.toml"
    text = users.read_text()
    for person in PERSONS:
        assert f"[persons.{person.name}]" in text
        assert person.password not in text  # verifiers only
    protocols = available_protocols()
    if protocols:
        assert "sqlbastion is running" in status or "sqlbastion: running" in status
        for person in PERSONS:
            assert f"{person.name} (role {person.role}):" in out
    else:
        assert "no protocol listener exists yet" in out


def _printed_lines(out: str, prefix: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if line.strip().startswith(prefix)]


def _connected(result: subprocess.CompletedProcess[str]) -> bool:
    """Authenticated: the statement ran, or sqlbastion's policy answered it (which needs a session)."""
    return result.returncode == 0 or "sqlbastion:" in result.stderr


CLIENTS = {
    # protocol: (printed line prefix, client, how to pass a statement, what a wrong password says)
    "mysql": ("mysql ", "mysql", "-e", "1045"),
    "postgres": ("PGPASSWORD=", "psql", "-c", "password authentication failed"),
}


@pytest.mark.parametrize("protocol", sorted(CLIENTS))
def test_printed_lines_connect(demo: tuple[dict[str, str], str], protocol: str) -> None:
    env, out = demo
    prefix, client, flag, denied = CLIENTS[protocol]
    lines = _printed_lines(out, prefix)
    if protocol not in available_protocols():
        # Not built yet: the demo must say so and print no line for it.
        assert f"src/sqlbastion/proxy/{protocol}/listener.py" in out
        assert lines == []
        return
    assert shutil.which(client), f"the {client} client is installed by scripts/install-deps.sh"
    assert len(lines) == len(PERSONS)
    for line in lines:
        r = subprocess.run(
            ["bash", "-c", f"{line} {flag} 'SELECT 1'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert _connected(r), f"{line}: {r.stderr}"
    plain = lines[0].replace("--ssl ", "--skip-ssl ").replace("PGSSLMODE=require", "PGSSLMODE=disable")
    assert plain != lines[0]
    r = subprocess.run(
        ["bash", "-c", f"{plain} {flag} 'SELECT 1'"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode != 0, "the demo requires TLS"
    wrong = lines[0].replace("-demo-pass", "-wrong-pass")
    r = subprocess.run(
        ["bash", "-c", f"{wrong} {flag} 'SELECT 1'"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode != 0
    assert denied in r.stderr


@pytest.mark.parametrize("protocol", sorted(CLIENTS))
def test_suggested_statements_do_what_the_demo_says(demo: tuple[dict[str, str], str], protocol: str) -> None:
    """Every "try:" line, run as its person, has the printed outcome under examples/policy.toml."""
    env, out = demo
    if protocol not in available_protocols():
        assert f"src/sqlbastion/proxy/{protocol}/listener.py" in out
        return
    prefix, _client, flag, _denied = CLIENTS[protocol]
    lines = {
        line.split("-u " if protocol == "mysql" else "-U ")[1].split()[0]: line for line in _printed_lines(out, prefix)
    }
    for person in PERSONS:
        for t in person.tries:
            assert f"try: {t.sql}   -- {t.outcome}" in out
            r = subprocess.run(
                ["bash", "-c", f"{lines[person.name]} {flag} {shlex.quote(t.sql)}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if t.blocked_by:
                assert r.returncode != 0, (person.name, t.sql, r.stdout)
                assert f"statement blocked by rule {t.blocked_by} " in r.stderr, (person.name, t.sql, r.stderr)
                continue
            assert r.returncode == 0, (person.name, t.sql, r.stderr)
            if "id_card" in t.sql:
                clear = person.role == "dba"
                assert (CANARY.id_card in r.stdout) == clear, (person.name, r.stdout)
                assert (CANARY.mobile in r.stdout) == clear, (person.name, r.stdout)
                assert (CANARY.name in r.stdout) == clear, (person.name, r.stdout)


@pytest.mark.parametrize("protocol", sorted(CLIENTS))
def test_developer_never_sees_the_canary_in_clear(demo: tuple[dict[str, str], str], protocol: str) -> None:
    """What the demo shows off, through the real command-line clients: dev's view of customer 1 is masked."""
    env, out = demo
    if protocol not in available_protocols():
        assert f"src/sqlbastion/proxy/{protocol}/listener.py" in out
        return
    prefix, _client, flag, _denied = CLIENTS[protocol]
    [line] = [x for x in _printed_lines(out, prefix) if " dev " in f"{x} " and "dev-demo-pass" in x]
    for sql in (
        "SELECT * FROM customers WHERE id = 1",
        "SELECT c.*, a.* FROM customers c JOIN accounts a ON a.customer_id = c.id WHERE c.id = 1",
        "SELECT name, id_card, mobile, email, address FROM customers ORDER BY id LIMIT 5",
    ):
        r = subprocess.run(
            ["bash", "-c", f"{line} {flag} {shlex.quote(sql)}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, (sql, r.stderr)
        seen = r.stdout + r.stderr
        assert "1" in r.stdout  # a row came back
        for value in CANARY.sensitive_values():
            assert value not in seen, (sql, value)


def test_a_second_start_restarts_with_working_lines(demo: tuple[dict[str, str], str]) -> None:
    """Run last: `make demo` twice reuses the servers, reloads the bank, restarts the proxy, keeps passwords."""
    env, first = demo
    assert "sqlbastion is running" in first or "no protocol listener" in first
    # A small bank this time: quicker, and it shows SQLBASTION_DEMO_SCALE at work.
    small = {**env, "SQLBASTION_DEMO_SCALE": "0.05"}
    r = subprocess.run(
        ["bash", str(SCRIPT)], env=small, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo: stopped sqlbastion" in r.stdout  # the earlier proxy made way
    assert "500 customers, 1000 accounts, 3500 transactions" in r.stdout
    protocols = available_protocols()
    for protocol in protocols:
        prefix, _client, flag, _denied = CLIENTS[protocol]
        line = _printed_lines(r.stdout, prefix)[0]
        done = subprocess.run(
            ["bash", "-c", f"{line} {flag} 'SELECT 1'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert _connected(done), done.stderr
