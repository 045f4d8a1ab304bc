"""Configuration: the example validates, every mistake names the file, the key and the fix."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest

from sqlbastion import config
from sqlbastion.config import ConfigError, Settings, load, loads
from sqlbastion.settings_schema import SecretRef, SecretUnavailable, describe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"

MINIMAL = """
[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:3307"
host = "127.0.0.1"
port = 3306
user = "svc"
password = "env:CORE_PW"
"""


def test_example_config_validates() -> None:
    settings = load(EXAMPLE)
    assert [b.name for b in settings.backends] == ["core", "ledger"]
    assert settings.backend("ledger").tls.mode == "verify-full"
    assert settings.audit.sinks[0].type == "sqlite"


def _leaf_keys(cls: type, prefix: str = "") -> set[str]:
    """Every settings key path a dataclass accepts (lists of tables use the element's keys)."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        target = inner[0]
        if typing.get_origin(target) is list and dataclasses.is_dataclass(typing.get_args(target)[0]):
            keys |= _leaf_keys(typing.get_args(target)[0], f"{path}.")
        elif dataclasses.is_dataclass(target) and target is not SecretRef:
            keys |= _leaf_keys(typing.cast(type, target), f"{path}.")
        else:
            keys.add(path)
    return keys


def _present_keys(data: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict) and k not in ("keys",):
                keys |= _present_keys(v, f"{path}.")
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for x in v:
                    keys |= _present_keys(x, f"{path}.")
            else:
                keys.add(path)
    return keys


def test_example_config_documents_every_key() -> None:
    present = _present_keys(tomllib.loads(EXAMPLE.read_text()))
    missing = _leaf_keys(Settings) - present
    assert not missing, f"config.example.toml does not show: {sorted(missing)}"


def test_typo_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(MINIMAL + "\n[server]\nhandshake_timeout = 5\n")
    with pytest.raises(ConfigError) as info:
        load(p)
    text = str(info.value)
    assert str(p) in text
    assert "server.handshake_timeout" in text
    assert "unknown key" in text
    assert "handshake_timeout_s" in text  # the message lists the keys that are known


def test_typo_in_array_of_tables_names_index() -> None:
    with pytest.raises(ConfigError, match=r"backends\[0\]\.prot: unknown key"):
        loads(MINIMAL.replace('protocol = "mysql"', 'protocol = "mysql"\nprot = 1'), source="x.toml")


@pytest.mark.parametrize(
    ("replacement", "key", "expected"),
    [
        ('port = "3306"', "backends[0].port", "expected an integer"),
        ('protocol = "oracle"', "backends[0].protocol", "'mysql' or 'postgres'"),
        ("port = true", "backends[0].port", "expected an integer"),
    ],
)
def test_wrong_types_are_named(replacement: str, key: str, expected: str) -> None:
    field = replacement.split(" = ", maxsplit=1)[0]
    lines = [replacement if line.startswith(field + " ") else line for line in MINIMAL.splitlines()]
    with pytest.raises(ConfigError) as info:
        loads("\n".join(lines), source="c.toml")
    assert key in str(info.value)
    assert expected in str(info.value)


def test_missing_required_key() -> None:
    text = "\n".join(line for line in MINIMAL.splitlines() if not line.startswith("host"))
    with pytest.raises(ConfigError, match=r"c\.toml: backends\[0\]\.host: required key is missing"):
        loads(text, source="c.toml")


def test_literal_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        loads(MINIMAL.replace("env:CORE_PW", "hunter2-literal"), source="c.toml")
    assert "backends[0].password" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_secret_resolution_and_no_leak(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORE_PW", "s3cret-value")
    settings = loads(MINIMAL)
    pw = settings.backends[0].password
    assert pw is not None
    assert pw.reveal() == "s3cret-value"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(describe(settings))
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    assert SecretRef(f"file:{secret_file}").reveal() == "from-file"
    monkeypatch.delenv("CORE_PW")
    with pytest.raises(SecretUnavailable, match="CORE_PW"):
        pw.reveal()


def test_duplicate_listen_and_names_are_refused() -> None:
    twice = MINIMAL + MINIMAL.replace('name = "core"', 'name = "other"')
    with pytest.raises(ConfigError, match=r"listen address 127\.0\.0\.1:3307 is used twice"):
        loads(twice)
    with pytest.raises(ConfigError, match="backend name 'core' is used twice"):
        loads(MINIMAL + MINIMAL.replace("3307", "3308"))


def test_admin_beyond_loopback_needs_token() -> None:
    with pytest.raises(ConfigError, match=r"admin\.token is required"):
        loads(MINIMAL + '\n[admin]\nlisten = "0.0.0.0:9187"\n')
    loads(MINIMAL + '\n[admin]\nlisten = "0.0.0.0:9187"\ntoken = "env:T"\n')


def test_require_tls_needs_certificate() -> None:
    with pytest.raises(ConfigError, match="require_tls needs a \\[tls\\] section"):
        loads(MINIMAL + "require_tls = true\n")


def test_sink_needs_its_keys() -> None:
    with pytest.raises(ConfigError, match=r"audit\.sinks\[0\]\.address: a syslog sink needs address"):
        loads(MINIMAL + '\n[[audit.sinks]]\ntype = "syslog"\n')


def test_invalid_toml_is_reported() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        loads("[server\n", source="c.toml")


def test_listen_parsing() -> None:
    assert config.parse_listen("[::1]:5432") == ("::1", 5432)
    with pytest.raises(ValueError, match="HOST:PORT"):
        config.parse_listen("localhost")
    with pytest.raises(ValueError, match="out of range"):
        config.parse_listen("127.0.0.1:70000")
