"""admin_action events: users-file comparison by name only, the actor's description, the event shape."""

from __future__ import annotations

from pathlib import Path

from sqlbastion.audit.admin_events import AdminActor, admin_action_event, users_changes, users_digest
from sqlbastion.audit.events import EventBuilder
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
