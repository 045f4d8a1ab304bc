"""KILL, process-list and session-tracking guards, and the registry that scopes KILL to a person."""

from __future__ import annotations

import pytest

from sqlbastion.proxy.mysql.guards import (
    KILL_OTHERS,
    PROCESS_LIST,
    SESSION_TRACK,
    KillRequest,
    OwnProcessList,
    check_statement,
)
from sqlbastion.proxy.mysql.registry import SessionRegistry


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("KILL 5", KillRequest(modifier="", target=5)),
        ("kill query 12;", KillRequest(modifier="QUERY ", target=12)),
        ("KILL HARD CONNECTION 3", KillRequest(modifier="HARD CONNECTION ", target=3)),
        ("KILL USER sqlbastion", KILL_OTHERS),
        ("KILL QUERY ID 9", KILL_OTHERS),
        ("KILL 5; KILL 6", KILL_OTHERS),
        ("SELECT 1; KILL 6", KILL_OTHERS),
        ("/*!KILL 5*/", KILL_OTHERS),
        ("/*M!100000 KILL 5 */", KILL_OTHERS),
        ("KILL /* c */ 5", KILL_OTHERS),
        ("SELECT 'a\\'; KILL 5; -- '", KILL_OTHERS),
        ("KILL @id", KILL_OTHERS),
        ("SELECT 'kill bill' AS film", None),
        ("SELECT skills FROM t", None),
        ("SHOW FULL PROCESSLIST", OwnProcessList(full=True)),
        ("show processlist;", OwnProcessList(full=False)),
        ("SHOW /* x */ PROCESSLIST", PROCESS_LIST),
        ("SHOW PROCESSLIST; SELECT 1", PROCESS_LIST),
        ("select * from information_schema.`PROCESSLIST`", PROCESS_LIST),
        ("SELECT * FROM performance_schema.threads", PROCESS_LIST),
        ("SELECT * FROM information_schema.INNODB_TRX", PROCESS_LIST),
        ("show /**/ engine innodb status", PROCESS_LIST),
        ("CREATE TABLE x (a INT) ENGINE=InnoDB", None),
        ("SET SESSION session_track_system_variables = ''", SESSION_TRACK),
        ("SET @@session_track_schema = 0", SESSION_TRACK),
        ("SELECT 1", None),
    ],
)
def test_check_statement(sql: str, expected: object) -> None:
    assert check_statement(sql) == expected


def test_kill_statement_rewrite() -> None:
    assert KillRequest(modifier="QUERY ", target=3).statement(77) == "KILL QUERY 77"


def test_registry_scopes_kill_to_the_person() -> None:
    reg = SessionRegistry()
    a1, a2, b1 = reg.next_proxy_id(), reg.next_proxy_id(), reg.next_proxy_id()
    reg.register(person="alice", proxy_id=a1, backend="core", backend_id=500)
    reg.register(person="alice", proxy_id=a2, backend="core", backend_id=501)
    reg.register(person="bob", proxy_id=b1, backend="core", backend_id=a2)  # ids may collide across the two spaces
    assert reg.resolve_kill("alice", "core", a2) == 501  # the client-facing id wins for the person's own
    assert reg.resolve_kill("alice", "core", 500) == 500  # or a backend id of the person's own session
    assert reg.resolve_kill("alice", "core", b1) is None
    assert reg.resolve_kill("bob", "core", 500) is None
    assert reg.resolve_kill("alice", "other", a1) is None
    assert reg.own_ids("alice", "core") == sorted([a1, a2])
    reg.unregister(a1)
    assert reg.resolve_kill("alice", "core", a1) is None


def test_process_view_test_covers_every_view() -> None:
    from sqlbastion.proxy.mysql.guards import _PROCESS_VIEWS, _names_process_view

    for view in _PROCESS_VIEWS:
        assert _names_process_view(f"select * from information_schema.{view} x")
    assert not _names_process_view("select c from sbtest1 where id=1")
