"""Prometheus metrics, with bounded label cardinality (DESIGN.md, decision 9).

Labels take values from closed sets only: protocol, backend name (from the
configuration), statement type (from the analyser's closed vocabulary),
decision, rule id (from the rule catalogue and the policy), masking function
(from the catalogue), sink name. Never raw SQL. Persons appear only when
``admin.metrics_person_labels`` is on, capped at ``metrics_person_label_cap``
distinct persons; the rest are counted under ``_other``.

The proxies and the session call the methods of ``METRICS``; the admin
endpoint serves the registry.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

__all__ = ["METRICS", "Metrics"]

# Latency buckets from 50 µs to 10 s: the proxy's own overhead lives in the
# first few, backend time in the rest.
_LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


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
        self.connections_active = Gauge(
            "sqlbastion_client_connections_active", "Client connections open now", ["protocol", "backend"], registry=r
        )
        self.connections_total = Counter(
            "sqlbastion_client_connections_total", "Client connections accepted", ["protocol", "backend"], registry=r
        )
        self.auth_failures = Counter(
            "sqlbastion_auth_failures_total",
            "Failed person authentications",
            ["protocol", "backend", "reason"],
            registry=r,
        )
        self.statements = Counter(
            "sqlbastion_statements_total",
            "Statements decided, by type, decision and rule",
            ["protocol", "backend", "statement_type", "decision", "rule_id"],
            registry=r,
        )
        self.statements_by_person = Counter(
            "sqlbastion_person_statements_total",
            "Statements decided per person (only when person labels are enabled)",
            ["person", "decision"],
            registry=r,
        )
        self.proxy_seconds = Histogram(
            "sqlbastion_proxy_seconds",
            "Time spent in sqlbastion per statement (analysis, decision, masking)",
            ["protocol", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_seconds = Histogram(
            "sqlbastion_backend_seconds",
            "Time the backend took per statement",
            ["protocol", "backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_errors = Counter(
            "sqlbastion_backend_errors_total",
            "Errors returned by or talking to the backend",
            ["protocol", "backend", "kind"],
            registry=r,
        )
        self.masked_values = Counter(
            "sqlbastion_masked_values_total", "Values masked, by masking function", ["backend", "function"], registry=r
        )
        self.rows_returned = Counter(
            "sqlbastion_rows_returned_total", "Result rows sent to clients", ["protocol", "backend"], registry=r
        )
        self.person_rows = Counter(
            "sqlbastion_person_rows_returned_total",
            "Result rows sent per person (only when person labels are enabled)",
            ["person"],
            registry=r,
        )
        self.sensitive_reads = Counter(
            "sqlbastion_sensitive_column_reads_total",
            "Statements that read a classified column, by sensitivity type",
            ["backend", "type"],
            registry=r,
        )
        self.decision_cache = Counter(
            "sqlbastion_decision_cache_total", "Decision cache lookups", ["result"], registry=r
        )
        self.audit_events = Counter("sqlbastion_audit_events_total", "Audit events emitted", ["kind"], registry=r)
        self.audit_lost = Counter(
            "sqlbastion_audit_events_lost_total", "Audit events lost (fail_open only)", registry=r
        )
        self.audit_spool_bytes = Gauge("sqlbastion_audit_spool_bytes", "Bytes held in the audit spool", registry=r)
        self.audit_spool_capacity = Gauge(
            "sqlbastion_audit_spool_capacity_bytes", "Configured maximum spool size", registry=r
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
        self.policy_reloads = Counter("sqlbastion_policy_reloads_total", "Policy reloads", ["result"], registry=r)
        self.policy_info = Gauge(
            "sqlbastion_policy_info", "The policy version in force (value 1)", ["version"], registry=r
        )
        self.audit_refusals = Counter(
            "sqlbastion_audit_refusals_total",
            "Statements refused because the audit spool could not record them",
            registry=r,
        )

    def configure(self, *, person_labels: bool, person_cap: int) -> None:
        self.person_labels = person_labels
        self.person_cap = person_cap

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
        return "_other"

    def set_policy_version(self, version: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(version=version).set(1)


METRICS = Metrics()
