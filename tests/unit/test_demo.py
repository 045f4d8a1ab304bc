"""The demo's configuration template, its rendering and the printed connection lines."""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

import pytest

from sqlbastion.config import load, loads
from sqlbastion.devtools.demo import (
    PERSONS,
    TEMPLATE,
    DemoPorts,
    available_protocols,
    connection_lines,
    main,
    render_config,
)

ROOT = Path(__file__).resolve().parents[2]
PORTS = DemoPorts(mariadb=41001, postgres=41002, mysql_listen=41003, postgres_listen=41004, admin=41005)


def test_template_is_a_valid_configuration() -> None:
    settings = load(TEMPLATE)
    assert [(b.name, b.protocol, b.database) for b in settings.backends] == [
        ("core", "mysql", "bank"),
        ("ledger", "postgres", "bank"),
    ]
    assert all(b.password is not None and str(b.password).startswith("env:") for b in settings.backends)
    assert settings.admin.listen.startswith("127.0.0.1:")
    assert all(b.listen.startswith("127.0.0.1:") and b.host == "127.0.0.1" for b in settings.backends)
    assert settings.tls is not None
    assert all(b.require_tls for b in settings.backends)  # persons must use TLS


@pytest.mark.parametrize("protocols", [("mysql", "postgres"), ("mysql",), ("postgres",), ()])
def test_rendered_configuration_is_valid_and_has_the_real_ports(protocols: tuple[str, ...]) -> None:
    policy = ROOT / "examples" / "policy.toml"
    text = render_config(TEMPLATE.read_text(encoding="utf-8"), ports=PORTS, policy_file=policy, protocols=protocols)
    settings = loads(text, source="/tmp/demo/sqlbastion.toml")
    assert tuple(b.protocol for b in settings.backends) == protocols
    assert settings.admin.listen == "127.0.0.1:41005"
    assert settings.policy.files == [str(policy)]
    for b in settings.backends:
        if b.protocol == "mysql":
            assert (b.listen, b.port) == ("127.0.0.1:41003", 41001)
        else:
            assert (b.listen, b.port) == ("127.0.0.1:41004", 41002)
    # A dropped backend takes its leading comment with it; a kept one keeps it.
    assert ("# MariaDB with the sample bank" in text) == ("mysql" in protocols)
    assert ("# PostgreSQL with the same bank" in text) == ("postgres" in protocols)


def test_rendering_without_a_policy_file() -> None:
    text = render_config(TEMPLATE.read_text(encoding="utf-8"), ports=PORTS, policy_file=None)
    assert loads(text).policy.files == []


def test_rendering_refuses_a_template_that_lost_a_marker() -> None:
    template = TEMPLATE.read_text(encoding="utf-8").replace("port = 3306\n", "port = 3316\n")
    with pytest.raises(ValueError, match="port = 3306"):
        render_config(template, ports=PORTS, policy_file=None)


def test_connection_lines_are_exact_shell_commands() -> None:
    dev = next(p for p in PERSONS if p.name == "dev")
    lines = connection_lines(dev, mysql_port=3307, postgres_port=6433)
    assert lines == [
        "mysql --ssl --protocol=TCP -h 127.0.0.1 -P 3307 -u dev -pdev-demo-pass bank",
        "PGPASSWORD=dev-demo-pass PGSSLMODE=require psql -h 127.0.0.1 -p 6433 -U dev bank",
    ]
    assert connection_lines(dev, mysql_port=None, postgres_port=6433) == lines[1:]
    for line in lines:
        assert shlex.split(line)[-1] == "bank"


def test_demo_persons_match_the_shared_contract() -> None:
    assert [(p.name, p.role) for p in PERSONS] == [
        ("dba", "dba"),
        ("dev", "developer"),
        ("analyst", "analyst"),
        ("auditor", "auditor"),
    ]
    assert all(len(p.password) >= 8 for p in PERSONS)  # `sqlbastion user add` refuses shorter ones


def test_available_protocols_follow_the_listener_modules() -> None:
    found = available_protocols()
    for protocol in ("mysql", "postgres"):
        present = (ROOT / "src" / "sqlbastion" / "proxy" / protocol / "listener.py").exists()
        assert (protocol in found) == present


def test_status_and_stop_on_an_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sqlbastion: not running" in out
    assert "servers: not started" in out
    assert main(["stop", "--dir", str(tmp_path)]) == 0


def test_demo_script_help_and_bad_action() -> None:
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--help"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0
    assert "scripts/demo.sh stop" in r.stdout
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "explode"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2
    assert "unknown action" in r.stderr


def test_a_taken_port_is_replaced_by_a_free_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlbastion.devtools.demo import _pick

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        monkeypatch.setenv("SQLBASTION_DEMO_TEST_PORT", str(port))
        chosen = _pick("SQLBASTION_DEMO_TEST_PORT", 1)
        assert chosen != port
        assert 0 < chosen < 65536
    monkeypatch.setenv("SQLBASTION_DEMO_TEST_PORT", str(port))
    assert _pick("SQLBASTION_DEMO_TEST_PORT", 1) == port  # free again: the preferred port wins


def test_a_port_variable_that_is_not_a_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlbastion.devtools.demo import _pick

    for bad in ("abc", "0", "70000", "-1", ""):
        monkeypatch.setenv("SQLBASTION_DEMO_TEST_PORT", bad)
        with pytest.raises(RuntimeError, match="SQLBASTION_DEMO_TEST_PORT"):
            _pick("SQLBASTION_DEMO_TEST_PORT", 1)


def test_rendering_points_the_tls_key_at_the_demo_directory(tmp_path: Path) -> None:
    text = render_config(TEMPLATE.read_text(encoding="utf-8"), ports=PORTS, policy_file=None, directory=tmp_path)
    settings = loads(text, source=str(tmp_path / "sqlbastion.toml"))
    assert settings.tls is not None
    assert str(settings.tls.key_file) == f"file:{tmp_path / 'certs' / 'sqlbastion.key'}"
    assert settings.resolve_path(settings.tls.cert_file) == tmp_path / "certs" / "sqlbastion.crt"


def test_demo_certificate_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    import ssl

    from sqlbastion.devtools.demo import _certificate

    _certificate(tmp_path)
    cert, key = tmp_path / "certs" / "sqlbastion.crt", tmp_path / "certs" / "sqlbastion.key"
    assert key.stat().st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)  # a usable pair
    before = cert.read_bytes()
    _certificate(tmp_path)
    assert cert.read_bytes() == before


def test_template_passes_config_validate_with_the_example_policy(capsys: pytest.CaptureFixture[str]) -> None:
    from sqlbastion.cli import main as cli

    assert cli(["config", "validate", str(TEMPLATE)]) == 0
    assert ": ok (2 backend(s)" in capsys.readouterr().out


def test_only_a_running_sqlbastion_serve_is_ever_signalled(tmp_path: Path) -> None:
    import os

    from sqlbastion.devtools.demo import _our_proxy

    pid_file = tmp_path / "sqlbastion.pid"
    assert _our_proxy(pid_file) is None  # no file
    for junk in ("", "abc", "-1", "99999999"):
        pid_file.write_text(junk)
        assert _our_proxy(pid_file) is None, junk
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but pytest is not `sqlbastion serve`
    assert _our_proxy(pid_file) is None
