"""Hot reload: atomic swap, an invalid policy is refused and the old one stays, audit event per attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqlbastion.app import build_engine, policy_reloader, validate_policy
from sqlbastion.config import ConfigError, loads
from sqlbastion.policies.store import PolicyStore
from sqlbastion.proxy.session import PassThroughEngine, Runtime
from tests.unit.policies.support import EXAMPLE_POLICY, context

POLICY_V1 = """
[[persons]]
name = "dev"
roles = ["developer"]

[[roles]]
name = "developer"
grants = [{ actions = ["select"], objects = ["core:bank.*"] }]
"""
POLICY_V2 = POLICY_V1.replace('["select"]', '["select", "delete"]')


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


def settings_for(tmp_path: Path, policy: str) -> tuple[Path, object]:
    pfile = tmp_path / "policy.toml"
    pfile.write_text(policy)
    cfg = tmp_path / "sqlbastion.toml"
    cfg.write_text(
        f'[policy]\nfiles = ["{pfile.name}"]\n'
        '[[backends]]\nname = "core"\nprotocol = "mysql"\nlisten = "127.0.0.1:13999"\nhost = "127.0.0.1"\n'
        'port = 3306\nuser = "svc"\ndatabase = "bank"\n'
    )
    return pfile, loads(cfg.read_text(), source=str(cfg))


def test_reload_swaps_atomically_and_keeps_the_old_policy_on_errors(tmp_path: Path) -> None:
    pfile, settings = settings_for(tmp_path, POLICY_V1)
    audit = Recorder()
    store = PolicyStore(settings, audit=audit)  # type: ignore[arg-type]  # Settings from loads()
    ctx = context("dev")
    delete = "DELETE FROM accounts WHERE id = 1"
    v1 = store.version
    assert store.decide(delete, ctx).rule_ids == ("SB-GRANT-DENIED",)

    pfile.write_text(POLICY_V2)
    ok, version = store.reload()
    assert ok
    assert version == store.version != v1
    assert store.decide(delete, ctx).allowed
    assert store.decide(delete, ctx).policy_version == version

    pfile.write_text(POLICY_V2 + "\n[[persons]]\nname = 'x'\nroles = ['ghost']\n")
    ok, message = store.reload()
    assert not ok
    assert "ghost" in message
    assert store.version == version
    assert store.decide(delete, ctx).allowed

    pfile.write_text("this is [not toml")
    ok, message = store.reload()
    assert not ok
    assert "TOML" in message
    assert store.version == version

    kinds = [(e["kind"], e["result"]) for e in audit.events]
    assert kinds == [("policy_reloaded", "ok"), ("policy_reloaded", "rejected"), ("policy_reloaded", "rejected")]
    assert audit.events[0]["version"] == version
    assert audit.events[0]["new_version"] == version
    assert audit.events[0]["old_version"] == v1
    assert "ghost" in str(audit.events[1]["message"])
    assert audit.events[1]["version"] == version
    json.dumps(audit.events)


def test_app_composition(tmp_path: Path) -> None:
    _, settings = settings_for(tmp_path, POLICY_V1)
    engine = build_engine(settings)  # type: ignore[arg-type]  # Settings from loads()
    assert isinstance(engine, PolicyStore)
    reload = policy_reloader(Runtime(engine=engine))
    assert reload is not None
    assert reload()[0]
    assert policy_reloader(Runtime(engine=PassThroughEngine())) is None
    assert validate_policy(settings) == []  # type: ignore[arg-type]  # Settings from loads()


def test_validate_reports_errors_and_warnings(tmp_path: Path) -> None:
    _, settings = settings_for(tmp_path, POLICY_V1 + "\n[[roles]]\nname = 'all'\nduties = ['admin', 'use', 'audit']\n")
    warnings = validate_policy(settings)  # type: ignore[arg-type]  # Settings from loads()
    assert any("'all'" in w for w in warnings)
    _, bad = settings_for(tmp_path, "[[roles]]\nname = 'r'\nduties = ['x']\n")
    with pytest.raises(ConfigError, match=r"roles\[0\]\.duties\[0\]"):
        validate_policy(bad)  # type: ignore[arg-type]  # Settings from loads()


def test_grants_naming_unknown_backends_warn(tmp_path: Path) -> None:
    _, settings = settings_for(tmp_path, EXAMPLE_POLICY.read_text())
    warnings = validate_policy(settings)  # type: ignore[arg-type]  # Settings from loads()
    assert any("ledger" in w for w in warnings)


def test_max_sessions(tmp_path: Path) -> None:
    _, settings = settings_for(
        tmp_path, POLICY_V1.replace('roles = ["developer"]', 'roles = ["developer"]\nmax_sessions = 2', 1)
    )
    store = PolicyStore(settings)  # type: ignore[arg-type]  # Settings from loads()
    assert store.admit("dev", "127.0.0.1", "core") is None
    store.session_opened("dev")
    store.session_opened("dev")
    assert store.admit("dev", "127.0.0.1", "core") == "max_sessions"
    store.session_closed("dev")
    assert store.admit("dev", "127.0.0.1", "core") is None
    assert store.sessions_of("dev") == 1
    store.session_closed("dev")
    store.session_closed("dev")
    assert store.sessions_of("dev") == 0
    assert store.admit("nobody", "127.0.0.1", "core") == "unknown_person"


def test_reload_event_fits_the_audit_schema(tmp_path: Path) -> None:
    from sqlbastion.audit.events import EventBuilder

    pfile, settings = settings_for(tmp_path, POLICY_V1)
    audit = Recorder()
    store = PolicyStore(settings, audit=audit)  # type: ignore[arg-type]  # Settings from loads()
    pfile.write_text(POLICY_V2)
    assert store.reload()[0]
    record = EventBuilder().build_record(audit.events[0], 1, "e1")
    assert record["kind"] == "policy_reloaded"
    assert record["policy_version"] == store.version
    assert record["details"]["result"] == "ok"
    assert record["details"]["new_version"] == store.version
