"""Policy files (TOML) → PolicySet, validated at load.

Each file is one TOML document with ``[[persons]]``, ``[[roles]]``,
``[[rules]]`` and ``[[classifications]]`` (the last, and each role's ``masks``
and ``lookups``, belong to masking: ``masking.policy.parse_masking_policy``
reads them). Unknown keys are errors; every error names the file, the key path
and what was expected (``ConfigError``). The policy version is a hash of the
files' contents, so every audit event can name the exact policy in force.

``duty_warnings`` reports duty-separation problems (管/用/审: admin / use /
audit) for ``sqlbastion config validate``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlbastion.config import ConfigError
from sqlbastion.policies.model import (
    GRANT_ACTIONS,
    Action,
    CustomRule,
    Grant,
    PersonPolicy,
    PolicySet,
    RolePolicy,
    RuleMatch,
    TimeWindow,
)
from sqlbastion.policies.patterns import parse_pattern
from sqlbastion.policies.rules import NON_RELAXABLE, RULES
from sqlbastion.settings_schema import build

MAX_POLICY_BYTES = 8 << 20
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# -- document shapes (what the TOML may hold) ---------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _WindowDoc:
    days: str = "mon-sun"
    start: str = "00:00"
    end: str = "24:00"
    tz: str = "UTC"


@dataclass(frozen=True, kw_only=True, slots=True)
class _PersonDoc:
    name: str
    roles: list[str]
    networks: list[str] = field(default_factory=list)
    time_windows: list[_WindowDoc] = field(default_factory=list)
    expires: str | None = None
    max_sessions: int | None = None
    max_rows: int | None = None
    disabled: bool = False
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class _GrantDoc:
    actions: list[str]
    objects: list[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class _RoleDoc:
    name: str
    duties: list[str] = field(default_factory=lambda: ["use"])
    grants: list[_GrantDoc] = field(default_factory=list)
    masks: dict[str, Any] = field(default_factory=dict)  # masking's
    lookups: list[str] = field(default_factory=list)  # masking's
    unprovable: str = "block"
    rule_overrides: dict[str, str] = field(default_factory=dict)
    all_duties: bool = False  # explicit consent to one role holding admin + use + audit
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class _MatchDoc:
    statement_types: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    has_where: bool | None = None
    where_tautology: bool | None = None
    has_limit: bool | None = None
    roles: list[str] = field(default_factory=list)
    persons: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class _RuleDoc:
    id: str
    title: str
    severity: str = "medium"
    action: str = "block"
    match: _MatchDoc = field(default_factory=_MatchDoc)
    description: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class _PolicyDoc:
    persons: list[_PersonDoc] = field(default_factory=list)
    roles: list[_RoleDoc] = field(default_factory=list)
    rules: list[_RuleDoc] = field(default_factory=list)
    classifications: list[Any] = field(default_factory=list)  # masking's
    description: str = ""


# -- conversion -----------------------------------------------------------------


def _action(value: str, file: str, key: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise ConfigError(file, key, f"expected one of block, review, alert, allow; got {value!r}") from None


def _minutes(text: str, file: str, key: str) -> int:
    hh, sep, mm = text.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ConfigError(file, key, f"expected HH:MM, got {text!r}")
    value = int(hh) * 60 + int(mm)
    if int(mm) > 59 or value > 24 * 60:
        raise ConfigError(file, key, f"expected a time between 00:00 and 24:00, got {text!r}")
    return value


def _days(text: str, file: str, key: str) -> frozenset[int]:
    out: set[int] = set()
    for chunk in text.lower().replace(" ", "").split(","):
        lo, dash, hi = chunk.partition("-")
        if lo not in DAYS or (dash and hi not in DAYS):
            raise ConfigError(file, key, f"expected days like 'mon-fri' or 'mon,wed,sat', got {text!r}")
        a, b = DAYS.index(lo), DAYS.index(hi) if dash else DAYS.index(lo)
        i = a
        while True:
            out.add(i)
            if i == b:
                break
            i = (i + 1) % 7
    return frozenset(out)


def _window(w: _WindowDoc, file: str, key: str) -> TimeWindow:
    try:
        ZoneInfo(w.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            file, f"{key}.tz", f"unknown time zone {w.tz!r} (use an IANA name like Asia/Shanghai)"
        ) from None
    start, end = _minutes(w.start, file, f"{key}.start"), _minutes(w.end, file, f"{key}.end")
    if start == end:
        raise ConfigError(file, key, "start and end are equal: the window would be empty")
    return TimeWindow(
        days=_days(w.days, file, f"{key}.days"),
        start_minute=start,
        end_minute=end,
        tz=w.tz,
        text=f"{w.days} {w.start}-{w.end} {w.tz}",
    )


def _person(i: int, p: _PersonDoc, file: str) -> PersonPolicy:
    key = f"persons[{i}]"
    if not p.name:
        raise ConfigError(file, f"{key}.name", "a person needs a name")
    for j, net in enumerate(p.networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                file, f"{key}.networks[{j}]", f"expected a CIDR network like 10.0.0.0/8, got {net!r}"
            ) from None
    expires = None
    if p.expires is not None:
        try:
            expires = datetime.fromisoformat(p.expires)
        except ValueError:
            raise ConfigError(file, f"{key}.expires", f"expected an ISO 8601 time, got {p.expires!r}") from None
        if expires.tzinfo is None:
            raise ConfigError(file, f"{key}.expires", "give a time zone offset, e.g. 2027-12-31T00:00:00+08:00")
    for name in ("max_sessions", "max_rows"):
        v = getattr(p, name)
        if v is not None and v <= 0:
            raise ConfigError(file, f"{key}.{name}", "expected a positive integer")
    return PersonPolicy(
        name=p.name,
        roles=tuple(p.roles),
        networks=tuple(p.networks),
        time_windows=tuple(_window(w, file, f"{key}.time_windows[{j}]") for j, w in enumerate(p.time_windows)),
        expires=expires,
        max_sessions=p.max_sessions,
        max_rows=p.max_rows,
        disabled=p.disabled,
    )


def _role(i: int, r: _RoleDoc, file: str, custom_ids: set[str]) -> RolePolicy:
    key = f"roles[{i}]"
    for j, d in enumerate(r.duties):
        if d not in ("admin", "use", "audit"):
            raise ConfigError(file, f"{key}.duties[{j}]", f"expected admin, use or audit; got {d!r}")
    grants: list[Grant] = []
    for j, g in enumerate(r.grants):
        for k, a in enumerate(g.actions):
            if a not in GRANT_ACTIONS and a != "all":
                raise ConfigError(
                    file,
                    f"{key}.grants[{j}].actions[{k}]",
                    f"expected one of {', '.join(GRANT_ACTIONS)} or all; got {a!r}",
                )
        actions = frozenset(GRANT_ACTIONS) if "all" in g.actions else frozenset(g.actions)
        if not g.objects:
            raise ConfigError(file, f"{key}.grants[{j}].objects", "a grant needs at least one object")
        patterns = tuple(
            parse_pattern(o, file=file, key=f"{key}.grants[{j}].objects[{k}]") for k, o in enumerate(g.objects)
        )
        grants.append(Grant(actions=actions, objects=patterns))
    if r.unprovable not in ("block", "review", "audit_only"):
        raise ConfigError(file, f"{key}.unprovable", f"expected block, review or audit_only; got {r.unprovable!r}")
    overrides: list[tuple[str, Action]] = []
    for rule_id, value in r.rule_overrides.items():
        if rule_id not in RULES and rule_id not in custom_ids:
            raise ConfigError(file, f"{key}.rule_overrides.{rule_id}", "no such rule (see docs/policy.md for the ids)")
        if rule_id in NON_RELAXABLE:
            raise ConfigError(
                file,
                f"{key}.rule_overrides.{rule_id}",
                "this rule keeps the analyser's lexer right and cannot be overridden",
            )
        overrides.append((rule_id, _action(value, file, f"{key}.rule_overrides.{rule_id}")))
    return RolePolicy(
        name=r.name,
        duties=frozenset(r.duties),
        grants=tuple(grants),
        unprovable=r.unprovable,  # type: ignore[arg-type]  # checked against the Literal's values just above
        rule_overrides=tuple(overrides),
    )


def _rule(i: int, r: _RuleDoc, file: str) -> CustomRule:
    key = f"rules[{i}]"
    if r.id in RULES:
        raise ConfigError(file, f"{key}.id", f"{r.id} is a built-in rule id; override it per role instead")
    if not r.id or not r.id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(file, f"{key}.id", "expected letters, digits, '-' or '_'")
    if r.severity not in ("low", "medium", "high", "critical"):
        raise ConfigError(file, f"{key}.severity", f"expected low, medium, high or critical; got {r.severity!r}")
    m = r.match
    match = RuleMatch(
        statement_types=frozenset(s.lower() for s in m.statement_types),
        tables=tuple(parse_pattern(t, file=file, key=f"{key}.match.tables[{j}]") for j, t in enumerate(m.tables)),
        writes=tuple(parse_pattern(t, file=file, key=f"{key}.match.writes[{j}]") for j, t in enumerate(m.writes)),
        columns=tuple(parse_pattern(c, file=file, key=f"{key}.match.columns[{j}]") for j, c in enumerate(m.columns)),
        functions=frozenset(f.lower() for f in m.functions),
        has_where=m.has_where,
        where_tautology=m.where_tautology,
        has_limit=m.has_limit,
        roles=frozenset(m.roles),
        persons=frozenset(m.persons),
    )
    if match == RuleMatch():
        raise ConfigError(
            file, f"{key}.match", "a custom rule needs at least one match key (it would match everything)"
        )
    return CustomRule(
        id=r.id,
        title=r.title,
        severity=r.severity,  # type: ignore[arg-type]  # checked against the Literal's values just above
        action=_action(r.action, file, f"{key}.action"),
        match=match,
        file=file,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedPolicy:
    policy: PolicySet
    documents: tuple[tuple[str, dict[str, Any]], ...]  # (file, parsed TOML), for masking


def read_document(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the policy file: {exc.strerror}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise ConfigError(str(path), "", f"the policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        return raw, tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None


def parse_documents(docs: list[tuple[str, bytes, dict[str, Any]]]) -> LoadedPolicy:
    """Build one PolicySet from several parsed documents (file name, raw bytes, TOML). Raises ConfigError."""
    parsed = [(file, build(_PolicyDoc, data, file=file)) for file, _, data in docs]
    custom_ids: set[str] = set()
    rules: list[CustomRule] = []
    for file, doc in parsed:
        for i, r in enumerate(doc.rules):
            rule = _rule(i, r, file)
            if rule.id in custom_ids:
                raise ConfigError(file, f"rules[{i}].id", f"rule id {rule.id} is defined twice")
            custom_ids.add(rule.id)
            rules.append(rule)
    roles: dict[str, RolePolicy] = {}
    consent: set[str] = set()
    for file, doc in parsed:
        for i, role_doc in enumerate(doc.roles):
            if role_doc.name in roles:
                raise ConfigError(file, f"roles[{i}].name", f"role {role_doc.name!r} is defined twice")
            roles[role_doc.name] = _role(i, role_doc, file, custom_ids)
            if role_doc.all_duties:
                consent.add(role_doc.name)
    persons: dict[str, PersonPolicy] = {}
    for file, doc in parsed:
        for i, p in enumerate(doc.persons):
            if p.name in persons:
                raise ConfigError(file, f"persons[{i}].name", f"person {p.name!r} is defined twice")
            person = _person(i, p, file)
            for j, role in enumerate(person.roles):
                if role not in roles:
                    raise ConfigError(file, f"persons[{i}].roles[{j}]", f"no role {role!r} is defined")
            persons[p.name] = person
    for rule in rules:
        for role in rule.match.roles:
            if role not in roles:
                raise ConfigError(rule.file, f"rules.{rule.id}.match.roles", f"no role {role!r} is defined")
    h = hashlib.sha256()
    for _file, raw, _ in docs:
        h.update(len(raw).to_bytes(8, "big"))
        h.update(raw)
    policy = PolicySet(
        persons=tuple(persons.values()),
        roles=tuple(roles.values()),
        rules=tuple(rules),
        version=h.hexdigest()[:16] if docs else "empty",
        files=tuple(f for f, _, _ in docs),
        all_duty_roles=frozenset(consent),
    )
    return LoadedPolicy(policy=policy, documents=tuple((f, d) for f, _, d in docs))


def load_policy_files(paths: list[Path]) -> LoadedPolicy:
    docs = []
    for p in paths:
        raw, data = read_document(p)
        docs.append((str(p), raw, data))
    return parse_documents(docs)


def loads_policy(text: str, *, file: str = "<policy>") -> LoadedPolicy:
    """One policy document from text (tests and tools)."""
    raw = text.encode("utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None
    return parse_documents([(file, raw, data)])


def duty_warnings(policy: PolicySet) -> list[str]:
    """Duty separation (管/用/审): no role, and no person, should hold admin + use + audit."""
    consent = policy.all_duty_roles
    out: list[str] = []
    everything = {"admin", "use", "audit"}
    for role in policy.roles:
        if everything <= role.duties and role.name not in consent:
            out.append(
                f"role {role.name!r} holds admin, use and audit duties; split them, or set all_duties = true to "
                "record that this is intended"
            )
    for person in policy.persons:
        duties: set[str] = set()
        for name in person.roles:
            held = policy.role(name)
            if held is not None:
                duties |= held.duties
        single = [r for r in person.roles if r in consent]
        if everything <= duties and not single:
            out.append(
                f"person {person.name!r} holds admin, use and audit duties through roles {', '.join(person.roles)}"
            )
    return out
