"""Prometheus metrics, with bounded label cardinality (DESIGN.md, decision 9).

Labels take values from closed sets only: protocol, backend name (from the
configuration), statement type (from the analyser's closed vocabulary),
decision, rule id (from the rule catalogue and the policy), masking function
(from the catalogue), sink name (from the configuration). Never raw SQL,
never a user name a peer typed, never a client address. Persons appear only when ``admin.metrics_person_labels`` is on,
capped at ``metrics_person_label_cap`` distinct persons; the rest are counted
under ``_other``. Persons are authenticated names from the users file, so the
cap bounds a closed set further; unauthenticated names never become labels.

Who records what:

* ``proxy.session.Session``: connections, statements, latency, rows, backend
  errors reported in the statement outcome, per-person statements, refusals
  and rows, sensitive columns read, masked and refused results
  (``Session.mask_plan``), audit refusals, auth failures
  (``proxy.session.auth_failed``). The per-statement ones go through the
  session's ``StatementRecorder``: plain ints per session, summed with every
  other session's at scrape time (``observability.tally``).
* The masking planner's maskers: ``masked_values``, by function.
* The policy engine: ``decision_cache`` hits and misses.
* The protocol listeners: ``backend_errors`` of kind ``connect`` and
  ``protocol`` that happen outside a statement.
* The audit pipeline: ``audit_*``.
* The policy reload path (``observability.admin.PolicyReloader``): reloads
  and the version in force.
* ``observability.loop``: event loop lag.

Every label set that is known from the configuration is created at start-up
with value 0 (``prepare``), so that ``rate()`` and ``increase()`` see the first
increment of a counter and dashboards show 0 rather than "no data".
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from sqlbastion import __version__
from sqlbastion.observability.tally import (
    LATENCY_BUCKETS,
    STATEMENT_TYPES,
    StatementRecorder,
    StatementTotals,
    statement_type_label,
)

__all__ = [
    "AUTH_FAILURE_REASONS",
    "METRICS",
    "OTHER_PERSONS",
    "STATEMENT_TYPES",
    "MaskedResult",
    "Metrics",
    "StatementRecorder",
    "statement_type_label",
]

_LATENCY_BUCKETS = LATENCY_BUCKETS

OTHER_PERSONS = "_other"
"""The person label for every person beyond the cap."""

AUTH_FAILURE_REASONS = (
    "bad_credentials",
    "network",
    "time_window",
    "expired",
    "unknown_person",
    "disabled",
    "max_sessions",
    "tls_required",
    "timeout",
    "protocol",
)
"""The closed set of ``reason`` labels of ``sqlbastion_auth_failures_total`` (see ``proxy.session.auth_failed``)."""

_DECISIONS = ("allow", "alert", "review", "block")
_AUDIT_KINDS = ("statement", "connection_opened", "connection_closed", "auth_failed")
_BACKEND_ERROR_KINDS = ("statement", "connect", "connection_lost", "protocol", "catalog")


class MaskedResult(Protocol):
    """What ``observe_masking`` reads of a ``proxy.session.MaskPlan``."""

    @property
    def refuse(self) -> str | None: ...


class Metrics:
    """All of sqlbastion's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.person_labels = False
        self.person_cap = 100
        self._persons: set[str] = set()
        self._lock = threading.Lock()
        self.build_info = Gauge(
            "sqlbastion_build_info", "sqlbastion's version (value 1)", ["version", "python"], registry=r
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.start_time = Gauge(
            "sqlbastion_start_time_seconds", "When this sqlbastion process started (Unix time)", registry=r
        )
        self.start_time.set(time.time())

        # -- clients --------------------------------------------------------
        self.connections_active = Gauge(
            "sqlbastion_client_connections_active", "Client connections open now", ["protocol", "backend"], registry=r
        )
        self.connections_total = Counter(
            "sqlbastion_client_connections_total", "Client connections accepted", ["protocol", "backend"], registry=r
        )
        self.connections_limit = Gauge(
            "sqlbastion_client_connections_limit",
            "The configured maximum of client connections (server.max_connections)",
            registry=r,
        )
        self.auth_failures = Counter(
            "sqlbastion_auth_failures_total",
            "Failed person authentications",
            ["protocol", "backend", "reason"],
            registry=r,
        )

        # -- statements -----------------------------------------------------
        # The per-statement metrics are not registered themselves: ``StatementTotals`` (tally.py)
        # exports each of them with the sessions' own counts added. Increments made on these
        # objects directly (listeners' backend errors, ``observe_masking``) are exported too.
        self.statements = Counter(
            "sqlbastion_statements_total",
            "Statements decided, by type, decision and rule",
            ["protocol", "backend", "statement_type", "decision", "rule_id"],
            registry=None,
        )
        self.statements_by_person = Counter(
            "sqlbastion_person_statements_total",
            "Statements decided per person (only when person labels are enabled)",
            ["person", "decision"],
            registry=None,
        )
        self.person_refusals = Counter(
            "sqlbastion_person_refusals_total",
            "Statements blocked or held for review, per person and rule (only when person labels are enabled)",
            ["person", "decision", "rule_id"],
            registry=None,
        )
        self.proxy_seconds = Histogram(
            "sqlbastion_proxy_seconds",
            "Time spent in sqlbastion per statement (analysis, decision, masking)",
            ["protocol", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.backend_seconds = Histogram(
            "sqlbastion_backend_seconds",
            "Time the backend took per statement",
            ["protocol", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.backend_errors = Counter(
            "sqlbastion_backend_errors_total",
            "Errors returned by or talking to the backend",
            ["protocol", "backend", "kind"],
            registry=None,
        )
        self.rows_returned = Counter(
            "sqlbastion_rows_returned_total", "Result rows sent to clients", ["protocol", "backend"], registry=None
        )
        self.person_rows = Counter(
            "sqlbastion_person_rows_returned_total",
            "Result rows sent per person (only when person labels are enabled)",
            ["person"],
            registry=None,
        )
        self.decision_cache = Counter(
            "sqlbastion_decision_cache_total", "Decision cache lookups", ["result"], registry=r
        )

        # -- sensitive data -------------------------------------------------
        self.masked_values = Counter(
            "sqlbastion_masked_values_total", "Values masked, by masking function", ["backend", "function"], registry=r
        )
        self.masked_results = Counter(
            "sqlbastion_masked_results_total",
            "Results sent with at least one masked column, or refused because a column is denied",
            ["backend", "outcome"],
            registry=None,
        )
        self.sensitive_statements = Counter(
            "sqlbastion_sensitive_statements_total",
            "Statements that touched a classified (sensitive) column",
            ["protocol", "backend", "decision"],
            registry=None,
        )
        self.sensitive_columns_read = Counter(
            "sqlbastion_sensitive_columns_read_total",
            "Classified columns referenced by allowed statements (one per column per statement)",
            ["backend"],
            registry=None,
        )

        self.statement_totals = StatementTotals(
            statements=self.statements,
            person_statements=self.statements_by_person,
            person_refusals=self.person_refusals,
            proxy_seconds=self.proxy_seconds,
            backend_seconds=self.backend_seconds,
            backend_errors=self.backend_errors,
            rows=self.rows_returned,
            person_rows=self.person_rows,
            sensitive_statements=self.sensitive_statements,
            sensitive_columns=self.sensitive_columns_read,
            masked_results=self.masked_results,
        )
        r.register(self.statement_totals)

        # -- audit ----------------------------------------------------------
        self.audit_events = Counter("sqlbastion_audit_events_total", "Audit events emitted", ["kind"], registry=r)
        self.audit_lost = Counter(
            "sqlbastion_audit_events_lost_total", "Audit events lost (fail_open only)", registry=r
        )
        self.audit_refusals = Counter(
            "sqlbastion_audit_refusals_total",
            "Statements refused because the audit spool could not record them",
            registry=r,
        )
        self.audit_spool_bytes = Gauge("sqlbastion_audit_spool_bytes", "Bytes held in the audit spool", registry=r)
        self.audit_spool_capacity = Gauge(
            "sqlbastion_audit_spool_capacity_bytes", "Configured maximum spool size", registry=r
        )
        self.audit_spool_writable = Gauge(
            "sqlbastion_audit_spool_writable",
            "1 while the audit spool takes events, 0 while it fails (disk full, I/O error, max_spool_bytes)",
            registry=r,
        )
        self.audit_sink_lag = Gauge(
            "sqlbastion_audit_sink_lag_events",
            "Events spooled but not yet acknowledged by a sink",
            ["sink"],
            registry=r,
        )
        self.audit_sink_errors = Counter(
            "sqlbastion_audit_sink_errors_total", "Failed deliveries to a sink", ["sink"], registry=r
        )
        self.audit_sink_delivered = Counter(
            "sqlbastion_audit_sink_delivered_total", "Events acknowledged by a sink", ["sink"], registry=r
        )
        self.audit_sink_up = Gauge(
            "sqlbastion_audit_sink_up", "1 when the sink's last delivery worked", ["sink"], registry=r
        )

        # -- policy ---------------------------------------------------------
        self.policy_reloads = Counter("sqlbastion_policy_reloads_total", "Policy reloads", ["result"], registry=r)
        self.policy_info = Gauge(
            "sqlbastion_policy_info", "The policy version in force (value 1)", ["version"], registry=r
        )
        self.policy_last_reload_ok = Gauge(
            "sqlbastion_policy_last_reload_ok",
            "1 when the last policy reload succeeded (or none was tried), 0 when it failed",
            registry=r,
        )
        self.policy_last_reload_ok.set(1)
        self.policy_last_reload_time = Gauge(
            "sqlbastion_policy_last_reload_timestamp_seconds",
            "When the last policy reload was tried (Unix time; 0 before the first)",
            registry=r,
        )

        # -- process --------------------------------------------------------
        self.event_loop_lag = Gauge(
            "sqlbastion_event_loop_lag_seconds",
            "How late the event loop ran a timer in the last measuring interval (the highest lag seen)",
            registry=r,
        )
        self.admin_requests = Counter(
            "sqlbastion_admin_requests_total",
            "Requests to the admin HTTP endpoint, by route and status code",
            ["route", "code"],
            registry=r,
        )

    def configure(self, *, person_labels: bool, person_cap: int) -> None:
        """Apply ``admin.metrics_person_labels`` / ``metrics_person_label_cap`` (at start-up).

        The cap counts persons from this call on: the series of persons seen
        before stay exported, but no longer take a place under the cap.
        """
        with self._lock:
            self.person_labels = person_labels
            self.person_cap = max(0, person_cap)
            self._persons.clear()

    def prepare(
        self,
        *,
        backends: Iterable[tuple[str, str]] = (),
        sinks: Iterable[str] = (),
        max_connections: int | None = None,
        spool_capacity_bytes: int | None = None,
    ) -> None:
        """Create every label set known from the configuration with value 0.

        ``backends`` are ``(protocol, backend name)`` pairs. Without this, a
        counter's first increment is invisible to ``increase()`` (Prometheus
        takes a new series' first sample as its baseline) and panels show
        "no data" instead of 0.
        """
        for protocol, backend in backends:
            self.connections_active.labels(protocol, backend)
            self.connections_total.labels(protocol, backend)
            for reason in AUTH_FAILURE_REASONS:
                self.auth_failures.labels(protocol, backend, reason)
            self.rows_returned.labels(protocol, backend)
            for kind in _BACKEND_ERROR_KINDS:
                self.backend_errors.labels(protocol, backend, kind)
            self.proxy_seconds.labels(protocol, backend)
            self.backend_seconds.labels(protocol, backend)
            self.sensitive_columns_read.labels(backend)
            for decision in _DECISIONS:
                self.sensitive_statements.labels(protocol, backend, decision)
            for outcome in ("masked", "refused"):
                self.masked_results.labels(backend, outcome)
        for sink in sinks:
            self.audit_sink_lag.labels(sink)
            self.audit_sink_errors.labels(sink)
            self.audit_sink_delivered.labels(sink)
            # audit_sink_up is left to the pipeline: a 0 before the first delivery would read as "down".
        for kind in _AUDIT_KINDS:
            self.audit_events.labels(kind)
        for result in ("hit", "miss"):
            self.decision_cache.labels(result)
        for result in ("ok", "failed"):
            self.policy_reloads.labels(result)
        if max_connections is not None:
            self.connections_limit.set(max_connections)
        if spool_capacity_bytes is not None:
            self.audit_spool_capacity.set(spool_capacity_bytes)

    def recorder(self, *, protocol: str, backend: str, person: str) -> StatementRecorder:
        """The per-statement metrics of one session: plain counters, summed with the others' at scrape time.

        When person labels are on, the person's series are created at 0 here, so
        ``increase()`` sees their first statements and rows (the bulk-read alert depends on it).
        """
        label = self.person_label(person)
        if label is not None:
            for d in _DECISIONS:
                self.statements_by_person.labels(label, d)
            self.person_rows.labels(label)
        return StatementRecorder(self.statement_totals, protocol=protocol, backend=backend, person=label)

    def person_label(self, person: str) -> str | None:
        """The person label to use, or None when person labels are off. Capped."""
        if not self.person_labels:
            return None
        with self._lock:
            if person in self._persons:
                return person
            if len(self._persons) < self.person_cap:
                self._persons.add(person)
                return person
        return OTHER_PERSONS

    def observe_masking(self, backend: str, plans: Sequence[MaskedResult]) -> None:
        """Count one statement's results sent with masked columns, or refused.

        Masked values themselves are counted by the masking planner's maskers
        as they run (``masked_values``), exactly and by function.
        """
        for plan in plans:
            outcome = "refused" if plan.refuse is not None else "masked"
            self.masked_results.labels(backend, outcome).inc()

    def set_policy_version(self, version: str) -> None:
        # One series only: the old version's series disappears, so
        # ``sqlbastion_policy_info`` always answers "which version is in force".
        with self._lock:
            self.policy_info.clear()
            self.policy_info.labels(version=version).set(1)

    def record_policy_reload(self, *, ok: bool, version: str | None) -> None:
        """Count one reload attempt; on success, ``version`` is the policy now in force."""
        self.policy_reloads.labels("ok" if ok else "failed").inc()
        self.policy_last_reload_ok.set(1 if ok else 0)
        self.policy_last_reload_time.set(time.time())
        if ok and version is not None:
            self.set_policy_version(version)


METRICS = Metrics()
