"""Which columns are sensitive, and what each role sees of them.

Strategy: a policy file classifies columns (``[[classifications]]``: object
patterns, a ``type`` and a ``level`` 1-5 following JR/T 0197-2020) and each role
says per type or per level what it sees (``masks``) and which masked columns it
may still look up by equality (``lookups``). ``MaskingPolicy.treatment`` turns
that into one ``Treatment`` per (roles, backend, column):

* an unclassified column is ``clear``;
* a role's rule for the column's type wins over its rule for the column's level,
  which wins over its ``default``; a role with none of them gets the strongest
  mask (``spec.STRONGEST``);
* with several roles, the most permissive treatment applies (grants are a union
  too): clear, then masks by how much they disclose, then deny.

Object patterns are ``backend:database.table.column`` for MySQL and
``backend:database.schema.table.column`` for PostgreSQL (a three-part pattern
on PostgreSQL reads ``schema.table.column``; see ``column_paths``). Each part may hold
``*`` wildcards and ``{a,b}`` alternatives. Matching ignores case: MySQL table
names may be case-sensitive on the server, but a pattern that matches more
columns only masks more, which is the safe direction.

When several classifications match one column, the highest level wins, then
the most specific pattern (fewest wildcards), then the first written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlbastion.masking.spec import DISCLOSURE, STRONGEST, MaskSpec, SpecError, spec_from_value
from sqlbastion.policies.model import ColumnRef
from sqlbastion.settings_schema import ConfigError

__all__ = [
    "Classification",
    "MaskingPolicy",
    "ObjectPattern",
    "RoleMasks",
    "Treatment",
    "column_path",
    "column_paths",
    "merge_masking_policies",
    "parse_masking_policy",
]

MAX_CLASSIFICATIONS = 100_000
MAX_TREATMENT_CACHE = 65_536
LEVELS = range(1, 6)
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_LEVEL_KEY = re.compile(r"level_([1-5])\Z")


@dataclass(frozen=True, kw_only=True, slots=True)
class Classification:
    """A column's sensitivity: its data type (``id_card``, ``mobile``…) and level 1-5."""

    type: str
    level: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Treatment:
    """What a set of roles sees of one column."""

    kind: Literal["clear", "mask", "deny"]
    function: str | None = None  # canonical masking function (spec.MaskSpec.canonical) when kind == "mask"
    lookup_allowed: bool = False  # equality lookups allowed on this column for these roles

    @property
    def disclosure(self) -> int:
        """How much this treatment reveals; higher is more permissive. deny < masks < clear."""
        if self.kind == "clear":
            return 100
        if self.kind == "deny":
            return -1
        name = (self.function or STRONGEST).partition("(")[0]
        return DISCLOSURE.get(name, 0)


CLEAR = Treatment(kind="clear", function=None, lookup_allowed=True)
STRONGEST_MASK = Treatment(kind="mask", function=STRONGEST, lookup_allowed=False)
DENY = Treatment(kind="deny", function=None, lookup_allowed=False)


Paths = tuple[tuple[str, ...], tuple[str, ...] | None]


def column_paths(column: ColumnRef) -> Paths:
    """The column's name parts, lower-cased, for three- and four-part patterns.

    Three-part patterns (MySQL ``database.table.column``) match the column's
    schema (the MySQL database the table lives in; the policy engine keeps the
    session's current database in ``database``), or its ``database`` when it
    has no schema. Four-part patterns (PostgreSQL
    ``database.schema.table.column``) match when both are known.
    """
    db = column.database.lower() if column.database else None
    schema = column.schema.lower() if column.schema else None
    table, name = column.table.lower(), column.column.lower()
    short = ((schema or db or ""), table, name)
    return short, ((db, schema, table, name) if db and schema else None)


def column_path(column: ColumnRef) -> tuple[str, ...]:
    """The three-part path (see ``column_paths``)."""
    return column_paths(column)[0]


MAX_EXPANSION = 1024


def _expand_braces(part: str) -> list[str]:
    """``a{b,c}d`` → ``abd``, ``acd``; raises ValueError past ``MAX_EXPANSION`` alternatives."""
    m = re.search(r"\{([^{}]*)\}", part)
    if m is None:
        return [part]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(_expand_braces(part[: m.start()] + alt.strip() + part[m.end() :]))
        if len(out) > MAX_EXPANSION:
            raise ValueError(f"expands to more than {MAX_EXPANSION} patterns")
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectPattern:
    """One ``backend:a.b.c`` column pattern, compiled."""

    text: str
    backend: re.Pattern[str]
    parts: tuple[re.Pattern[str], ...]
    wildcards: int

    @classmethod
    def parse(cls, text: str, *, file: str, key: str) -> list[ObjectPattern]:
        if not isinstance(text, str) or ":" not in text:
            raise ConfigError(
                file, key, "expected 'backend:database.table.column' (MySQL) or 'backend:database.schema.table.column'"
            )
        if len(text) > 1024:
            raise ConfigError(file, key, "an object pattern must be shorter than 1024 characters")
        backend, _, rest = text.partition(":")
        raw_parts = rest.split(".")
        if len(raw_parts) not in (3, 4) or not backend or any(not p for p in raw_parts):
            raise ConfigError(
                file,
                key,
                f"{text!r}: expected 'backend:database.table.column' (MySQL) "
                "or 'backend:database.schema.table.column' (PostgreSQL)",
            )
        expanded: list[list[str]] = [[]]
        for p in raw_parts:
            try:
                alternatives = _expand_braces(p)
            except ValueError as exc:
                raise ConfigError(file, key, f"{text!r} {exc}") from None
            expanded = [[*prefix, alt] for prefix in expanded for alt in alternatives]
            if len(expanded) > MAX_EXPANSION:
                raise ConfigError(file, key, f"{text!r} expands to more than {MAX_EXPANSION} patterns")
        out = []
        for parts in expanded:
            out.append(
                cls(
                    text=text,
                    backend=_glob(backend),
                    parts=tuple(_glob(p) for p in parts),
                    wildcards=sum(p.count("*") for p in [backend, *parts]),
                )
            )
        return out

    def matches(self, backend: str, paths: Paths) -> bool:
        path = paths[0] if len(self.parts) == 3 else paths[1]
        if path is None or not self.backend.fullmatch(backend.lower()):
            return False
        return all(p.fullmatch(x) for p, x in zip(self.parts, path, strict=True))


def _glob(part: str) -> re.Pattern[str]:
    """``*`` matches any run of characters inside one name part; everything else is literal."""
    return re.compile(".*".join(re.escape(s) for s in part.lower().split("*")), re.DOTALL)


@dataclass(frozen=True, kw_only=True, slots=True)
class _ClassRule:
    patterns: tuple[ObjectPattern, ...]
    classification: Classification
    order: int
    file: str


@dataclass(frozen=True, kw_only=True, slots=True)
class RoleMasks:
    """One role's masking rules: per type, per level, a default, and its lookup patterns."""

    by_type: Mapping[str, Treatment] = field(default_factory=dict)
    by_level: Mapping[int, Treatment] = field(default_factory=dict)
    default: Treatment | None = None
    lookups: tuple[ObjectPattern, ...] = ()
    file: str = ""

    def rule_for(self, c: Classification) -> Treatment | None:
        t = self.by_type.get(c.type)
        if t is None:
            t = self.by_level.get(c.level)
        if t is None:
            t = self.default
        return t

    def lookup_allowed(self, backend: str, path: Paths) -> bool:
        return any(p.matches(backend, path) for p in self.lookups)


class MaskingPolicy:
    """Classifications and per-role masking rules; answers are cached (bounded)."""

    def __init__(self, *, classifications: Sequence[_ClassRule] = (), roles: Mapping[str, RoleMasks] | None = None):
        self._rules = tuple(classifications)
        self._roles: dict[str, RoleMasks] = dict(roles or {})
        self._class_cache: dict[tuple[str, Paths], Classification | None] = {}
        self._treat_cache: dict[tuple[tuple[str, ...], str, Paths], Treatment] = {}
        self._ref_cache: dict[tuple[tuple[str, ...], str, ColumnRef], Treatment] = {}
        self._restricted_cache: dict[tuple[str, ...], bool] = {}
        self._classes = frozenset(r.classification for r in self._rules)

    @property
    def empty(self) -> bool:
        """True when nothing is classified: every column is clear for everyone."""
        return not self._rules

    @property
    def role_names(self) -> tuple[str, ...]:
        return tuple(self._roles)

    def role(self, name: str) -> RoleMasks | None:
        return self._roles.get(name)

    def key_refs(self) -> set[str]:
        """Every ``[masking] keys`` name a rule refers to (checked against the settings at start-up)."""
        refs: set[str] = set()
        for r in self._roles.values():
            for t in [*r.by_type.values(), *r.by_level.values(), *([r.default] if r.default else [])]:
                if t.function and "key=" in t.function:
                    refs.add(t.function.split("key=", 1)[1].split(",")[0].rstrip(")"))
        return refs

    def classify(self, backend: str, column: ColumnRef) -> Classification | None:
        """The column's classification, or None when it is not sensitive."""
        if not self._rules:
            return None
        return self._classify_path(backend, column_paths(column))

    def _classify_path(self, backend: str, path: Paths) -> Classification | None:
        key = (backend, path)
        try:
            return self._class_cache[key]
        except KeyError:
            pass
        best: tuple[int, int, int] | None = None
        found: Classification | None = None
        lowered = backend.lower()
        for rule in self._rules:
            for pat in rule.patterns:
                if pat.matches(lowered, path):
                    rank = (rule.classification.level, -pat.wildcards, -rule.order)
                    if best is None or rank > best:
                        best, found = rank, rule.classification
        if len(self._class_cache) >= MAX_TREATMENT_CACHE:
            self._class_cache.clear()
        self._class_cache[key] = found
        return found

    def treatment(self, roles: tuple[str, ...], backend: str, column: ColumnRef) -> Treatment:
        """What a person holding ``roles`` sees of ``column`` on ``backend``."""
        if not self._rules:
            return CLEAR
        key = (roles, backend, column)
        cached = self._ref_cache.get(key)
        if cached is not None:
            return cached
        path = column_paths(column)
        by_path = (roles, backend, path)
        result = self._treat_cache.get(by_path)
        if result is None:
            c = self._classify_path(backend, path)
            result = CLEAR if c is None else self._treatment_for(roles, backend, path, c)
            if len(self._treat_cache) >= MAX_TREATMENT_CACHE:
                self._treat_cache.clear()
            self._treat_cache[by_path] = result
        if len(self._ref_cache) >= MAX_TREATMENT_CACHE:
            self._ref_cache.clear()
        self._ref_cache[key] = result
        return result

    def _treatment_for(self, roles: tuple[str, ...], backend: str, path: Paths, c: Classification) -> Treatment:
        best: Treatment | None = None
        lookup = False
        for name in roles:
            r = self._roles.get(name)
            t = (r.rule_for(c) if r is not None else None) or STRONGEST_MASK
            if r is not None and r.lookup_allowed(backend, path):
                lookup = True
            if best is None or _more_permissive(t, best):
                best = t
        if best is None:
            best = STRONGEST_MASK
        if best.kind == "clear":
            return CLEAR
        if best.kind == "deny":
            return DENY
        return Treatment(kind="mask", function=best.function, lookup_allowed=lookup)

    def restricted(self, roles: tuple[str, ...]) -> bool:
        """False when these roles see every classified column in clear (nothing to mask for them)."""
        cached = self._restricted_cache.get(roles)
        if cached is None:
            cached = self._restricted(roles)
            if len(self._restricted_cache) >= MAX_TREATMENT_CACHE:
                self._restricted_cache.clear()
            self._restricted_cache[roles] = cached
        return cached

    def _restricted(self, roles: tuple[str, ...]) -> bool:
        for c in self._classes:
            best: Treatment | None = None
            for name in roles:
                r = self._roles.get(name)
                t = (r.rule_for(c) if r is not None else None) or STRONGEST_MASK
                if best is None or _more_permissive(t, best):
                    best = t
            if best is None or best.kind != "clear":
                return True
        return False


def _more_permissive(a: Treatment, b: Treatment) -> bool:
    """Whether ``a`` reveals more than ``b``; ties break on the function name so the answer is stable."""
    da, db = a.disclosure, b.disclosure
    if da != db:
        return da > db
    return (a.function or "") < (b.function or "")


def _treatment_from(value: Any, *, file: str, key: str) -> Treatment:
    if value == "clear":
        return CLEAR
    if value == "deny":
        return DENY
    try:
        spec: MaskSpec = spec_from_value(value)
    except SpecError as exc:
        raise ConfigError(file, key, str(exc)) from None
    return Treatment(kind="mask", function=spec.canonical, lookup_allowed=False)


def _parse_role(i: int, role: Any, *, file: str) -> tuple[str, RoleMasks] | None:
    where = f"roles[{i}]"
    if not isinstance(role, Mapping):
        raise ConfigError(file, where, "each [[roles]] entry must be a table")
    name = role.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(file, f"{where}.name", "each role needs a name")
    masks = role.get("masks", {})
    lookups = role.get("lookups", [])
    if "masks" not in role and "lookups" not in role:
        return None
    if not isinstance(masks, Mapping):
        raise ConfigError(file, f"{where}.masks", "expected a table: { <type> or level_<1-5> or default = <function> }")
    by_type: dict[str, Treatment] = {}
    by_level: dict[int, Treatment] = {}
    default: Treatment | None = None
    for k, v in masks.items():
        key = f"{where}.masks.{k}"
        t = _treatment_from(v, file=file, key=key)
        m = _LEVEL_KEY.match(k)
        if m:
            by_level[int(m.group(1))] = t
        elif k == "default":
            default = t
        elif k.startswith("level"):
            raise ConfigError(file, key, "levels are level_1 … level_5")
        elif _TYPE_NAME.match(k):
            by_type[k] = t
        else:
            raise ConfigError(
                file, key, "a masks key is a data type (lower-case letters, digits, '_'), level_N or default"
            )
    if not isinstance(lookups, list) or not all(isinstance(x, str) for x in lookups):
        raise ConfigError(
            file, f"{where}.lookups", "expected a list of column patterns 'backend:database.table.column'"
        )
    patterns: list[ObjectPattern] = []
    for j, text in enumerate(lookups):
        patterns.extend(ObjectPattern.parse(text, file=file, key=f"{where}.lookups[{j}]"))
    return name, RoleMasks(by_type=by_type, by_level=by_level, default=default, lookups=tuple(patterns), file=file)


def _parse_classification(i: int, entry: Any, *, file: str) -> _ClassRule:
    where = f"classifications[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(file, where, "each [[classifications]] entry must be a table")
    unknown = set(entry) - {"objects", "type", "level", "description"}
    if unknown:
        raise ConfigError(file, f"{where}.{sorted(unknown)[0]}", "unknown key; expected objects, type, level")
    objects = entry.get("objects")
    if not isinstance(objects, list) or not objects or not all(isinstance(o, str) for o in objects):
        raise ConfigError(file, f"{where}.objects", "expected a non-empty list of column patterns")
    ctype = entry.get("type")
    if not isinstance(ctype, str) or not _TYPE_NAME.match(ctype):
        raise ConfigError(file, f"{where}.type", "expected a data type name such as \"id_card\" (lower-case, '_')")
    level = entry.get("level")
    if not isinstance(level, int) or isinstance(level, bool) or level not in LEVELS:
        raise ConfigError(file, f"{where}.level", "expected a level from 1 to 5 (JR/T 0197-2020)")
    patterns: list[ObjectPattern] = []
    for j, text in enumerate(objects):
        patterns.extend(ObjectPattern.parse(text, file=file, key=f"{where}.objects[{j}]"))
    return _ClassRule(
        patterns=tuple(patterns), classification=Classification(type=ctype, level=level), order=i, file=file
    )


def parse_masking_policy(data: Mapping[str, Any], *, file: str) -> MaskingPolicy:
    """Read ``classifications`` and each role's ``masks`` / ``lookups`` from one policy document.

    Other keys belong to the policy engine and are ignored here. Raises ConfigError.
    """
    raw_classes = data.get("classifications", [])
    if not isinstance(raw_classes, list):
        raise ConfigError(file, "classifications", "expected [[classifications]] tables")
    if len(raw_classes) > MAX_CLASSIFICATIONS:
        raise ConfigError(file, "classifications", f"at most {MAX_CLASSIFICATIONS} classifications")
    rules = [_parse_classification(i, e, file=file) for i, e in enumerate(raw_classes)]
    raw_roles = data.get("roles", [])
    if not isinstance(raw_roles, list):
        raise ConfigError(file, "roles", "expected [[roles]] tables")
    roles: dict[str, RoleMasks] = {}
    for i, entry in enumerate(raw_roles):
        parsed = _parse_role(i, entry, file=file)
        if parsed is None:
            continue
        name, masks = parsed
        if name in roles:
            raise ConfigError(file, f"roles[{i}].name", f"role {name!r} has masking rules twice in this file")
        roles[name] = masks
    return MaskingPolicy(classifications=rules, roles=roles)


def _merge_roles(name: str, a: RoleMasks, b: RoleMasks) -> RoleMasks:
    def merged(x: Mapping[Any, Treatment], y: Mapping[Any, Treatment], what: str) -> dict[Any, Treatment]:
        out = dict(x)
        for k, t in y.items():
            if k in out and out[k] != t:
                raise ConfigError(
                    b.file,
                    f"roles.{name}.masks.{what}{k}",
                    f"role {name!r} already has a different rule for {what}{k} in {a.file}",
                )
            out[k] = t
        return out

    if a.default is not None and b.default is not None and a.default != b.default:
        raise ConfigError(b.file, f"roles.{name}.masks.default", f"role {name!r} already has a default in {a.file}")
    return RoleMasks(
        by_type=merged(a.by_type, b.by_type, ""),
        by_level=merged(a.by_level, b.by_level, "level_"),
        default=a.default or b.default,
        lookups=a.lookups + b.lookups,
        file=a.file,
    )


def merge_masking_policies(policies: Sequence[MaskingPolicy]) -> MaskingPolicy:
    """One policy from several files: classifications in file order; a role's rules united.

    Two files giving one role different rules for the same type or level is a
    ConfigError (naming the second file), not a silent choice.
    """
    rules: list[_ClassRule] = []
    roles: dict[str, RoleMasks] = {}
    for p in policies:
        for r in p._rules:
            rules.append(
                _ClassRule(patterns=r.patterns, classification=r.classification, order=len(rules), file=r.file)
            )
        for name, masks in p._roles.items():
            roles[name] = _merge_roles(name, roles[name], masks) if name in roles else masks
    return MaskingPolicy(classifications=rules, roles=roles)
