# ruff: noqa: E501  # one policy snippet per case reads better than wrapped TOML
"""Policy files: validation errors name the file, the key path and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlbastion.config import ConfigError
from sqlbastion.policies.loader import duty_warnings, load_policy_files, loads_policy
from sqlbastion.policies.model import Action
from tests.unit.policies.support import EXAMPLE_POLICY

BASE = """
[[roles]]
name = "r"
grants = [{ actions = ["select"], objects = ["core:bank.*"] }]
"""


def test_example_policy_loads() -> None:
    loaded = load_policy_files([EXAMPLE_POLICY])
    p = loaded.policy
    assert {x.name for x in p.persons} == {"dba", "dev", "analyst", "auditor"}
    assert {x.name for x in p.roles} == {"dba", "developer", "analyst", "auditor"}
    assert len(p.version) == 16
    assert duty_warnings(p) == []
    dba = p.role("dba")
    assert dba is not None
    assert dba.override("HR-DDL-DROP") is Action.REVIEW


def test_version_is_a_hash_of_the_contents(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text(BASE)
    v1 = load_policy_files([a]).policy.version
    a.write_text(BASE + "\n# a comment changes the version\n")
    v2 = load_policy_files([a]).policy.version
    assert v1 != v2
    assert load_policy_files([a]).policy.version == v2


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[[persons]]\nname = 'a'\nroles = ['missing']\n" + BASE, "persons[0].roles[0]", "no role"),
        (
            "[[persons]]\nname = 'a'\nroles = ['r']\nnetworks = ['10.0.0.300/8']\n" + BASE,
            "persons[0].networks[0]",
            "CIDR",
        ),
        ("[[persons]]\nname = 'a'\nroles = ['r']\nexpires = 'tomorrow'\n" + BASE, "persons[0].expires", "ISO 8601"),
        (
            "[[persons]]\nname = 'a'\nroles = ['r']\nexpires = '2027-01-01T00:00:00'\n" + BASE,
            "persons[0].expires",
            "time zone",
        ),
        (
            "[[persons]]\nname = 'a'\nroles = ['r']\ntime_windows = [{ days = 'mon-fri', start = '9', end = '18:00' }]\n"
            + BASE,
            "persons[0].time_windows[0].start",
            "HH:MM",
        ),
        (
            "[[persons]]\nname = 'a'\nroles = ['r']\ntime_windows = [{ days = 'weekdays' }]\n" + BASE,
            "persons[0].time_windows[0].days",
            "mon-fri",
        ),
        (
            "[[persons]]\nname = 'a'\nroles = ['r']\ntime_windows = [{ tz = 'Mars/Olympus' }]\n" + BASE,
            "persons[0].time_windows[0].tz",
            "time zone",
        ),
        ("[[persons]]\nname = 'a'\nroles = ['r']\nmax_rows = 0\n" + BASE, "persons[0].max_rows", "positive"),
        ("[[persons]]\nname = 'a'\nroles = ['r']\ncolour = 'blue'\n" + BASE, "persons[0].colour", "unknown key"),
        ("[[roles]]\nname = 'r'\nduties = ['rule']\n", "roles[0].duties[0]", "admin, use or audit"),
        (
            "[[roles]]\nname = 'r'\ngrants = [{ actions = ['read'], objects = ['core:*'] }]\n",
            "roles[0].grants[0].actions[0]",
            "select",
        ),
        (
            "[[roles]]\nname = 'r'\ngrants = [{ actions = ['select'], objects = ['bank.*'] }]\n",
            "roles[0].grants[0].objects[0]",
            "backend:",
        ),
        (
            "[[roles]]\nname = 'r'\ngrants = [{ actions = ['select'], objects = ['core:a.{b'] }]\n",
            "roles[0].grants[0].objects[0]",
            "braces",
        ),
        (
            "[[roles]]\nname = 'r'\ngrants = [{ actions = ['select'], objects = [] }]\n",
            "roles[0].grants[0].objects",
            "at least one",
        ),
        ("[[roles]]\nname = 'r'\nunprovable = 'ignore'\n", "roles[0].unprovable", "audit_only"),
        (
            "[[roles]]\nname = 'r'\nrule_overrides = { 'NO-SUCH' = 'allow' }\n",
            "roles[0].rule_overrides.NO-SUCH",
            "no such rule",
        ),
        (
            "[[roles]]\nname = 'r'\nrule_overrides = { 'HR-DDL-DROP' = 'maybe' }\n",
            "roles[0].rule_overrides.HR-DDL-DROP",
            "block, review",
        ),
        (
            "[[roles]]\nname = 'r'\nrule_overrides = { 'SB-UNPROVABLE-CHARSET' = 'allow' }\n",
            "roles[0].rule_overrides.SB-UNPROVABLE-CHARSET",
            "cannot be overridden",
        ),
        (BASE + BASE, "roles[1].name", "twice"),
        ("[[rules]]\nid = 'HR-DDL-DROP'\ntitle = 't'\nmatch = { has_where = false }\n", "rules[0].id", "built-in"),
        ("[[rules]]\nid = 'X'\ntitle = 't'\n", "rules[0].match", "at least one match key"),
        (
            "[[rules]]\nid = 'X'\ntitle = 't'\nseverity = 'huge'\nmatch = { has_where = false }\n",
            "rules[0].severity",
            "critical",
        ),
        (
            "[[rules]]\nid = 'X'\ntitle = 't'\naction = 'deny'\nmatch = { has_where = false }\n",
            "rules[0].action",
            "block, review",
        ),
        (
            "[[rules]]\nid = 'X'\ntitle = 't'\nmatch = { tables = ['nobackend'] }\n",
            "rules[0].match.tables[0]",
            "backend:",
        ),
        ("[[rules]]\nid = 'X'\ntitle = 't'\nmatch = { regex = '.*' }\n", "rules[0].match.regex", "unknown key"),
        ("[[rules]]\nid = 'X'\ntitle = 't'\nmatch = { roles = ['ghost'] }\n", "rules.X.match.roles", "no role"),
        ("persons = 3\n", "persons", "array"),
        ("nonsense = true\n", "nonsense", "unknown key"),
    ],
)
def test_errors_name_the_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_policy(text, file="p.toml")
    err = info.value
    assert err.file == "p.toml"
    assert err.key == key, str(err)
    assert words in err.problem, str(err)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy_files([tmp_path / "absent.toml"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[[roles]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy_files([bad])


def test_several_files_merge_and_conflict(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text(BASE)
    b.write_text("[[persons]]\nname = 'p'\nroles = ['r']\n")
    merged = load_policy_files([a, b]).policy
    assert merged.person("p") is not None
    assert merged.role("r") is not None
    b.write_text(BASE)
    with pytest.raises(ConfigError) as info:
        load_policy_files([a, b])
    assert info.value.file == str(b)


def test_duty_separation_warnings() -> None:
    text = """
[[roles]]
name = "god"
duties = ["admin", "use", "audit"]

[[roles]]
name = "ops"
duties = ["admin", "use"]

[[roles]]
name = "aud"
duties = ["audit"]

[[roles]]
name = "blessed"
duties = ["admin", "use", "audit"]
all_duties = true

[[persons]]
name = "x"
roles = ["ops", "aud"]

[[persons]]
name = "y"
roles = ["blessed"]
"""
    warnings = duty_warnings(loads_policy(text).policy)
    assert any("role 'god'" in w for w in warnings)
    assert any("person 'x'" in w for w in warnings)
    assert not any("blessed" in w or "person 'y'" in w for w in warnings)


def test_all_actions_and_braces() -> None:
    p = loads_policy(
        "[[roles]]\nname = 'r'\ngrants = [{ actions = ['all'], objects = ['core:bank.{a,b}.{x,y}'] }]\n"
    ).policy
    role = p.role("r")
    assert role is not None
    [grant] = role.grants
    assert "export" in grant.actions
    assert "admin" in grant.actions
    assert grant.objects[0].parts == (("bank",), ("a", "b"), ("x", "y"))
