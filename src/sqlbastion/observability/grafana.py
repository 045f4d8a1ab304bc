"""sqlbastion's Grafana dashboards, written as code and rendered to dashboards/grafana/dashboards/*.json.

Why code: four dashboards share selectors, units, data source references and
layout rules; generating them keeps panel ids unique, every reference pointing
at a provisioned data source uid, and every selector honouring the dashboard
variables. The JSON files are committed (Grafana provisions them as files) and
a test fails when they drift from this module. Regenerate with::

    python -m sqlbastion.observability.grafana dashboards/grafana/dashboards

Data sources (dashboards/grafana/provisioning/datasources/sqlbastion.yaml):
Prometheus with uid ``sqlbastion-prometheus`` and the PostgreSQL audit sink
with uid ``sqlbastion-audit``.

Every PromQL selector carries ``instance=~"$instance"`` (several sqlbastion
processes behind one Prometheus) and, where the metric has one, a
``backend=~"$backend"`` matcher. Person panels read the person-labelled
series, which exist only when ``admin.metrics_person_labels`` is on.
"""

# Queries and descriptions are data, kept whole so they read as they do in Grafana (E501); the SQL
# is fixed text for Grafana's PostgreSQL data source, never built from input (S608).
# ruff: noqa: E501, S608

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AUDIT_UID", "PROMETHEUS_UID", "SCHEMA_VERSION", "dashboards", "render", "write"]

SCHEMA_VERSION = 39  # Grafana 10.4 / 11
PROMETHEUS_UID = "sqlbastion-prometheus"
AUDIT_UID = "sqlbastion-audit"
PROM = {"type": "prometheus", "uid": PROMETHEUS_UID}
AUDIT_PG = {"type": "grafana-postgresql-datasource", "uid": AUDIT_UID}
AUDIT_TABLE = "sqlbastion_audit"

I = 'instance=~"$instance"'  # noqa: E741  # short on purpose: it is in every selector
B = 'backend=~"$backend"'
RI = "$__rate_interval"


@dataclass(kw_only=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, table, bargauge
    targets: list[tuple[str, str]]  # (query, legend)
    description: str = ""
    unit: str = "short"
    width: int = 12
    height: int = 8
    sql: bool = False
    stack: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    decimals: int | None = None
    max_value: float | None = None
    instant: bool = False
    text_mode: str = "auto"  # stat panels: "name" shows the legend (a version string) instead of the value


@dataclass(kw_only=True)
class Row:
    title: str
    panels: list[Panel]


@dataclass(kw_only=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[dict[str, Any]]
    tags: tuple[str, ...] = ("sqlbastion",)
    time_from: str = "now-6h"
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _prom_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROM,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
    }


INSTANCE_VAR = _prom_variable("instance", "Instance", "label_values(sqlbastion_build_info, instance)")
BACKEND_VAR = _prom_variable("backend", "Backend", f"label_values(sqlbastion_client_connections_total{{{I}}}, backend)")
PERSON_VAR = _prom_variable("person", "Person", f"label_values(sqlbastion_person_statements_total{{{I}}}, person)")


def _panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    ds = AUDIT_PG if panel.sql else PROM
    targets: list[dict[str, Any]] = []
    for n, (query, legend) in enumerate(panel.targets):
        ref = chr(ord("A") + n)
        if panel.sql:
            fmt = "table" if panel.kind == "table" else "time_series"
            targets.append(
                {"refId": ref, "datasource": ds, "rawSql": query, "format": fmt, "rawQuery": True, "editorMode": "code"}
            )
        else:
            target: dict[str, Any] = {"refId": ref, "datasource": ds, "expr": query, "legendFormat": legend}
            if panel.instant or panel.kind in ("table", "bargauge"):
                target |= {
                    "instant": True,
                    "range": False,
                    "format": "table" if panel.kind == "table" else "time_series",
                }
            else:
                target |= {"range": True}
            targets.append(target)
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in panel.thresholds]
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["min"] = 0
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stack else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        options: dict[str, Any] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": panel.text_mode,
            "justifyMode": "auto",
            "orientation": "auto",
        }
    elif panel.kind == "bargauge":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    else:
        options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    return {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": ds,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": targets,
    }


def render(d: Dashboard) -> dict[str, Any]:
    """The dashboard JSON model (Grafana's dashboard JSON, schemaVersion ``SCHEMA_VERSION``)."""
    panels: list[dict[str, Any]] = []
    pid = 0
    y = 0
    for row in d.rows:
        pid += 1
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x = 0
                y += line_height
                line_height = 0
            pid += 1
            panels.append(_panel_json(panel, pid, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": list(d.tags),
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": d.time_from, "to": "now"},
        "timepicker": {},
        "timezone": "",
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                *d.annotations,
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": ["sqlbastion"],
                "asDropdown": True,
                "title": "sqlbastion",
                "icon": "external link",
            }
        ],
        "templating": {"list": d.variables},
        "panels": panels,
    }


# -- the dashboards ------------------------------------------------------------------------


def _overview() -> Dashboard:
    sel = f"{I},{B}"
    return Dashboard(
        uid="sqlbastion-overview",
        title="sqlbastion / Overview",
        description="Traffic, latency, errors and saturation per backend.",
        variables=[INSTANCE_VAR, BACKEND_VAR],
        annotations=[
            {
                "name": "Policy reloads",
                "datasource": PROM,
                "enable": True,
                "iconColor": "purple",
                "expr": f"changes(sqlbastion_policy_last_reload_timestamp_seconds{{{I}}}[2m]) > 0",
                "step": "60s",
                "titleFormat": "Policy reload on {{instance}}",
                "textFormat": "",
                "useValueForTime": False,
            }
        ],
        rows=[
            Row(
                title="Now",
                panels=[
                    Panel(
                        title="Client connections",
                        kind="stat",
                        width=4,
                        height=4,
                        targets=[(f"sum(sqlbastion_client_connections_active{{{sel}}})", "")],
                    ),
                    Panel(
                        title="Statements / s",
                        kind="stat",
                        width=4,
                        height=4,
                        unit="ops",
                        targets=[(f"sum(rate(sqlbastion_statements_total{{{sel}}}[{RI}]))", "")],
                    ),
                    Panel(
                        title="Refused / s",
                        kind="stat",
                        width=4,
                        height=4,
                        unit="ops",
                        thresholds=[(0.1, "orange"), (1, "red")],
                        targets=[
                            (f'sum(rate(sqlbastion_statements_total{{{sel},decision=~"block|review"}}[{RI}]))', "")
                        ],
                    ),
                    Panel(
                        title="p99 time in sqlbastion",
                        kind="stat",
                        width=4,
                        height=4,
                        unit="s",
                        thresholds=[(0.005, "orange"), (0.05, "red")],
                        targets=[
                            (
                                "histogram_quantile(0.99, sum by (le) "
                                f"(rate(sqlbastion_proxy_seconds_bucket{{{sel}}}[{RI}])))",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Connection slots used",
                        kind="stat",
                        width=4,
                        height=4,
                        unit="percentunit",
                        thresholds=[(0.7, "orange"), (0.9, "red")],
                        description="Open client connections over server.max_connections, per process.",
                        targets=[
                            (
                                f"max(sum by (instance) (sqlbastion_client_connections_active{{{I}}})"
                                f" / on (instance) sqlbastion_client_connections_limit{{{I}}})",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Policy version",
                        kind="stat",
                        width=4,
                        height=4,
                        unit="none",
                        description="The version (hash) of the policy in force; every audit event carries it.",
                        targets=[(f"sqlbastion_policy_info{{{I}}}", "{{version}}")],
                        instant=True,
                        text_mode="name",
                    ),
                ],
            ),
            Row(
                title="Traffic",
                panels=[
                    Panel(
                        title="Statements by backend and decision",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f"sum by (backend, decision) (rate(sqlbastion_statements_total{{{sel}}}[{RI}]))",
                                "{{backend}} {{decision}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Statements by type",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f"sum by (statement_type) (rate(sqlbastion_statements_total{{{sel}}}[{RI}]))",
                                "{{statement_type}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Client connections by backend",
                        kind="timeseries",
                        targets=[
                            (
                                f"sum by (backend, protocol) (sqlbastion_client_connections_active{{{sel}}})",
                                "{{backend}} ({{protocol}}) open",
                            ),
                            (
                                f"sum by (backend, protocol) (rate(sqlbastion_client_connections_total{{{sel}}}[{RI}]))",
                                "{{backend}} ({{protocol}}) new / s",
                            ),
                        ],
                    ),
                    Panel(
                        title="Rows returned",
                        kind="timeseries",
                        unit="rowsps",
                        targets=[
                            (
                                f"sum by (backend) (rate(sqlbastion_rows_returned_total{{{sel}}}[{RI}]))",
                                "{{backend}}",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Latency",
                panels=[
                    Panel(
                        title="Time in sqlbastion (analysis, decision, masking)",
                        kind="timeseries",
                        unit="s",
                        targets=[
                            (
                                "histogram_quantile(0.5, sum by (backend, le) "
                                f"(rate(sqlbastion_proxy_seconds_bucket{{{sel}}}[{RI}])))",
                                "{{backend}} p50",
                            ),
                            (
                                "histogram_quantile(0.99, sum by (backend, le) "
                                f"(rate(sqlbastion_proxy_seconds_bucket{{{sel}}}[{RI}])))",
                                "{{backend}} p99",
                            ),
                        ],
                    ),
                    Panel(
                        title="Time in the backend",
                        kind="timeseries",
                        unit="s",
                        targets=[
                            (
                                "histogram_quantile(0.5, sum by (backend, le) "
                                f"(rate(sqlbastion_backend_seconds_bucket{{{sel}}}[{RI}])))",
                                "{{backend}} p50",
                            ),
                            (
                                "histogram_quantile(0.99, sum by (backend, le) "
                                f"(rate(sqlbastion_backend_seconds_bucket{{{sel}}}[{RI}])))",
                                "{{backend}} p99",
                            ),
                        ],
                    ),
                    Panel(
                        title="Mean time per statement",
                        kind="timeseries",
                        unit="s",
                        targets=[
                            (
                                f"sum by (backend) (rate(sqlbastion_proxy_seconds_sum{{{sel}}}[{RI}]))"
                                f" / sum by (backend) (rate(sqlbastion_proxy_seconds_count{{{sel}}}[{RI}]) > 0)",
                                "{{backend}} in sqlbastion",
                            ),
                            (
                                f"sum by (backend) (rate(sqlbastion_backend_seconds_sum{{{sel}}}[{RI}]))"
                                f" / sum by (backend) (rate(sqlbastion_backend_seconds_count{{{sel}}}[{RI}]) > 0)",
                                "{{backend}} in the backend",
                            ),
                        ],
                    ),
                    Panel(
                        title="Decision cache hit ratio",
                        kind="timeseries",
                        unit="percentunit",
                        max_value=1,
                        targets=[
                            (
                                f'sum(rate(sqlbastion_decision_cache_total{{{I},result="hit"}}[{RI}]))'
                                f" / (sum(rate(sqlbastion_decision_cache_total{{{I}}}[{RI}])) > 0)",
                                "hit ratio",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Errors",
                panels=[
                    Panel(
                        title="Backend errors",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (
                                f"sum by (backend, kind) (rate(sqlbastion_backend_errors_total{{{sel}}}[{RI}]))",
                                "{{backend}} {{kind}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Authentication failures",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (
                                f"sum by (backend, reason) (rate(sqlbastion_auth_failures_total{{{sel}}}[{RI}]))",
                                "{{backend}} {{reason}}",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Saturation",
                panels=[
                    Panel(
                        title="Event loop lag",
                        kind="timeseries",
                        unit="s",
                        width=6,
                        description="How late the proxy's event loop ran a timer: every connection waits this long.",
                        targets=[(f"max by (instance) (sqlbastion_event_loop_lag_seconds{{{I}}})", "{{instance}}")],
                    ),
                    Panel(
                        title="CPU",
                        kind="timeseries",
                        unit="percentunit",
                        width=6,
                        description="One core is 100 %: the event loop runs on one core.",
                        targets=[(f"rate(process_cpu_seconds_total{{{I}}}[{RI}])", "{{instance}}")],
                    ),
                    Panel(
                        title="Resident memory",
                        kind="timeseries",
                        unit="bytes",
                        width=6,
                        targets=[(f"process_resident_memory_bytes{{{I}}}", "{{instance}}")],
                    ),
                    Panel(
                        title="File descriptors used",
                        kind="timeseries",
                        unit="percentunit",
                        width=6,
                        description="Each client connection holds two: the client's and the backend's.",
                        targets=[(f"process_open_fds{{{I}}} / process_max_fds{{{I}}}", "{{instance}}")],
                    ),
                ],
            ),
        ],
    )


def _security() -> Dashboard:
    sel = f"{I},{B}"
    p = f'{I},person=~"$person"'
    return Dashboard(
        uid="sqlbastion-security",
        title="sqlbastion / Security",
        description="Blocked and reviewed statements, sensitive columns read, authentication failures, masking.",
        variables=[INSTANCE_VAR, BACKEND_VAR, PERSON_VAR],
        rows=[
            Row(
                title="Refused statements",
                panels=[
                    Panel(
                        title="Blocked statements by rule",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f'sum by (rule_id) (rate(sqlbastion_statements_total{{{sel},decision="block"}}[{RI}]))',
                                "{{rule_id}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Held for review by rule",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f'sum by (rule_id) (rate(sqlbastion_statements_total{{{sel},decision="review"}}[{RI}]))',
                                "{{rule_id}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Refusals by person and rule (time range)",
                        kind="table",
                        description="Needs admin.metrics_person_labels = true.",
                        targets=[
                            (
                                "sort_desc(sum by (person, decision, rule_id) "
                                f"(increase(sqlbastion_person_refusals_total{{{p}}}[$__range])))",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Refusals by person",
                        kind="timeseries",
                        unit="ops",
                        description="Needs admin.metrics_person_labels = true.",
                        targets=[
                            (
                                f"sum by (person, decision) (rate(sqlbastion_person_refusals_total{{{p}}}[{RI}]))",
                                "{{person}} {{decision}}",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Sensitive data",
                panels=[
                    Panel(
                        title="Statements touching sensitive columns",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f"sum by (backend, decision) (rate(sqlbastion_sensitive_statements_total{{{sel}}}[{RI}]))",
                                "{{backend}} {{decision}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Sensitive columns read",
                        kind="timeseries",
                        unit="ops",
                        description="Classified columns referenced by allowed statements, one per column per statement.",
                        targets=[
                            (
                                f"sum by (backend) (rate(sqlbastion_sensitive_columns_read_total{{{sel}}}[{RI}]))",
                                "{{backend}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Masked values by function",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[
                            (
                                f"sum by (function) (rate(sqlbastion_masked_values_total{{{sel}}}[{RI}]))",
                                "{{function}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Results masked or refused",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (
                                f"sum by (backend, outcome) (rate(sqlbastion_masked_results_total{{{sel}}}[{RI}]))",
                                "{{backend}} {{outcome}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Rows returned per person (top 10)",
                        kind="timeseries",
                        unit="rowsps",
                        description="Bulk reads: see the SqlbastionBulkRead alert. Needs person labels.",
                        targets=[
                            (
                                f"topk(10, sum by (person) (rate(sqlbastion_person_rows_returned_total{{{p}}}[{RI}])))",
                                "{{person}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Statements per person by decision",
                        kind="timeseries",
                        unit="ops",
                        description="Needs admin.metrics_person_labels = true.",
                        targets=[
                            (
                                f"sum by (person, decision) (rate(sqlbastion_person_statements_total{{{p}}}[{RI}]))",
                                "{{person}} {{decision}}",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Authentication",
                panels=[
                    Panel(
                        title="Authentication failures (time range)",
                        kind="stat",
                        width=6,
                        thresholds=[(10, "orange"), (100, "red")],
                        targets=[(f"sum(increase(sqlbastion_auth_failures_total{{{sel}}}[$__range]))", "")],
                        instant=True,
                    ),
                    Panel(
                        title="Authentication failures by reason",
                        kind="timeseries",
                        unit="ops",
                        width=18,
                        stack=True,
                        targets=[
                            (
                                f"sum by (backend, protocol, reason) (rate(sqlbastion_auth_failures_total{{{sel}}}[{RI}]))",
                                "{{backend}} ({{protocol}}) {{reason}}",
                            )
                        ],
                    ),
                ],
            ),
        ],
    )


def _audit_pipeline() -> Dashboard:
    return Dashboard(
        uid="sqlbastion-audit-pipeline",
        title="sqlbastion / Audit pipeline",
        description="The durable spool, per-sink delivery lag and errors, lost events, policy reloads.",
        variables=[INSTANCE_VAR],
        rows=[
            Row(
                title="Spool",
                panels=[
                    Panel(
                        title="Spool used",
                        kind="stat",
                        width=6,
                        unit="percentunit",
                        thresholds=[(0.5, "orange"), (0.8, "red")],
                        targets=[
                            (
                                f"max(sqlbastion_audit_spool_bytes{{{I}}}"
                                f" / on (instance) (sqlbastion_audit_spool_capacity_bytes{{{I}}} > 0))",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Lost events (time range)",
                        kind="stat",
                        width=6,
                        thresholds=[(1, "red")],
                        description="Events dropped under on_audit_failure = fail_open. Anything above 0 is an incident.",
                        targets=[(f"sum(increase(sqlbastion_audit_events_lost_total{{{I}}}[$__range]))", "")],
                        instant=True,
                    ),
                    Panel(
                        title="Statements refused by the audit (time range)",
                        kind="stat",
                        width=6,
                        thresholds=[(1, "red")],
                        description="Statements refused under on_audit_failure = fail_closed because the spool could not record them.",
                        targets=[(f"sum(increase(sqlbastion_audit_refusals_total{{{I}}}[$__range]))", "")],
                        instant=True,
                    ),
                    Panel(
                        title="Sinks up",
                        kind="stat",
                        width=6,
                        thresholds=[(1, "green")],
                        targets=[
                            (f"sum(sqlbastion_audit_sink_up{{{I}}}) / count(sqlbastion_audit_sink_up{{{I}}})", "")
                        ],
                        unit="percentunit",
                    ),
                    Panel(
                        title="Spool size",
                        kind="timeseries",
                        unit="bytes",
                        targets=[
                            (f"sqlbastion_audit_spool_bytes{{{I}}}", "{{instance}} used"),
                            (f"sqlbastion_audit_spool_capacity_bytes{{{I}}}", "{{instance}} capacity"),
                        ],
                    ),
                    Panel(
                        title="Audit events emitted by kind",
                        kind="timeseries",
                        unit="ops",
                        stack=True,
                        targets=[(f"sum by (kind) (rate(sqlbastion_audit_events_total{{{I}}}[{RI}]))", "{{kind}}")],
                    ),
                ],
            ),
            Row(
                title="Sinks",
                panels=[
                    Panel(
                        title="Sink lag (events)",
                        kind="timeseries",
                        targets=[(f"max by (sink) (sqlbastion_audit_sink_lag_events{{{I}}})", "{{sink}}")],
                    ),
                    Panel(
                        title="Sink backlog in seconds of traffic",
                        kind="timeseries",
                        unit="s",
                        description="Events a sink has not acknowledged, over the current event rate: roughly how far behind it is.",
                        targets=[
                            (
                                f"max by (sink) (sqlbastion_audit_sink_lag_events{{{I}}})"
                                f" / scalar(sum(rate(sqlbastion_audit_events_total{{{I}}}[{RI}])) > 0)",
                                "{{sink}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Delivered",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (f"sum by (sink) (rate(sqlbastion_audit_sink_delivered_total{{{I}}}[{RI}]))", "{{sink}}")
                        ],
                    ),
                    Panel(
                        title="Delivery errors",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (f"sum by (sink) (rate(sqlbastion_audit_sink_errors_total{{{I}}}[{RI}]))", "{{sink}}")
                        ],
                    ),
                    Panel(
                        title="Sink up",
                        kind="timeseries",
                        unit="bool",
                        targets=[(f"min by (sink) (sqlbastion_audit_sink_up{{{I}}})", "{{sink}}")],
                    ),
                    Panel(
                        title="Lost events and audit refusals",
                        kind="timeseries",
                        unit="ops",
                        targets=[
                            (f"sum(rate(sqlbastion_audit_events_lost_total{{{I}}}[{RI}]))", "lost"),
                            (f"sum(rate(sqlbastion_audit_refusals_total{{{I}}}[{RI}]))", "statements refused"),
                        ],
                    ),
                ],
            ),
            Row(
                title="Policy",
                panels=[
                    Panel(
                        title="Policy reloads",
                        kind="timeseries",
                        unit="short",
                        targets=[
                            (
                                f"sum by (result) (increase(sqlbastion_policy_reloads_total{{{I}}}[{RI}]))",
                                "{{result}}",
                            )
                        ],
                    ),
                    Panel(
                        title="Last reload succeeded",
                        kind="stat",
                        width=6,
                        unit="bool",
                        thresholds=[],
                        targets=[(f"min(sqlbastion_policy_last_reload_ok{{{I}}})", "")],
                    ),
                    Panel(
                        title="Policy version in force",
                        kind="table",
                        width=6,
                        targets=[(f"sqlbastion_policy_info{{{I}}}", "")],
                    ),
                ],
            ),
        ],
    )


# The audit explorer reads the PostgreSQL sink's table (audit/sinks/postgres.py): indexed columns
# event_id, ts, kind, person, backend, protocol, client_address, statement_type, decision,
# rule_ids text[], objects text[], rows; the whole event as jsonb in ``event``.
PERSON_FILTER = "('__all__' IN ($person) OR person IN ($person))"


def _audit_explorer() -> Dashboard:
    t = AUDIT_TABLE
    return Dashboard(
        uid="sqlbastion-audit-explorer",
        title="sqlbastion / Audit explorer",
        description=f"Reads the PostgreSQL audit sink (table {t}) with Grafana's PostgreSQL data source.",
        time_from="now-24h",
        annotations=[
            {
                "name": "Policy reloads",
                "datasource": AUDIT_PG,
                "enable": True,
                "iconColor": "purple",
                "target": {
                    "refId": "Anno",
                    "rawSql": "SELECT ts AS time, 'policy reload: ' || coalesce(event -> 'details' ->> 'result', 'unknown') AS text\n"
                    f"FROM {t}\nWHERE $__timeFilter(ts) AND kind = 'policy_reloaded'\nORDER BY ts",
                    "format": "table",
                    "rawQuery": True,
                    "editorMode": "code",
                },
            }
        ],
        variables=[
            {
                "name": "person",
                "label": "Person",
                "type": "query",
                "datasource": AUDIT_PG,
                "definition": f"SELECT DISTINCT person FROM {t} WHERE person IS NOT NULL ORDER BY 1 LIMIT 1000",
                "query": f"SELECT DISTINCT person FROM {t} WHERE person IS NOT NULL ORDER BY 1 LIMIT 1000",
                "refresh": 2,
                "includeAll": True,
                # Inserted as is: the filters read "'__all__' IN ($person) OR person IN ($person)",
                # which also works while the table has no person yet.
                "allValue": "'__all__'",
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "options": [],
                "sort": 1,
                "hide": 0,
            },
            {
                "name": "event_id",
                "label": "Audit ref",
                "type": "textbox",
                "query": "",
                "current": {"selected": False, "text": "", "value": ""},
                "options": [],
                "hide": 0,
            },
        ],
        rows=[
            Row(
                title="Activity",
                panels=[
                    Panel(
                        title="Statements per minute by decision",
                        kind="timeseries",
                        sql=True,
                        width=24,
                        stack=True,
                        targets=[
                            (
                                "SELECT $__timeGroupAlias(ts, '1m'), decision AS metric, count(*) AS value\n"
                                f"FROM {t}\n"
                                f"WHERE $__timeFilter(ts) AND kind = 'statement' AND {PERSON_FILTER}\n"
                                "GROUP BY 1, 2\nORDER BY 1",
                                "",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                title="Events",
                panels=[
                    Panel(
                        title="Refused statements",
                        kind="table",
                        sql=True,
                        width=24,
                        height=10,
                        description="Blocked and held for review. The statement text is as the audit recorded it (redacted unless the backend keeps raw statements).",
                        targets=[
                            (
                                "SELECT ts AS time, event_id, person, backend, decision,\n"
                                "       array_to_string(rule_ids, ', ') AS rules, event ->> 'reason' AS reason,\n"
                                "       event ->> 'statement_text' AS statement\n"
                                f"FROM {t}\n"
                                "WHERE $__timeFilter(ts) AND kind = 'statement' AND decision IN ('block', 'review')\n"
                                f"  AND {PERSON_FILTER}\n"
                                "ORDER BY ts DESC\nLIMIT 500",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Sensitive columns read, by person",
                        kind="table",
                        sql=True,
                        targets=[
                            (
                                "SELECT person, col AS sensitive_column, count(*) AS statements, sum(rows) AS rows\n"
                                f"FROM {t}, jsonb_array_elements_text(event -> 'sensitive_columns') AS col\n"
                                "WHERE $__timeFilter(ts) AND kind = 'statement' AND decision IN ('allow', 'alert')\n"
                                f"  AND {PERSON_FILTER}\n"
                                "GROUP BY 1, 2\nORDER BY 4 DESC NULLS LAST\nLIMIT 200",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Rows read, by person and backend",
                        kind="table",
                        sql=True,
                        description="Who read the most: bulk reads (see the SqlbastionBulkRead alert).",
                        targets=[
                            (
                                "SELECT person, backend, count(*) AS statements, sum(rows) AS rows\n"
                                f"FROM {t}\n"
                                "WHERE $__timeFilter(ts) AND kind = 'statement' AND decision IN ('allow', 'alert')\n"
                                f"  AND {PERSON_FILTER}\n"
                                "GROUP BY 1, 2\nORDER BY 4 DESC NULLS LAST\nLIMIT 100",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Authentication failures",
                        kind="table",
                        sql=True,
                        targets=[
                            (
                                "SELECT ts AS time, person, client_address, protocol, backend, event ->> 'reason' AS reason\n"
                                f"FROM {t}\n"
                                "WHERE $__timeFilter(ts) AND kind = 'auth_failed'\n"
                                "ORDER BY ts DESC\nLIMIT 500",
                                "",
                            )
                        ],
                    ),
                    Panel(
                        title="Event by audit ref",
                        kind="table",
                        sql=True,
                        width=24,
                        description="Paste the 'Audit ref' from a client's error message into the variable above.",
                        targets=[
                            (
                                "SELECT ts AS time, event_id, kind, person, backend, decision,\n"
                                "       array_to_string(rule_ids, ', ') AS rules, event\n"
                                f"FROM {t}\n"
                                "WHERE event_id = ${event_id:sqlstring}",
                                "",
                            )
                        ],
                    ),
                ],
            ),
        ],
    )


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard JSON."""
    return {
        "sqlbastion-overview.json": render(_overview()),
        "sqlbastion-security.json": render(_security()),
        "sqlbastion-audit-pipeline.json": render(_audit_pipeline()),
        "sqlbastion-audit-explorer.json": render(_audit_explorer()),
    }


def dumps(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in dashboards().items():
        path = directory / name
        path.write_text(dumps(dashboard), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "dashboards/grafana/dashboards")):
        sys.stdout.write(f"{written_path}\n")
