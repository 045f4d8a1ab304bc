"""The sqlbastion command: help everywhere, config validate, user add/list, documented exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sqlbastion import cli

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
users_file = "users.toml"

[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:3307"
host = "127.0.0.1"
port = 3306
user = "svc"
password = "env:CORE_PW"
"""


def run(argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli.main(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve"],
        ["check"],
        ["config"],
        ["config", "validate"],
        ["user"],
        ["user", "add"],
        ["user", "passwd"],
        ["user", "list"],
        ["version"],
    ],
)
def test_every_subcommand_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--help"])
    assert info.value.code == 0
    assert "usage: sqlbastion" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.startswith("sqlbastion ")


def test_config_validate_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "validate", str(ROOT / "config.example.toml")]) == 0
    assert ": ok" in capsys.readouterr().out


def test_config_validate_typo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "typo.toml"
    p.write_text(CONFIG.replace("users_file", "user_file"))
    assert cli.main(["config", "validate", str(p)]) == 1
    err = capsys.readouterr().err
    assert str(p) in err
    assert "user_file: unknown key" in err


def test_config_without_policy_files_fails_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing to check against: `config validate` (and `serve`, through the same check) refuse it."""
    p = tmp_path / "c.toml"
    p.write_text(CONFIG)
    assert cli.main(["config", "validate", str(p)]) == 1
    err = capsys.readouterr().err
    assert "policy.files: no policy files" in err
    assert "allow_unchecked" in err


def test_config_without_policy_files_allowed_unchecked_only_when_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "c.toml"
    p.write_text(CONFIG + "\n[policy]\nallow_unchecked = true\n")
    assert cli.main(["config", "validate", str(p)]) == 0
    captured = capsys.readouterr()
    assert "allowed unchecked" in captured.out + captured.err


def test_serve_without_policy_files_does_not_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlbastion.app import build_engine
    from sqlbastion.config import ConfigError, load

    p = tmp_path / "c.toml"
    p.write_text(CONFIG)
    with pytest.raises(ConfigError, match=r"policy\.files"):
        build_engine(load(p))


def test_config_validate_show_keeps_secrets_as_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORE_PW", "very-secret-backend-pw")
    p = tmp_path / "c.toml"
    p.write_text(CONFIG + "\n[policy]\nallow_unchecked = true\n")
    assert cli.main(["config", "validate", "--show", str(p)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["backends"][0]["password"] == "env:CORE_PW"
    assert "very-secret" not in out


def test_user_add_list_passwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    users = tmp_path / "users.toml"
    assert run(["user", "add", "alice", "-c", str(cfg), "--password-stdin"], "first-password\n", monkeypatch) == 0
    assert users.exists()
    assert "first-password" not in users.read_text()
    # Adding twice is refused; passwd changes the verifiers.
    assert run(["user", "add", "alice", "-c", str(cfg), "--password-stdin"], "again-password\n", monkeypatch) == 1
    before = users.read_text()
    assert run(["user", "passwd", "alice", "-c", str(cfg), "--password-stdin"], "second-password\n", monkeypatch) == 0
    assert users.read_text() != before
    assert run(["user", "passwd", "nobody", "-c", str(cfg), "--password-stdin"], "second-password\n", monkeypatch) == 1
    assert (
        run(
            ["user", "add", "bob", "-c", str(cfg), "--password-stdin", "--method", "scram_sha_256"],
            "bob-password\n",
            monkeypatch,
        )
        == 0
    )
    capsys.readouterr()
    assert cli.main(["user", "list", "-c", str(cfg), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in listed] == ["alice", "bob"]
    assert listed[1]["methods"] == ["scram_sha_256", "pbkdf2"]


def test_short_password_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = tmp_path / "u.toml"
    assert run(["user", "add", "x", "--users-file", str(users), "--password-stdin"], "short\n", monkeypatch) == 1
    assert not users.exists()


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "sqlbastion"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0
    assert "serve" in r.stdout
