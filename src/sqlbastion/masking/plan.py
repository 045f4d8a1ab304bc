"""From a result's columns, the statement's lineage and the masking policy to a ``MaskPlan``.

Strategy: for each result column two independent answers are computed and the
stricter one is used (DESIGN.md decision 5):

* lineage — the ``OutputColumn`` the policy engine traced from the SQL: a value
  that is a source column unchanged (``direct``) gets that column's treatment;
  an expression over a masked column gets the full mask (or the role's NULL);
  a whole-row value over a masked column gets the full mask; an ``opaque``
  value (sources not provable) gets the full mask;
* protocol metadata — the source table and column the server reports (MySQL
  ColumnDefinition41 ``org_table``/``org_name``, PostgreSQL RowDescription
  table OID and attribute number resolved by the proxy), classified directly.

A ``deny`` on any column refuses the whole result. So does a result whose
column count no lineage describes, and a result-producing statement without
lineage when its decision touched sensitive columns: a position that cannot be
tied to its sources cannot be proven clear.

Everything per row is precomputed here: each masker is a converter built once
per (function, wire type, format, encoding), wrapped with a cheap shared tally
for the ``sqlbastion_masked_values_total`` metric, and cached; plans hold no
per-result state, so they are cached too. The policy and the caches derived
from it live in one ``_PolicyState`` swapped by a single assignment on reload,
so a plan is never cached against a policy other than the one it was built from.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlbastion.config import ConfigError, Settings
from sqlbastion.masking.functions import AsciiOp, MaskFunction, MissingKey, build_function
from sqlbastion.masking.policy import (
    CLEAR,
    DENY,
    MaskingPolicy,
    Treatment,
    merge_masking_policies,
    parse_masking_policy,
)
from sqlbastion.masking.rows import TALLY_FLUSH, register_masker
from sqlbastion.masking.spec import STRONGEST
from sqlbastion.masking.wire import Converter, ascii_fast_op, build_converter, python_encoding
from sqlbastion.observability.metrics import METRICS
from sqlbastion.policies.model import ColumnRef, Decision, OutputColumn, StatementContext
from sqlbastion.proxy.session import EMPTY_MASK_PLAN, ColumnMasker, MaskPlan, ResultColumn
from sqlbastion.settings_schema import SecretRef, SecretUnavailable

__all__ = ["TALLY_FLUSH", "MaskingPlanner", "load_masking_policy", "planner_from_settings", "refusal_text"]

FULL = Treatment(kind="mask", function=STRONGEST, lookup_allowed=False)
MAX_CONVERTERS = 4096
MIN_KEY_BYTES = 16
MAX_PLANS = 4096
MAX_PLAN_COLUMNS = 256  # wider results are planned every time rather than cached

# Statement kinds (``StatementFacts.kind`` from the policy engine) whose results
# describe the server rather than table data. Without lineage their columns are
# checked against protocol metadata only; every other result without lineage
# has its unnamed columns fully masked.
METADATA_STATEMENTS = frozenset({"show", "describe", "explain", "set", "use", "transaction", "help", "empty"})


def refusal_text(why: str) -> str:
    return f"sqlbastion: result withheld: {why}."


def _stricter(a: Treatment, b: Treatment) -> Treatment:
    """The treatment that reveals less (deny < masks by disclosure < clear); ties keep ``a``."""
    return b if b.disclosure < a.disclosure else a


def _counted(convert: Converter, count: list[int], child: Any, op: AsciiOp | None = None) -> ColumnMasker:
    """``convert`` counting the values it masks into ``count``, added to the metric in batches.

    The closure holds no per-result state, so plans that use it can be cached and
    shared. Per value it costs a list increment and a compare. With ``op``,
    all-ASCII values skip the converter's decode and encode, and the masker is
    registered with ``masking.rows`` so that the compiled row rewriter runs the
    same operation on them (``op.bytes_op()`` is what this closure runs).
    """
    if op is not None:
        ascii_op = op.bytes_op()

        def fast_masker(value: bytes | None) -> bytes | None:
            if value is None:
                return None
            n = count[0] = count[0] + 1
            if n >= TALLY_FLUSH:
                child.inc(n)
                count[0] = 0
            if value.isascii():
                return ascii_op(value)
            return convert(value)

        register_masker(fast_masker, op, count, child)
        return fast_masker

    def masker(value: bytes | None) -> bytes | None:
        if value is None:
            return None
        n = count[0] = count[0] + 1
        if n >= TALLY_FLUSH:
            child.inc(n)
            count[0] = 0
        return convert(value)

    return masker


@dataclass(frozen=True, slots=True)
class _PolicyState:
    """A policy with the caches computed from it (replaced together, never mutated apart)."""

    policy: MaskingPolicy
    plans: dict[tuple[object, ...], MaskPlan] = field(default_factory=dict)


class MaskingPlanner:
    """``proxy.session.MaskPlanner`` backed by a ``MaskingPolicy`` and the masking keys."""

    def __init__(
        self,
        policy: MaskingPolicy,
        *,
        keys: Mapping[str, bytes] | None = None,
        key_refs: Mapping[str, SecretRef] | None = None,
    ) -> None:
        self._keys = dict(keys or {})
        self._key_refs = dict(key_refs or {})  # resolved when a (reloaded) policy first uses them
        self._functions: dict[str, MaskFunction] = {}
        self._converters: dict[tuple[str, str, str, bool, str], tuple[Converter, AsciiOp | None]] = {}
        self._maskers: dict[tuple[str, str, str, str, bool, str], ColumnMasker] = {}
        self._counters: dict[tuple[str, str], tuple[list[int], Any]] = {}
        self._check_keys(policy)
        self._state = _PolicyState(policy)

    @property
    def policy(self) -> MaskingPolicy:
        return self._state.policy

    def _check_keys(self, policy: MaskingPolicy) -> None:
        # A missing key fails at start-up (or reload), never in the middle of a result.
        for name in sorted(policy.key_refs()):
            if name in self._keys:
                continue
            secret = self._key_refs.get(name)
            if secret is None:
                raise MissingKey(f"a masking rule uses key {name!r}, which [masking] keys does not define")
            try:
                value = secret.reveal_bytes()
            except SecretUnavailable as exc:
                raise MissingKey(f"masking key {name!r}: {exc}") from None
            if len(value) < MIN_KEY_BYTES:
                raise MissingKey(f"masking key {name!r} must hold at least {MIN_KEY_BYTES} bytes")
            self._keys[name] = value

    def replace_policy(self, policy: MaskingPolicy) -> None:
        """Swap in a reloaded policy atomically (the old one stays if the new one is unusable)."""
        self._check_keys(policy)
        self._state = _PolicyState(policy)

    def flush_metrics(self) -> None:
        """Add every value counted but not yet added to ``sqlbastion_masked_values_total``."""
        for count, child in self._counters.values():
            n, count[0] = count[0], 0
            if n:
                child.inc(n)

    # -- per column treatments ---------------------------------------------------------

    @staticmethod
    def _lineage(policy: MaskingPolicy, oc: OutputColumn, roles: tuple[str, ...], backend: str) -> Treatment:
        if oc.opaque:
            return FULL
        result = CLEAR
        masked = False
        for src in oc.sources:
            t = policy.treatment(roles, backend, src)
            if t.kind == "deny":
                return DENY
            if t.kind == "mask":
                masked = True
                result = _stricter(result, t)
        for src in oc.whole_row_of:
            t = policy.treatment(roles, backend, src)
            if t.kind == "deny":
                return DENY
            if t.kind == "mask":
                return _stricter(FULL, t)
        if masked and (not oc.direct or oc.whole_row_of):
            # an expression (or a value built with whole rows) is not the column's value:
            # the column's partial mask would not mean anything, so nothing of it is shown
            return _stricter(FULL, result)
        return result

    @staticmethod
    def _metadata(policy: MaskingPolicy, rc: ResultColumn, ctx: StatementContext) -> Treatment:
        if not rc.table or not rc.column:
            return CLEAR
        if ctx.dialect == "mysql":
            ref = ColumnRef(database=rc.schema or ctx.database, schema=None, table=rc.table, column=rc.column)
        else:
            schema = rc.schema or (ctx.search_path[0] if ctx.search_path else "public")
            ref = ColumnRef(database=ctx.database, schema=schema, table=rc.table, column=rc.column)
        return policy.treatment(ctx.roles, ctx.backend, ref)

    # -- the plan ------------------------------------------------------------------------

    def plan(self, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]) -> MaskPlan:
        """The mask plan for one result set of the statement ``decision`` describes."""
        state = self._state  # one read: the policy and its caches belong together
        policy = state.policy
        if not columns or policy.empty or not policy.restricted(ctx.roles):
            return EMPTY_MASK_PLAN
        if self._counters:
            self.flush_metrics()  # the previous results' remainders: the metric lags by one result at most
        if len(columns) > MAX_PLAN_COLUMNS:
            return self._plan(policy, decision, ctx, columns)
        # Everything the plan depends on; plans hold no per-result state, so equal keys share one.
        key = (
            ctx.roles,
            ctx.backend,
            ctx.dialect,
            ctx.database,
            ctx.search_path[:1],
            ctx.client_encoding,
            decision.output_columns,
            bool(decision.sensitive_columns),
            decision.statement_types,
            tuple(columns),
        )
        plan = state.plans.get(key)
        if plan is None:
            plan = self._plan(policy, decision, ctx, columns)
            if len(state.plans) >= MAX_PLANS:
                state.plans.clear()
            state.plans[key] = plan
        return plan

    def _plan(
        self, policy: MaskingPolicy, decision: Decision, ctx: StatementContext, columns: Sequence[ResultColumn]
    ) -> MaskPlan:
        n = len(columns)
        # An empty tuple is a statement whose result shape analysis does not describe
        # (SHOW, EXPLAIN …): no lineage, handled below like a statement without any.
        described = [s for s in decision.output_columns if s]
        candidates = [s for s in described if len(s) == n]
        if described and not candidates:
            counts = sorted({len(s) for s in described})
            return MaskPlan(
                refuse=refusal_text(
                    f"the result has {n} columns but the statement's lineage describes {counts}; "
                    "its columns cannot be traced to their sources"
                )
            )
        if not described:
            if bool(decision.statement_types) and set(decision.statement_types) <= METADATA_STATEMENTS:
                # SHOW, EXPLAIN …: their rows describe the server or a plan, not table data,
                # even when the statement they explain names a sensitive column.
                return self._build(ctx, columns, [self._metadata(policy, rc, ctx) for rc in columns])
            if decision.sensitive_columns:
                return MaskPlan(refuse=refusal_text("the result's columns cannot be traced to their sources"))
            # A result without lineage (a cursor FETCH, EXECUTE of an SQL-level prepared
            # statement, a procedure's result) is masked by metadata where the server
            # names the source; positions it does not name are fully masked.
            unproven = [self._metadata(policy, rc, ctx) if rc.table and rc.column else FULL for rc in columns]
            return self._build(ctx, columns, unproven)
        treatments: list[Treatment] = []
        for i, rc in enumerate(columns):
            t = self._metadata(policy, rc, ctx)
            for s in candidates:
                t = _stricter(t, self._lineage(policy, s[i], ctx.roles, ctx.backend))
            treatments.append(t)
        return self._build(ctx, columns, treatments)

    def _build(self, ctx: StatementContext, columns: Sequence[ResultColumn], ts: Sequence[Treatment]) -> MaskPlan:
        maskers: list[ColumnMasker | None] = []
        names: list[str | None] = []
        for i, (rc, t) in enumerate(zip(columns, ts, strict=True)):
            if t.kind == "deny":
                return MaskPlan(
                    refuse=refusal_text(f"column {i + 1} ({rc.name}) reads data this person's roles may not see")
                )
            if t.kind == "clear":
                maskers.append(None)
                names.append(None)
                continue
            function = t.function or STRONGEST
            maskers.append(self._masker(function, rc, ctx))
            names.append(function)
        if all(m is None for m in maskers):
            return EMPTY_MASK_PLAN
        return MaskPlan(columns=tuple(maskers), functions=tuple(names))

    def _masker(self, function: str, rc: ResultColumn, ctx: StatementContext) -> ColumnMasker:
        key = (function, ctx.backend, ctx.dialect, rc.type_name, rc.binary, ctx.client_encoding)
        masker = self._maskers.get(key)
        if masker is None:
            convert, fast = self._converter(function, rc, ctx)
            label = (ctx.backend, function.partition("(")[0])
            counter = self._counters.get(label)
            if counter is None:
                counter = ([0], METRICS.masked_values.labels(*label))
                self._counters[label] = counter
            masker = _counted(convert, counter[0], counter[1], fast)
            if len(self._maskers) >= MAX_CONVERTERS:
                self._maskers.clear()
            self._maskers[key] = masker
        return masker

    def _converter(self, function: str, rc: ResultColumn, ctx: StatementContext) -> tuple[Converter, AsciiOp | None]:
        key = (function, ctx.dialect, rc.type_name, rc.binary, ctx.client_encoding)
        entry = self._converters.get(key)
        if entry is None:
            fn = self._functions.get(function)
            if fn is None:
                fn = build_function(function, self._keys)
                self._functions[function] = fn
            encoding = python_encoding(ctx.client_encoding)
            conv = build_converter(fn, dialect=ctx.dialect, type_name=rc.type_name, binary=rc.binary, encoding=encoding)
            fast = ascii_fast_op(fn, dialect=ctx.dialect, type_name=rc.type_name, encoding=encoding)
            entry = (conv, fast)
            if len(self._converters) >= MAX_CONVERTERS:
                self._converters.clear()
            self._converters[key] = entry
        return entry


def load_masking_policy(settings: Settings) -> MaskingPolicy:
    """The merged masking policy of every file in ``[policy] files``. Raises ConfigError."""
    policies = []
    for f in settings.policy.files:
        path = settings.resolve_path(f)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(str(path), "", f"cannot read the policy file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "", f"not valid TOML: {exc}") from None
        policies.append(parse_masking_policy(data, file=str(path)))
    return merge_masking_policies(policies)


def planner_from_settings(settings: Settings, policy: MaskingPolicy | None = None) -> MaskingPlanner:
    """The planner for ``serve``: the policy files' masking rules and the ``[masking] keys``.

    Only the keys a rule uses are read (now, or when a reloaded policy first uses
    them). Raises ConfigError when a policy file is invalid or a used key cannot
    be resolved.
    """
    policy = policy if policy is not None else load_masking_policy(settings)
    try:
        return MaskingPlanner(policy, key_refs=settings.masking.keys)
    except MissingKey as exc:
        name = next((k for k in sorted(policy.key_refs()) if repr(k) in str(exc)), None)
        key = f"masking.keys.{name}" if name and name in settings.masking.keys else "masking.keys"
        raise ConfigError(settings.source, key, str(exc)) from None
