"""The decision engine: facts + person + policy → Decision, with a bounded cache.

Strategy:

* ``decide`` first checks admission (network, time window, expiry) on every
  call — these depend on the moment and the address, so they are never cached;
* then the decision cache (DESIGN.md decision 3). Level one is keyed by the
  exact SQL text; level two by the token fingerprint (canonical text with
  literals replaced). Both keys also hold everything else a decision depends
  on: person, roles, backend, database, search_path, sql_mode flags,
  standard_conforming_strings, client encoding, transaction state and the
  catalog version (the policy version is the engine's own: a reload builds a
  new engine and a new cache). A statement whose facts depend on a literal's
  value (``literal_sensitive``) leaves a marker at its fingerprint so that
  statements of the same shape are decided by exact text only;
* on a miss, ``analyze`` produces facts and ``_judge`` applies the built-in
  rules, grants (default deny, column grants), duty separation, the masking
  guards and custom rules. The strictest hit wins.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlbastion import logs
from sqlbastion.observability.metrics import METRICS
from sqlbastion.policies.analyze import Analysis, AnalysisLimits, analyze_lexed, lex_message
from sqlbastion.policies.catalog import Catalog
from sqlbastion.policies.fingerprint import fast_fingerprint
from sqlbastion.policies.judge import Judge
from sqlbastion.policies.model import (
    Action,
    Decision,
    PersonPolicy,
    PolicySet,
    RuleHit,
    StatementContext,
)
from sqlbastion.policies.rules import RULES
from sqlbastion.policies.settings import encoding_is_safe

if TYPE_CHECKING:
    from sqlbastion.masking.policy import MaskingPolicy

log = logs.get_logger("policies.engine")

MAX_CACHED_SQL_CHARS = 16_384
_MAX_CONTEXT_IDS = 65_536  # distinct session contexts remembered (person × database × settings …)
_SENSITIVE = object()  # fingerprint marker: decide this shape by exact text only


class DecisionCache:
    """A bounded LRU of decisions (thread-safe: the proxy may run several loops).

    Bounded twice: by entries and by the characters of SQL text the keys hold
    (``max_chars``), so long statements cannot grow it past its memory cap.
    """

    def __init__(self, max_entries: int, *, max_chars: int = 32 << 20) -> None:
        self.max_entries = max(0, max_entries)
        self.max_chars = max_chars
        self.chars = 0
        self._data: OrderedDict[tuple[Any, ...], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> object | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple[Any, ...], value: object) -> None:
        if self.max_entries == 0:
            return
        size = _key_chars(key)
        with self._lock:
            if key not in self._data:
                self.chars += size
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries or (self.chars > self.max_chars and len(self._data) > 1):
                old, _ = self._data.popitem(last=False)
                self.chars -= _key_chars(old)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.chars = 0


def _key_chars(key: tuple[Any, ...]) -> int:
    return len(key[1]) + 64 if len(key) > 1 and isinstance(key[1], str) else 64


@lru_cache(maxsize=4096)
def _address_in(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for net in networks:
        n = ipaddress.ip_network(net, strict=False)
        if ip.version == n.version and ip in n:
            return True
    return False


def admission_refusal(person: PersonPolicy | None, client_address: str, now: datetime) -> str | None:
    """None when the person may act now from this address, else the reason (closed set)."""
    if person is None:
        return "unknown_person"
    if person.disabled:
        return "disabled"
    if person.expires is not None and now >= person.expires:
        return "expired"
    if person.networks and not _address_in(client_address, person.networks):
        return "network"
    if person.time_windows:
        second = math.floor(now.timestamp())
        for w in person.time_windows:
            if _in_window(w, now, second):
                return None
        return "time_window"
    return None


def _in_window(w: Any, now: datetime, second: int | None = None) -> bool:
    day, minute = _local_day_minute(w.tz, math.floor(now.timestamp()) if second is None else second)
    if w.start_minute < w.end_minute:
        return day in w.days and w.start_minute <= minute < w.end_minute
    # Overnight window (22:00-06:00): the part after midnight belongs to the previous day.
    if minute >= w.start_minute:
        return day in w.days
    return minute < w.end_minute and (day - 1) % 7 in w.days


@lru_cache(maxsize=64)
def _local_day_minute(tz: str, second: int) -> tuple[int, int]:
    """(weekday, minute of the day) in ``tz`` at a whole Unix second.

    Cached because every decision checks the person's time windows: within one
    second the answer cannot change (zone offsets are whole seconds, so the
    local minute depends on the whole second only), and a cache lookup costs
    a fraction of a time-zone conversion.
    """
    local = datetime.fromtimestamp(second, ZoneInfo(tz))
    return local.weekday(), local.hour * 60 + local.minute


_REFUSAL_TEXT = {
    "unknown_person": "the person has no policy",
    "disabled": "the person is disabled",
    "expired": "the person's access has expired",
    "network": "the client address is outside the person's allowed networks",
    "time_window": "the person is outside their allowed time windows",
}


class PolicyEngine:
    """Implements proxy.session.DecisionEngine over one loaded policy."""

    def __init__(
        self,
        policy: PolicySet,
        *,
        masking: MaskingPolicy | None = None,
        catalogs: Callable[[str], Catalog | None] | Mapping[str, Catalog] | None = None,
        limits: AnalysisLimits | None = None,
        cache_entries: int = 10_000,
        on_ddl: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.masking = masking
        self._persons = {p.name: p for p in policy.persons}
        if catalogs is None:
            self._catalog: Callable[[str], Catalog | None] = lambda _b: None
        elif callable(catalogs):
            self._catalog = catalogs
        else:
            mapping = dict(catalogs)
            self._catalog = mapping.get
        self.limits = limits or AnalysisLimits()
        self.cache = DecisionCache(cache_entries)
        self.on_ddl = on_ddl
        self.judge = Judge(policy, masking)
        # The counters' children, bound once (``labels`` takes a lock and builds a key per call).
        self._hits = METRICS.decision_cache.labels("hit")
        self._misses = METRICS.decision_cache.labels("miss")
        # Context → number (see _context_id), and the last context seen: sessions reuse
        # one StatementContext object while their state and the clock's second stay.
        self._context_ids: dict[tuple[Any, ...], int] = {}
        self._context_counter = itertools.count()
        self._context_memo: tuple[StatementContext | None, str, int] = (None, "", -1)

    @property
    def version(self) -> str:
        return self.policy.version

    def roles_of(self, person: str) -> tuple[str, ...]:
        p = self._persons.get(person)
        return p.roles if p is not None else ()

    def person(self, name: str) -> PersonPolicy | None:
        return self._persons.get(name)

    def admit(self, person: str, client_address: str, backend: str) -> str | None:
        return admission_refusal(self._persons.get(person), client_address, datetime.now(UTC))

    def max_rows(self, person: str) -> int | None:
        p = self._persons.get(person)
        return p.max_rows if p is not None else None

    # -- deciding -----------------------------------------------------------------

    def decide(self, sql: str, ctx: StatementContext) -> Decision:
        """The decision for one client message. Never raises: a failure inside is a block."""
        try:
            return self._decide(sql, ctx)
        except Exception as exc:
            log.error("decision failed; the statement is blocked", error=type(exc).__name__)
            rule = RULES["SB-UNPROVABLE-ANALYSIS"]
            why = f"the policy engine failed on this statement ({type(exc).__name__})"
            hit = RuleHit(rule_id=rule.id, title=rule.title, severity=rule.severity, action=Action.BLOCK, why=why)
            return Decision(action=Action.BLOCK, rule_hits=(hit,), reason=why, policy_version=self.version)

    def _decide(self, sql: str, ctx: StatementContext) -> Decision:
        person = self._persons.get(ctx.person)
        refusal = admission_refusal(person, ctx.client_address, ctx.now or datetime.now(UTC))
        if refusal is not None or person is None:
            return self._refused(refusal or "unknown_person")
        catalog = self._catalog(ctx.backend)
        catalog_version = catalog.version if catalog is not None else "none"
        memo = self._context_memo
        if memo[0] is ctx and memo[1] == catalog_version:
            context_key = memo[2]
        else:
            context_key = self._context_id(ctx, person, catalog_version)
            self._context_memo = (ctx, catalog_version, context_key)
        exact_key = ("x", sql, context_key) if len(sql) <= MAX_CACHED_SQL_CHARS else None
        if exact_key is not None:
            hit = self.cache.get(exact_key)
            if isinstance(hit, Decision):
                self._hits.inc()
                self._after(hit, ctx)
                return hit
        # The fingerprint level without lexing, for plain statements (fingerprint.py);
        # the same limits as lex_message apply first, so a refused message never hits.
        fast = (
            fast_fingerprint(sql)
            if len(sql) <= self.limits.max_statement_bytes and _encoding_safe(ctx.dialect, ctx.client_encoding)
            else None
        )
        if fast is not None:
            hit = self.cache.get(("f", fast, context_key))
            if isinstance(hit, Decision):
                # No exact-text entry: the fingerprint serves this shape as fast, and
                # one entry per literal would only push other shapes out of the cache.
                self._hits.inc()
                self._after(hit, ctx)
                return hit
        prepared = lex_message(sql, ctx, self.limits)
        fp_key = None
        if not isinstance(prepared, Analysis):
            fingerprint = "\x00;".join(st.fingerprint for st in prepared)
            if len(fingerprint) <= MAX_CACHED_SQL_CHARS:
                fp_key = ("f", fingerprint, context_key)
                hit = self.cache.get(fp_key) if fast is None else None
                if isinstance(hit, Decision):
                    self._hits.inc()
                    if exact_key is not None:
                        self.cache.put(exact_key, hit)
                    self._after(hit, ctx)
                    return hit
            analysis = analyze_lexed(prepared, ctx, catalog, self.limits)
        else:
            analysis = prepared
            fingerprint = ""
        self._misses.inc()
        decision = self.judge.decide(analysis, person, ctx)
        fp_hash = hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()[:16] if fingerprint else ""
        stored = _with_fingerprint(decision, fp_hash, self.version)
        cached = _as_cached(stored)
        if exact_key is not None:
            self.cache.put(exact_key, cached)
        if fp_key is not None:
            sensitive = any(f.literal_sensitive or f.kind not in _SHAPE_KINDS for f in analysis.statements)
            self.cache.put(fp_key, _SENSITIVE if sensitive or analysis.unprovable else cached)
        self._after(stored, ctx)
        return stored

    def _context_id(self, ctx: StatementContext, person: PersonPolicy, catalog_version: str) -> int:
        """A small integer naming everything besides the text that a decision depends on.

        Cache keys hold this number instead of the tuple, so a lookup hashes an
        int rather than a dozen fields. Numbers are never reused (a counter), so
        clearing the table only makes old cache entries unreachable.
        """
        full = (
            ctx.person,
            person.roles,
            ctx.backend,
            ctx.dialect,
            ctx.database,
            ctx.search_path,
            ctx.ansi_quotes,
            ctx.no_backslash_escapes,
            ctx.standard_conforming_strings,
            ctx.client_encoding,
            ctx.in_transaction,
            catalog_version,
        )
        known = self._context_ids.get(full)
        if known is not None:
            return known
        if len(self._context_ids) >= _MAX_CONTEXT_IDS:
            self._context_ids.clear()
        number = next(self._context_counter)
        self._context_ids[full] = number
        return number

    def _after(self, decision: Decision, ctx: StatementContext) -> None:
        ddl = ("create", "drop", "alter", "rename", "truncate")
        if (
            self.on_ddl is not None
            and decision.allowed
            and decision.objects_written
            and any(t.startswith(ddl) for t in decision.statement_types)
        ):
            self.on_ddl(ctx.backend)

    def _refused(self, refusal: str) -> Decision:
        rule = RULES["SB-ADMISSION"]
        why = _REFUSAL_TEXT.get(refusal, refusal)
        return Decision(
            action=Action.BLOCK,
            rule_hits=(
                RuleHit(rule_id=rule.id, title=rule.title, severity=rule.severity, action=Action.BLOCK, why=why),
            ),
            reason=why,
            policy_version=self.version,
            notes=(f"admission:{refusal}",),
        )


# Statement kinds whose decision is a function of the statement's shape (with
# literal_sensitive covering the exceptions); anything else is decided by exact text.
_SHAPE_KINDS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "replace",
        "merge",
        "copy_to",
        "copy_from",
        "transaction",
        "empty",
        "cursor",
        "show",
        "describe",
        "explain",
        "declare_cursor",
    }
)


@lru_cache(maxsize=256)
def _encoding_safe(dialect: str, encoding: str) -> bool:
    return encoding_is_safe(dialect, encoding)


def _with_fingerprint(d: Decision, fingerprint: str, version: str) -> Decision:
    from dataclasses import replace

    return replace(d, fingerprint=fingerprint, policy_version=version)


def _as_cached(d: Decision) -> Decision:
    from dataclasses import replace

    return replace(d, cached=True)
