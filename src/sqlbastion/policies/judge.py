"""Facts + person + policy → Decision: rules, grants, duties, masking guards, custom rules.

Pure: no cache, no clock except what the context carries. Every check adds
``RuleHit``s; the decision is the strictest hit's action (no hit: allow).
Action per hit comes from the rule's default and the person's roles'
overrides — with several roles the most permissive wins, as grants are a
union too. Unprovable statements take the roles' ``unprovable`` mode
(block / review / audit_only) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlbastion.policies.analyze import Analysis
from sqlbastion.policies.facts import ObjectPath, StatementFacts
from sqlbastion.policies.model import (
    STRICTNESS,
    UNPROVABLE_MODE_ACTIONS,
    Action,
    ColumnRef,
    CustomRule,
    Decision,
    OutputColumn,
    PersonPolicy,
    PolicySet,
    RolePolicy,
    RuleHit,
    StatementContext,
)
from sqlbastion.policies.patterns import covers
from sqlbastion.policies.rules import (
    FEATURE_RULES,
    FILE_RELATIONS,
    NON_RELAXABLE,
    OTHER_SESSION_RELATIONS,
    PLANNER_STATS_RELATIONS,
    PRIVILEGED_RELATIONS,
    RULES,
    SYSTEM_SCHEMAS,
    UNPROVABLE_IDS,
    UNPROVABLE_RULES,
)

if TYPE_CHECKING:
    from sqlbastion.masking.policy import MaskingPolicy

METADATA_SCHEMAS = frozenset({"pg_catalog", "information_schema"})
_INFORMATIONAL = frozenset({"user_variable", "data_copy", "temporary_table", "cursor"})


class _Hits:
    def __init__(self, judge: Judge, roles: list[RolePolicy]) -> None:
        self.judge = judge
        self.roles = roles
        self.items: list[RuleHit] = []

    def add(self, rule_id: str, why: str) -> None:
        # One hit per rule: the first reason found is the one people read.
        for h in self.items:
            if h.rule_id == rule_id:
                return
        custom = self.judge.custom.get(rule_id)
        if custom is not None:
            title, severity, default = custom.title, custom.severity, custom.action
        else:
            rule = RULES[rule_id]
            title, severity, default = rule.title, rule.severity, rule.action
        action = self.judge.action_for(rule_id, default, self.roles)
        self.items.append(RuleHit(rule_id=rule_id, title=title, severity=severity, action=action, why=why))


class Judge:
    def __init__(self, policy: PolicySet, masking: MaskingPolicy | None) -> None:
        self.policy = policy
        self.masking = masking
        self.roles = {r.name: r for r in policy.roles}
        self.custom = {r.id: r for r in policy.rules}

    def action_for(self, rule_id: str, default: Action, roles: list[RolePolicy]) -> Action:
        if not roles or rule_id in NON_RELAXABLE:
            return default
        if rule_id in UNPROVABLE_IDS:
            return min((UNPROVABLE_MODE_ACTIONS[r.unprovable] for r in roles), key=STRICTNESS.__getitem__)
        return min((r.override(rule_id) or default for r in roles), key=STRICTNESS.__getitem__)

    # -- the decision -------------------------------------------------------------

    def decide(self, analysis: Analysis, person: PersonPolicy, ctx: StatementContext) -> Decision:
        roles = [self.roles[n] for n in person.roles if n in self.roles]
        role_names = tuple(r.name for r in roles)
        hits = _Hits(self, roles)
        restricted = self.masking is not None and self.masking.restricted(role_names)
        sensitive: set[ColumnRef] = set()
        if analysis.unprovable is not None:
            code, why = analysis.unprovable
            hits.add(UNPROVABLE_RULES.get(code, "SB-UNPROVABLE-TYPE"), why)
        uses_data = any("use" in r.duties for r in roles)
        for f in analysis.statements:
            if f.unprovable is not None:
                code, why = f.unprovable
                hits.add(UNPROVABLE_RULES.get(code, "SB-UNPROVABLE-TYPE"), why)
                continue
            if f.needs and not uses_data:
                hits.add("SB-DUTY", f"none of the roles {', '.join(role_names) or '(none)'} has the 'use' duty")
            self._features(f, hits, restricted)
            self._relations(f, hits)
            if f.kind in ("update", "delete"):
                if not f.has_where:
                    hits.add("HR-DML-NO-WHERE", f"{f.kind.upper()} without WHERE changes every row")
                elif f.where_tautology:
                    hits.add("HR-DML-TAUTOLOGY", f"the WHERE clause of this {f.kind.upper()} is always true")
            self._grants(f, roles, ctx, hits)
            if restricted and self.masking is not None:
                self._masking(f, role_names, ctx, hits, sensitive)
            if f.unknown_functions and not any(h.rule_id == "SB-UNPROVABLE-FUNCTION" for h in hits.items):
                hits.add(
                    "SB-UNKNOWN-FUNCTION", f"calls {', '.join(sorted(f.unknown_functions))}(), unknown to the analyser"
                )
            self._custom(f, person, ctx, hits)
        return self._decision(
            analysis=analysis, person=person, roles=roles, ctx=ctx, hits=hits.items, sensitive=sensitive
        )

    def _features(self, f: StatementFacts, hits: _Hits, restricted: bool) -> None:
        for name, why in f.features:
            if name in _INFORMATIONAL:
                continue
            if name == "diagnostics":
                if restricted:
                    hits.add("MASK-SIDE-CHANNEL", why)
                continue
            if name == "lexer_change":
                hits.add("SB-UNPROVABLE-LEXER", why)
                continue
            rule = FEATURE_RULES.get(name)
            if rule is not None:
                hits.add(rule.id, why)

    def _relations(self, f: StatementFacts, hits: _Hits) -> None:
        for path in f.reads | f.writes:
            if len(path) < 2:
                continue
            key = (path[-2].lower(), path[-1].lower())
            if key in PLANNER_STATS_RELATIONS:
                hits.add("HR-PLANNER-STATS", f"reads {'.'.join(key)}, which holds sampled column values")
            elif key in OTHER_SESSION_RELATIONS:
                hits.add("HR-OTHER-SESSIONS", f"reads {'.'.join(key)}, which shows other sessions")
            elif key in FILE_RELATIONS:
                hits.add("HR-FILE-ACCESS", f"reads {'.'.join(key)} (large objects)")
            elif key in PRIVILEGED_RELATIONS:
                hits.add("HR-SYSTEM-TABLES", f"reads {'.'.join(key)}")

    # -- grants ---------------------------------------------------------------------

    def _covered(
        self, roles: list[RolePolicy], action: str, backend: str, path: ObjectPath, fold: bool, *, partial: bool = False
    ) -> bool:
        for r in roles:
            for g in r.grants:
                if action not in g.actions:
                    continue
                for pat in g.objects:
                    if covers(pat, backend, path, fold=fold):
                        return True
                    if (
                        partial
                        and len(pat.parts) > len(path)
                        and covers(
                            pat.__class__(text=pat.text, backend=pat.backend, parts=pat.parts[: len(path)]),
                            backend,
                            path,
                            fold=fold,
                        )
                    ):
                        return True
        return False

    def _grants(self, f: StatementFacts, roles: list[RolePolicy], ctx: StatementContext, hits: _Hits) -> None:
        fold = ctx.dialect == "mysql"
        backend = ctx.backend
        missing: list[str] = []
        by_table: dict[ObjectPath, list[ColumnRef]] = {}
        for c in f.columns_read:
            by_table.setdefault(_table_path(c, ctx), []).append(c)
        for needed, object_path in sorted(f.needs):
            action, path = needed, object_path
            schema = path[-2].lower() if len(path) >= 2 else ""
            if action == "select" and schema in METADATA_SCHEMAS:
                continue
            if action in ("insert", "update", "delete", "ddl") and schema in SYSTEM_SCHEMAS:
                action, path = "admin", ()
            if action == "select":
                if self._covered(roles, "select", backend, path, fold):
                    continue
                cols = by_table.get(path, [])
                if cols and self._covered(roles, "select", backend, path, fold, partial=True):
                    denied = [
                        c for c in cols if not self._covered(roles, "select", backend, _column_path(c, ctx), fold)
                    ]
                    if not denied:
                        continue
                    missing.extend(
                        f"select on column {'.'.join(_column_path(c, ctx))}" for c in sorted(denied, key=str)
                    )
                    continue
                if not cols and self._covered(roles, "select", backend, path, fold, partial=True):
                    continue
                missing.append(f"select on {'.'.join(path)}")
                continue
            if not self._covered(roles, action, backend, path, fold):
                missing.append(f"{action} on {'.'.join(path) if path else backend}")
        if missing:
            shown = "; ".join(missing[:3]) + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
            hits.add("SB-GRANT-DENIED", f"not granted: {shown}")

    # -- masking guards ---------------------------------------------------------------

    def _masking(
        self, f: StatementFacts, roles: tuple[str, ...], ctx: StatementContext, hits: _Hits, sensitive: set[ColumnRef]
    ) -> None:
        assert self.masking is not None  # only called when masking is configured
        m = self.masking
        backend = ctx.backend
        cache: dict[ColumnRef, str] = {}

        def kind(c: ColumnRef) -> str:
            k = cache.get(c)
            if k is None:
                k = m.treatment(roles, backend, c).kind if c.column != "*" else "clear"
                cache[c] = k
            return k

        unknown = [
            p
            for p in f.unknown_objects
            if p in f.reads and (p[-2].lower() if len(p) >= 2 else "") not in SYSTEM_SCHEMAS
        ]
        if unknown:
            hits.add("MASK-UNPROVABLE", f"the catalog does not know {', '.join('.'.join(p) for p in sorted(unknown))}")
        read_restricted = [c for c in f.columns_read if kind(c) != "clear"]
        sensitive.update(read_restricted)
        # An output or filter of unproven origin is a risk in any statement that reads
        # tables (it might be a masked column the resolver could not place).
        reads_tables = any((p[-2].lower() if len(p) >= 2 else "") not in SYSTEM_SCHEMAS for p in f.reads)
        risky = bool(read_restricted or unknown or reads_tables)
        for o in f.outputs:
            self._output(o, kind, risky, hits, sensitive)
            if f.kind in ("copy_to", "declare_cursor") and (
                any(kind(c) != "clear" for c in o.sources) or (o.opaque and risky)
            ):
                what = "COPY output" if f.kind == "copy_to" else "rows fetched from a cursor"
                hits.add("MASK-UNPROVABLE", f"{what} cannot be masked ({o.name})")
        for p in f.predicates:
            if p.column.table == "?":
                if risky:
                    hits.add("MASK-INFERENCE", f"a {p.clause} expression of unproven origin")
                continue
            k = kind(p.column)
            if k == "clear":
                continue
            sensitive.add(p.column)
            if (
                k == "mask"
                and p.lookup
                and p.clause in ("where", "join", "having")
                and m.treatment(roles, backend, p.column).lookup_allowed
            ):
                continue
            hits.add("MASK-INFERENCE", f"{p.clause} on masked column {p.column}")
        for c in f.copies:
            if kind(c) != "clear":
                sensitive.add(c)
                hits.add("MASK-COPY", f"copies masked column {c}")
        for c in f.unknown_function_columns:
            if kind(c) != "clear":
                hits.add(
                    "SB-UNPROVABLE-FUNCTION", f"{', '.join(sorted(f.unknown_functions))}() applied to masked column {c}"
                )

    def _output(
        self, o: OutputColumn, kind: Callable[[ColumnRef], str], risky: bool, hits: _Hits, sensitive: set[ColumnRef]
    ) -> None:
        if o.opaque and risky:
            hits.add("MASK-UNPROVABLE", f"the origin of result column {o.name!r} cannot be proven")
        restricted = [(c, kind(c)) for c in o.sources if kind(c) != "clear"]
        if not restricted:
            return
        sensitive.update(c for c, _ in restricted)
        denied = [c for c, t in restricted if t == "deny"]
        if denied:
            hits.add("MASK-DENY", f"result column {o.name!r} reads {denied[0]}, which this role may not see")
        elif not o.direct or o.whole_row_of:
            hits.add("MASK-TRANSFORM", f"result column {o.name!r} is computed from masked column {restricted[0][0]}")

    # -- custom rules -------------------------------------------------------------------

    def _custom(self, f: StatementFacts, person: PersonPolicy, ctx: StatementContext, hits: _Hits) -> None:
        fold = ctx.dialect == "mysql"
        for rule in self.policy.rules:
            if _matches(rule, f, person, ctx, fold):
                hits.add(rule.id, rule.title)

    # -- assembling ---------------------------------------------------------------------

    def _decision(
        self,
        *,
        analysis: Analysis,
        person: PersonPolicy,
        roles: list[RolePolicy],
        ctx: StatementContext,
        hits: list[RuleHit],
        sensitive: set[ColumnRef],
    ) -> Decision:
        action = max((h.action for h in hits), key=STRICTNESS.__getitem__, default=Action.ALLOW)
        primary = max(hits, key=lambda h: STRICTNESS[h.action]) if hits else None
        reads: set[str] = set()
        writes: set[str] = set()
        cols: set[ColumnRef] = set()
        effects: list[tuple[str, str]] = []
        outputs: list[tuple[OutputColumn, ...]] = []
        for f in analysis.statements:
            reads.update(".".join(p) for p in f.reads)
            writes.update(".".join(p) for p in f.writes)
            cols.update(c for c in f.columns_read if c.column != "*")
            effects.extend(f.effects)
            if f.produces_rows:
                outputs.append(f.outputs)
        exporter = self._covered(roles, "export", ctx.backend, (), ctx.dialect == "mysql", partial=True)
        return Decision(
            action=action,
            rule_hits=tuple(hits),
            reason=primary.why if primary is not None else "allowed",
            statement_types=tuple(f.kind for f in analysis.statements),
            objects_read=tuple(sorted(reads)),
            objects_written=tuple(sorted(writes)),
            columns_read=tuple(sorted(cols, key=str)),
            output_columns=tuple(outputs),
            sensitive_columns=tuple(sorted(sensitive, key=str)),
            max_rows=None if exporter else person.max_rows,
            session_effects=tuple(effects),
        )


def _table_path(c: ColumnRef, ctx: StatementContext) -> ObjectPath:
    if ctx.dialect == "mysql":
        return (c.schema or "", c.table)
    return (c.database or "", c.schema or "", c.table)


def _column_path(c: ColumnRef, ctx: StatementContext) -> ObjectPath:
    return (*_table_path(c, ctx), c.column)


def _matches(rule: CustomRule, f: StatementFacts, person: PersonPolicy, ctx: StatementContext, fold: bool) -> bool:
    m = rule.match
    if m.persons and person.name not in m.persons:
        return False
    if m.roles and not (set(person.roles) & m.roles):
        return False
    if m.statement_types and not any(f.kind == t or f.kind.startswith(t + "_") for t in m.statement_types):
        return False
    if m.tables and not any(covers(p, ctx.backend, path, fold=fold) for p in m.tables for path in f.reads | f.writes):
        return False
    if m.writes and not any(covers(p, ctx.backend, path, fold=fold) for p in m.writes for path in f.writes):
        return False
    if m.columns:
        columns = set(f.columns_read)
        for o in f.outputs:
            columns |= o.sources
        if not any(covers(p, ctx.backend, _column_path(c, ctx), fold=fold) for p in m.columns for c in columns):
            return False
    if m.functions and not (m.functions & f.functions):
        return False
    if m.has_where is not None and f.has_where != m.has_where:
        return False
    if m.where_tautology is not None and f.where_tautology != m.where_tautology:
        return False
    return not (m.has_limit is not None and (f.limit is not None) != m.has_limit)
