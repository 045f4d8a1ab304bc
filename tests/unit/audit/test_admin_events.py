"""admin_action events: users-file comparison by name only, the actor's description, the event shape."""

from __future__ import annotations

from pathlib import Path

from sqlbastion.audit.admin_events import AdminActor, admin_action_event, users_changes, users_digest
from sqlbastion.audit.events import EventBuilder
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.users import UsersFile, make_credentials


def _users(tmp_path: Path, **passwords: str) -> UsersFile:
    users = UsersFile(path=tmp_path / "users.toml")
    for name, pw in passwords.items():
        users.persons[name] = make_credentials(name, pw)
    return users


def test_changes_name_persons_added_removed_and_changed(tmp_path: Path) -> None:
    before = _users(tmp_path, alice="a", carol="c", erin="e")
    after = UsersFile(path=before.path, persons=dict(before.persons))
    del after.persons["carol"]
    after.persons["bob"] = make_credentials("bob", "b")
    after.persons["alice"] = make_credentials("alice", "a2")
    changes = users_changes(users_digest(before), users_digest(after))
    assert changes == {"added": ["bob"], "removed": ["carol"], "verifier_changed": ["alice"]}
    assert users_changes(users_digest(after), users_digest(after)) == {
        "added": [],
        "removed": [],
        "verifier_changed": [],
    }


def test_disabling_a_person_is_a_change(tmp_path: Path) -> None:
    from dataclasses import replace

    before = _users(tmp_path, alice="a")
    after = UsersFile(path=before.path, persons={"alice": replace(before.persons["alice"], disabled=True)})
    assert users_changes(users_digest(before), users_digest(after))["verifier_changed"] == ["alice"]


def test_the_digest_holds_no_verifier(tmp_path: Path) -> None:
    users = _users(tmp_path, alice="a-secret-password")
    digest = users_digest(users)
    creds = users.persons["alice"]
    for value in (creds.mysql_native, creds.caching_sha2, creds.scram_sha_256, creds.pbkdf2):
        if value:
            assert value not in repr(digest)
    assert "a-secret-password" not in repr(digest)


def test_admin_action_events_keep_action_target_result_actor_in_details() -> None:
    actor = AdminActor(via="admin_endpoint", address="127.0.0.1:50123", bearer_token=True)
    raw = admin_action_event(action="reload", target="policy", result="ok", actor=actor, details={"added": ["x"]})
    built = EventBuilder().build_record(raw, 1_700_000_000_000_000_000, str(raw["event_id"]))
    assert built["kind"] == "admin_action"
    assert built["client_address"] == "127.0.0.1:50123"
    d = built["details"]
    assert (d["action"], d["target"], d["result"]) == ("reload", "policy", "ok")
    assert d["actor"] == "127.0.0.1:50123 (bearer token)"
    assert d["via"] == "admin_endpoint"
    assert d["bearer_token"] is True
    assert d["added"] == ["x"]
    assert AdminActor(via="sighup").describe() == "signal SIGHUP"
    assert "no token" in AdminActor(via="admin_endpoint", address="10.0.0.1:1").describe()


class _Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


def _services(tmp_path: Path, users: UsersFile) -> tuple[ProxyServices, _Recorder]:
    from sqlbastion.config import loads
    from sqlbastion.proxy.session import Runtime

    recorder = _Recorder()
    settings = loads(f'users_file = "{users.path}"\n', source=str(tmp_path / "sqlbastion.toml"))
    return ProxyServices(settings=settings, users=users, runtime=Runtime(audit=recorder)), recorder


def test_a_reload_swaps_the_users_and_an_unparsable_users_file_is_refused(tmp_path: Path) -> None:
    from sqlbastion.audit.admin_events import ADMIN_ACTOR, audited_reload, record_users_at_start

    users = _users(tmp_path, alice="a")
    users.save()
    services, recorder = _services(tmp_path, users)
    record = record_users_at_start(services, tmp_path / "spool")
    assert recorder.events == []  # the first start with this spool: nothing to compare with
    reload = audited_reload(services, lambda: (True, "v2"), record)

    more = UsersFile.load(users.path)
    more.persons["bob"] = make_credentials("bob", "b")
    more.save()
    token = ADMIN_ACTOR.set(AdminActor(via="admin_endpoint", address="127.0.0.1:4000", bearer_token=True))
    try:
        assert reload() == (True, "v2")
    finally:
        ADMIN_ACTOR.reset(token)
    assert set(services.users.persons) == {"alice", "bob"}
    changed, done = recorder.events
    assert changed["action"] == "users_changed"
    assert changed["details"]["added"] == ["bob"]  # type: ignore[index]  # a details dict
    assert done["action"] == "reload"
    assert done["result"] == "ok"
    assert done["client_address"] == "127.0.0.1:4000"

    recorder.events.clear()
    users.path.write_text("[persons.carol\nbroken", encoding="utf-8")
    ok, message = reload()  # no actor in context: the SIGHUP handler
    assert not ok
    assert "users file not reloaded" in message
    assert set(services.users.persons) == {"alice", "bob"}  # the persons in force stay
    (event,) = recorder.events
    assert event["action"] == "reload"
    assert event["result"] == "rejected"
    assert event["details"]["users_result"] == "rejected"  # type: ignore[index]  # a details dict
    assert event["details"]["via"] == "sighup"  # type: ignore[index]  # a details dict


def test_changes_made_while_stopped_are_found_at_the_next_start(tmp_path: Path) -> None:
    from sqlbastion.audit.admin_events import DIGEST_FILE, record_users_at_start

    users = _users(tmp_path, alice="a", bob="b")
    services, _ = _services(tmp_path, users)
    record_users_at_start(services, tmp_path / "spool")
    digest = tmp_path / "spool" / DIGEST_FILE
    assert digest.stat().st_mode & 0o777 == 0o600
    assert "alice" in digest.read_text()
    del users.persons["bob"]
    services2, recorder2 = _services(tmp_path, users)
    record_users_at_start(services2, tmp_path / "spool")
    (event,) = recorder2.events
    assert event["details"]["removed"] == ["bob"]  # type: ignore[index]  # a details dict
    assert event["details"]["via"] == "start"  # type: ignore[index]  # a details dict
