"""Per-statement metrics counted in plain integers per session, summed at scrape time.

Strategy. Every statement updates the statement counters, two latency
histograms, rows, sensitive reads and the per-person series. Done with
prometheus-client children that is five to eight locked operations, each
hashing a label tuple: a measurable share of a statement's cost. Here each
session owns a ``Tally`` (small dicts of ints and per-bucket int lists) that
only the session's event-loop thread writes, without a lock. The process
totals are the sum of:

* the prometheus-client metric objects themselves (``Metrics.statements`` …,
  not registered in the registry): what other code increments directly, the
  zero series ``Metrics.prepare`` creates, and one child per series a tally
  ever counted, created the first time a session counts it, so the ``_created``
  sample and the label sets are those the plain metrics would have;
* the tallies of sessions that have ended, folded into one tally per
  (protocol, backend, person label);
* the tallies of live sessions, read as they are at scrape time.

Invariants: a value never goes backwards. Folding a tally (moving its counts
from the live set to the closed totals) and reading the totals happen under
one lock, so a scrape sees each count exactly once. A live tally is read
while its session may be adding to it; ints only grow and dicts are copied
with one C-level call (``tuple(d.items())``, atomic under the GIL), so a
scrape sees each counter at some value at or after the last scrape's.

A tally is retired when its recorder is garbage collected (a
``weakref.finalize`` appends its key to a list, which takes no lock and so
cannot deadlock a collection running on the same thread); the next
registration or scrape folds it. Idle sessions' empty tallies are skipped at
scrape time, so 5,000 idle connections cost a scrape next to nothing.

Label sets stay closed (DESIGN.md decision 9): tally keys are the same label
values the plain metrics take (statement type from the closed vocabulary,
decision, rule id, persons under the cap).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar, cast

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_BUCKETS_US",
    "STATEMENT_TYPES",
    "StatementRecorder",
    "StatementTotals",
    "Tally",
    "statement_type_label",
]

# Latency buckets from 50 µs to 10 s: the proxy's own overhead lives in the
# first few, backend time in the rest.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# The same bounds in whole microseconds. For an integer duration in µs, ``us <= bound_us`` is exactly
# ``us / 1e6 <= bound`` (both sides are the correctly rounded doubles of the same decimals).
LATENCY_BUCKETS_US = tuple(round(b * 1_000_000) for b in LATENCY_BUCKETS)
_SLOTS = len(LATENCY_BUCKETS) + 1  # the last is +Inf
# The ``le`` label values prometheus-client writes for these bounds (its Go-compatible float format).
_go_float = cast(Callable[[float], str], floatToGoString)  # untyped in prometheus-client
_LE_SLOT = {_go_float(b): i for i, b in enumerate(LATENCY_BUCKETS)} | {"+Inf": len(LATENCY_BUCKETS)}

# Statement types the analyser names (policies.analyze). Some of its kinds are built from the
# statement's own words (an unknown verb, ``CREATE <object>``), so a client could otherwise mint
# a new label value per statement: anything outside this vocabulary is counted as ``other``
# (or ``create_other`` …). The label set stays closed whatever clients send.
STATEMENT_TYPES = frozenset(
    {
        "select", "insert", "update", "delete", "replace", "merge", "values", "table", "copy", "copy_to",
        "copy_from", "select_into", "select_into_file", "load_data", "call", "do", "prepare", "execute",
        "deallocate", "declare", "declare_cursor", "cursor", "fetch", "move", "close", "transaction", "set",
        "set_global", "set_role", "set_user", "show", "describe", "explain", "help", "use", "lock", "unlock",
        "truncate", "rename", "rename_user", "grant", "revoke", "comment", "security", "import", "reassign",
        "refresh", "maintenance", "admin", "alter_system", "notify", "kill", "handler", "discard", "signal", "get",
        "drop_code", "drop_object", "create", "alter", "drop", "empty", "multi", "unknown",
    }
)  # fmt: skip
_DDL_OBJECTS = frozenset(
    {
        "table", "view", "materialized_view", "index", "function", "procedure", "trigger", "event", "schema",
        "database", "user", "role", "sequence", "type", "extension", "rule", "policy", "server", "domain",
        "aggregate", "operator", "collation", "publication", "subscription", "tablespace", "language", "cast",
        "foreign_table", "code", "object", "destructive", "system",
    }
)  # fmt: skip


def statement_type_label(statement_type: str) -> str:
    """The ``statement_type`` label for an analyser kind: itself when in the vocabulary, else a closed fallback."""
    if statement_type in STATEMENT_TYPES:
        return statement_type
    verb, sep, obj = statement_type.partition("_")
    if sep and verb in ("create", "alter", "drop"):
        return statement_type if obj in _DDL_OBJECTS else f"{verb}_other"
    return "other"


# Tally.scalars positions.
_PROXY_SUM_US, _BACKEND_SUM_US, _ROWS, _SENSITIVE_COLUMNS, _BACKEND_ERRORS = range(5)

SeriesKey = tuple[str, str, str | None]  # protocol, backend, person label (None: person labels off)
StatementKey = tuple[str, str, str]  # statement type label, decision, rule id


class Tally:
    """One session's counts (or the sum of ended sessions' counts for one ``SeriesKey``)."""

    __slots__ = (
        "backend",
        "masked_results",
        "person_refusals",
        "person_statements",
        "proxy",
        "scalars",
        "sensitive_statements",
        "statements",
    )

    def __init__(self) -> None:
        self.statements: dict[StatementKey, int] = {}
        self.person_statements: dict[str, int] = {}  # decision → n
        self.person_refusals: dict[tuple[str, str], int] = {}  # (decision, rule id) → n
        self.sensitive_statements: dict[str, int] = {}  # decision → n
        self.masked_results: dict[str, int] = {}  # "masked" / "refused" → n
        self.proxy = [0] * _SLOTS  # per-bucket (not cumulative) counts of sqlbastion_proxy_seconds
        self.backend = [0] * _SLOTS  # … of sqlbastion_backend_seconds
        self.scalars: list[float] = [0] * 5  # sums in µs, rows, sensitive columns read, backend errors

    def idle(self) -> bool:
        return not self.statements and not self.masked_results

    def add_to(self, total: Tally) -> None:
        """Add this tally's counts to ``total`` (read once: the owner may be adding to it meanwhile)."""
        _add_counts(self.statements, total.statements)
        _add_counts(self.person_statements, total.person_statements)
        _add_counts(self.person_refusals, total.person_refusals)
        _add_counts(self.sensitive_statements, total.sensitive_statements)
        _add_counts(self.masked_results, total.masked_results)
        for i, n in enumerate(tuple(self.proxy)):
            total.proxy[i] += n
        for i, n in enumerate(tuple(self.backend)):
            total.backend[i] += n
        for i, x in enumerate(tuple(self.scalars)):
            total.scalars[i] += x


_K = TypeVar("_K")


def _add_counts(mine: dict[_K, int], theirs: dict[_K, int]) -> None:
    # tuple(items()) copies in one C call: atomic under the GIL while the owner inserts keys.
    for key, n in tuple(mine.items()):
        theirs[key] = theirs.get(key, 0) + n


class StatementTotals:
    """A registry collector: the per-statement metric families, summed over every session."""

    def __init__(
        self,
        *,
        statements: Counter,
        person_statements: Counter,
        person_refusals: Counter,
        proxy_seconds: Histogram,
        backend_seconds: Histogram,
        backend_errors: Counter,
        rows: Counter,
        person_rows: Counter,
        sensitive_statements: Counter,
        sensitive_columns: Counter,
        masked_results: Counter,
    ) -> None:
        self.statements = statements
        self.person_statements = person_statements
        self.person_refusals = person_refusals
        self.proxy_seconds = proxy_seconds
        self.backend_seconds = backend_seconds
        self.backend_errors = backend_errors
        self.rows = rows
        self.person_rows = person_rows
        self.sensitive_statements = sensitive_statements
        self.sensitive_columns = sensitive_columns
        self.masked_results = masked_results
        self._lock = threading.Lock()
        self._keys = itertools.count()
        self._live: dict[int, tuple[SeriesKey, Tally]] = {}
        self._closed: dict[SeriesKey, Tally] = {}
        self._retired: list[int] = []  # appended by finalizers, drained under the lock
        self._backends: set[tuple[str, str]] = set()

    # -- sessions ---------------------------------------------------------------------

    def attach(self, owner: object, series: SeriesKey) -> Tally:
        """A new tally for ``owner`` (a recorder), counted until ``owner`` is garbage collected."""
        protocol, backend, _ = series
        if (protocol, backend) not in self._backends:
            # The series every statement of this backend feeds, created once (with their _created time).
            self.proxy_seconds.labels(protocol, backend)
            self.backend_seconds.labels(protocol, backend)
            self.rows.labels(protocol, backend)
            self.backend_errors.labels(protocol, backend, "statement")
            self.sensitive_columns.labels(backend)
            self._backends.add((protocol, backend))
        tally = Tally()
        key = next(self._keys)
        with self._lock:
            self._sweep()
            self._live[key] = (series, tally)
        weakref.finalize(owner, self._retired.append, key)
        return tally

    def _sweep(self) -> None:
        """Fold retired tallies into the closed totals (the caller holds the lock)."""
        while self._retired:
            entry = self._live.pop(self._retired.pop(), None)
            if entry is not None:
                series, tally = entry
                closed = self._closed.get(series)
                if closed is None:
                    closed = self._closed[series] = Tally()
                tally.add_to(closed)

    def live_sessions(self) -> int:
        """Tallies not yet folded (live sessions, and ended ones until the next sweep)."""
        return len(self._live)

    # -- scraping -------------------------------------------------------------------

    def totals(self) -> dict[SeriesKey, Tally]:
        """The current sums per series key: closed totals plus every live tally, read under the lock."""
        out: dict[SeriesKey, Tally] = {}
        with self._lock:
            self._sweep()
            for series, closed in self._closed.items():
                closed.add_to(out.setdefault(series, Tally()))
            for series, tally in tuple(self._live.values()):
                if not tally.idle():
                    tally.add_to(out.setdefault(series, Tally()))
        return out

    def describe(self) -> list[Metric]:
        return [m for base in self._bases() for m in base.describe()]

    def _bases(self) -> tuple[Counter | Histogram, ...]:
        return (
            self.statements,
            self.person_statements,
            self.person_refusals,
            self.proxy_seconds,
            self.backend_seconds,
            self.backend_errors,
            self.rows,
            self.person_rows,
            self.sensitive_statements,
            self.sensitive_columns,
            self.masked_results,
        )

    def collect(self) -> Iterable[Metric]:
        statements: dict[tuple[str, ...], float] = {}
        person_statements: dict[tuple[str, ...], float] = {}
        person_refusals: dict[tuple[str, ...], float] = {}
        sensitive_statements: dict[tuple[str, ...], float] = {}
        masked_results: dict[tuple[str, ...], float] = {}
        rows: dict[tuple[str, ...], float] = {}
        person_rows: dict[tuple[str, ...], float] = {}
        sensitive_columns: dict[tuple[str, ...], float] = {}
        backend_errors: dict[tuple[str, ...], float] = {}
        proxy: dict[tuple[str, ...], tuple[list[int], float]] = {}
        backend: dict[tuple[str, ...], tuple[list[int], float]] = {}
        for (protocol, backend_name, person), t in self.totals().items():
            for (stype, decision, rule), n in t.statements.items():
                _add(statements, (protocol, backend_name, stype, decision, rule), n)
            for decision, n in t.sensitive_statements.items():
                _add(sensitive_statements, (protocol, backend_name, decision), n)
            for outcome, n in t.masked_results.items():
                _add(masked_results, (backend_name, outcome), n)
            s = t.scalars
            _add(rows, (protocol, backend_name), s[_ROWS])
            _add(sensitive_columns, (backend_name,), s[_SENSITIVE_COLUMNS])
            _add(backend_errors, (protocol, backend_name, "statement"), s[_BACKEND_ERRORS])
            _add_histogram(proxy, (protocol, backend_name), t.proxy, s[_PROXY_SUM_US] / 1e6)
            _add_histogram(backend, (protocol, backend_name), t.backend, s[_BACKEND_SUM_US] / 1e6)
            if person is not None:
                for decision, n in t.person_statements.items():
                    _add(person_statements, (person, decision), n)
                for (decision, rule), n in t.person_refusals.items():
                    _add(person_refusals, (person, decision, rule), n)
                _add(person_rows, (person,), s[_ROWS])
        statement_labels = ("protocol", "backend", "statement_type", "decision", "rule_id")
        yield from _merged(self.statements, statement_labels, statements)
        yield from _merged(self.person_statements, ("person", "decision"), person_statements)
        yield from _merged(self.person_refusals, ("person", "decision", "rule_id"), person_refusals)
        yield from _merged_histogram(self.proxy_seconds, ("protocol", "backend"), proxy)
        yield from _merged_histogram(self.backend_seconds, ("protocol", "backend"), backend)
        yield from _merged(self.backend_errors, ("protocol", "backend", "kind"), backend_errors)
        yield from _merged(self.rows, ("protocol", "backend"), rows)
        yield from _merged(self.person_rows, ("person",), person_rows)
        yield from _merged(self.sensitive_statements, ("protocol", "backend", "decision"), sensitive_statements)
        yield from _merged(self.sensitive_columns, ("backend",), sensitive_columns)
        yield from _merged(self.masked_results, ("backend", "outcome"), masked_results)


def _add(into: dict[tuple[str, ...], float], key: tuple[str, ...], n: float) -> None:
    if n:
        into[key] = into.get(key, 0) + n


def _add_histogram(
    into: dict[tuple[str, ...], tuple[list[int], float]], key: tuple[str, ...], slots: Sequence[int], total_s: float
) -> None:
    if not any(slots):
        return
    known = into.get(key)
    if known is None:
        into[key] = (list(slots), total_s)
        return
    merged = [a + b for a, b in zip(known[0], slots, strict=True)]
    into[key] = (merged, known[1] + total_s)


def _merged(base: Counter, labelnames: tuple[str, ...], extra: Mapping[tuple[str, ...], float]) -> Iterable[Metric]:
    """``base``'s families with ``extra`` added to its ``_total`` samples (new series appended)."""
    for family in base.collect():
        if extra:
            seen: set[tuple[str, ...]] = set()
            samples: list[Sample] = []
            for sample in family.samples:
                s = sample
                if s.name.endswith("_total"):
                    key = tuple(s.labels[n] for n in labelnames)
                    n = extra.get(key)
                    if n is not None:
                        seen.add(key)
                        s = s._replace(value=s.value + n)
                samples.append(s)
            for key, n in extra.items():
                if key not in seen:
                    samples.append(Sample(family.name + "_total", dict(zip(labelnames, key, strict=True)), float(n)))
            family.samples = samples
        yield family


def _merged_histogram(
    base: Histogram, labelnames: tuple[str, ...], extra: Mapping[tuple[str, ...], tuple[list[int], float]]
) -> Iterable[Metric]:
    """``base``'s families with ``extra`` (per-bucket counts, sum in seconds) added."""
    cumulative = {key: (list(itertools.accumulate(slots)), total) for key, (slots, total) in extra.items()}
    for family in base.collect():
        if cumulative:
            seen: set[tuple[str, ...]] = set()
            samples: list[Sample] = []
            for sample in family.samples:
                s = sample
                key = tuple(s.labels[n] for n in labelnames)
                e = cumulative.get(key)
                if e is not None:
                    seen.add(key)
                    if s.name.endswith("_bucket"):
                        s = s._replace(value=s.value + e[0][_LE_SLOT[s.labels["le"]]])
                    elif s.name.endswith("_count"):
                        s = s._replace(value=s.value + e[0][-1])
                    elif s.name.endswith("_sum"):
                        s = s._replace(value=s.value + e[1])
                samples.append(s)
            for key, (counts, total) in cumulative.items():
                if key in seen:
                    continue
                labels = dict(zip(labelnames, key, strict=True))
                for le, slot in _LE_SLOT.items():
                    samples.append(Sample(family.name + "_bucket", {**labels, "le": le}, float(counts[slot])))
                samples.append(Sample(family.name + "_count", labels, float(counts[-1])))
                samples.append(Sample(family.name + "_sum", labels, total))
            family.samples = samples
        yield family


class StatementRecorder:
    """Counts one session's statements into its tally; made by ``Metrics.recorder`` when the session starts.

    Only the session's own thread calls it. The person label is fixed for the
    session (allocated under the cap at its start), so a person's series never
    change name mid-session. The tally is attached at the first count: an idle
    connection costs no tally, and scrapes never see it.
    """

    __slots__ = ("__weakref__", "_tally", "_totals", "backend", "person", "protocol")

    def __init__(self, totals: StatementTotals, *, protocol: str, backend: str, person: str | None) -> None:
        self._totals = totals
        self.protocol = protocol
        self.backend = backend
        self.person = person
        self._tally: Tally | None = None

    def _attach(self) -> Tally:
        t = self._tally = self._totals.attach(self, (self.protocol, self.backend, self.person))
        return t

    def count(  # noqa: PLR0917  # positional on purpose: the per-statement call, keywords cost more
        self,
        key: StatementKey,
        allowed: bool,
        sensitive_columns: int,
        proxy_us: int,
        backend_us: int,
        rows: int,
        backend_error: bool,
    ) -> None:
        """One statement. ``key`` is (statement type label, decision, rule id); times in whole µs.

        The hot path: positional arguments, no lock, no label hashing beyond one dict lookup.
        """
        t = self._tally or self._attach()
        statements = t.statements
        n = statements.get(key)
        if n is None:
            self._totals.statements.labels(self.protocol, self.backend, *key)
            n = 0
        statements[key] = n + 1
        scalars = t.scalars
        t.proxy[bisect_left(LATENCY_BUCKETS_US, proxy_us)] += 1
        scalars[_PROXY_SUM_US] += proxy_us
        if allowed:
            t.backend[bisect_left(LATENCY_BUCKETS_US, backend_us)] += 1
            scalars[_BACKEND_SUM_US] += backend_us
        if rows:
            scalars[_ROWS] += rows
        if sensitive_columns:
            self._sensitive_statement(t, key[1], allowed, sensitive_columns)
        if backend_error:
            scalars[_BACKEND_ERRORS] += 1
        if self.person is not None:
            self._person(t, key[1], key[2], allowed)

    def _sensitive_statement(self, t: Tally, decision: str, allowed: bool, columns: int) -> None:
        n = t.sensitive_statements.get(decision)
        if n is None:
            self._totals.sensitive_statements.labels(self.protocol, self.backend, decision)
            n = 0
        t.sensitive_statements[decision] = n + 1
        if allowed:
            t.scalars[_SENSITIVE_COLUMNS] += columns

    def _person(self, t: Tally, decision: str, rule_id: str, allowed: bool) -> None:
        person = self.person
        if person is None:
            return
        n = t.person_statements.get(decision)
        if n is None:
            self._totals.person_statements.labels(person, decision)
            n = 0
        t.person_statements[decision] = n + 1
        if not allowed:
            refusal = (decision, rule_id)
            n = t.person_refusals.get(refusal)
            if n is None:
                self._totals.person_refusals.labels(person, decision, rule_id)
                n = 0
            t.person_refusals[refusal] = n + 1

    def masked_result(self, refused: bool) -> None:
        """One result sent with masked columns, or refused (``sqlbastion_masked_results_total``)."""
        t = self._tally or self._attach()
        outcome = "refused" if refused else "masked"
        n = t.masked_results.get(outcome)
        if n is None:
            self._totals.masked_results.labels(self.backend, outcome)
            n = 0
        t.masked_results[outcome] = n + 1

    def record(
        self,
        *,
        statement_type: str,
        decision: str,
        rule_id: str,
        allowed: bool,
        sensitive_columns: int,
        proxy_s: float,
        backend_s: float,
        rows: int,
        backend_error: bool,
    ) -> None:
        """``count`` with named arguments and durations in seconds (bucketed as ``Histogram.observe`` does)."""
        t = self._tally or self._attach()
        key = (statement_type_label(statement_type), decision, rule_id)
        n = t.statements.get(key)
        if n is None:
            self._totals.statements.labels(self.protocol, self.backend, *key)
            n = 0
        t.statements[key] = n + 1
        t.proxy[bisect_left(LATENCY_BUCKETS, proxy_s)] += 1
        t.scalars[_PROXY_SUM_US] += proxy_s * 1e6
        if allowed:
            t.backend[bisect_left(LATENCY_BUCKETS, backend_s)] += 1
            t.scalars[_BACKEND_SUM_US] += backend_s * 1e6
        if rows:
            t.scalars[_ROWS] += rows
        if sensitive_columns:
            self._sensitive_statement(t, decision, allowed, sensitive_columns)
        if backend_error:
            t.scalars[_BACKEND_ERRORS] += 1
        if self.person is not None:
            self._person(t, decision, rule_id, allowed)
