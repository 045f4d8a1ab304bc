"""Every query in sqlbastion's Grafana dashboards and Prometheus rules, extracted for checking.

The integration tests run each PromQL expression against a real Prometheus
and each audit-explorer SQL query against a real PostgreSQL audit sink; the
unit tests check the dashboards' structure. Both read the files through the
helpers here, so a panel or rule added to a file is checked without touching
the tests.

Grafana's template variables and macros are expanded the way Grafana would,
with values the caller chooses (``expand_promql``, ``expand_sql``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PanelQuery",
    "RuleQuery",
    "alert_signals",
    "annotation_queries",
    "dashboard_files",
    "expand_promql",
    "expand_sql",
    "iter_panels",
    "load_dashboard",
    "panel_queries",
    "rule_queries",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class PanelQuery:
    dashboard: str  # the dashboard's uid
    panel_id: int
    title: str
    ref_id: str
    datasource_type: str
    datasource_uid: str
    query: str  # PromQL for Prometheus targets, SQL for PostgreSQL targets
    legend: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RuleQuery:
    group: str
    name: str  # the alert or recording rule name
    kind: str  # "alert" or "record"
    expr: str
    for_: str = "0s"
    labels: Mapping[str, str] | None = None


def dashboard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every target of every panel, with the data source resolved (the panel's when the target has none)."""
    out: list[PanelQuery] = []
    uid = str(dashboard.get("uid", ""))
    for panel in iter_panels(dashboard):
        panel_ds = panel.get("datasource") or {}
        for target in panel.get("targets", []):
            ds = target.get("datasource") or panel_ds
            ds_type = str(ds.get("type", ""))
            query = target.get("expr") if ds_type == "prometheus" else target.get("rawSql")
            if not query:
                continue
            out.append(
                PanelQuery(
                    dashboard=uid,
                    panel_id=int(panel["id"]),
                    title=str(panel.get("title", "")),
                    ref_id=str(target.get("refId", "")),
                    datasource_type=ds_type,
                    datasource_uid=str(ds.get("uid", "")),
                    query=str(query),
                    legend=str(target.get("legendFormat", "")),
                )
            )
    return out


def annotation_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    """Every annotation query (Grafana's built-in one has none), as a ``PanelQuery`` with ``panel_id`` 0."""
    out: list[PanelQuery] = []
    for n, annotation in enumerate(dashboard.get("annotations", {}).get("list", [])):
        ds = annotation.get("datasource") or {}
        target = annotation.get("target") or {}
        query = annotation.get("expr") or target.get("rawSql") or target.get("expr")
        if not query:
            continue
        out.append(
            PanelQuery(
                dashboard=str(dashboard.get("uid", "")),
                panel_id=0,
                title=f"annotation {annotation.get('name', n)}",
                ref_id=str(target.get("refId", "Anno")),
                datasource_type=str(ds.get("type", "")),
                datasource_uid=str(ds.get("uid", "")),
                query=str(query),
            )
        )
    return out


def rule_queries(document: Mapping[str, Any]) -> list[RuleQuery]:
    """Every rule of a Prometheus rule file (already parsed from YAML)."""
    out: list[RuleQuery] = []
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            kind = "alert" if "alert" in rule else "record"
            out.append(
                RuleQuery(
                    group=str(group["name"]),
                    name=str(rule.get("alert") or rule.get("record")),
                    kind=kind,
                    expr=str(rule["expr"]),
                    for_=str(rule.get("for", "0s")),
                    labels=dict(rule.get("labels") or {}),
                )
            )
    return out


_SET_OPERATORS = ("and", "or", "unless")
_COMPARISON_TAIL = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?[0-9.eE+]+\s*$")


def _split_top_level(expr: str) -> list[str]:
    """Split at ``and`` / ``or`` / ``unless`` outside parentheses, braces and strings (with their modifiers)."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
            for op in _SET_OPERATORS:
                end = i + len(op)
                if expr.startswith(op, i) and (end == len(expr) or not (expr[end].isalnum() or expr[end] == "_")):
                    parts.append(expr[start:i])
                    # skip a modifier: on (...) / ignoring (...)
                    rest = expr[end:]
                    m = re.match(r"\s*(?:on|ignoring)\s*\([^)]*\)", rest)
                    start = end + (m.end() if m else 0)
                    i = start - 1
                    break
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


def alert_signals(expr: str) -> list[str]:
    """The series an alert expression compares, without the threshold.

    An alert's expression returns nothing while it is not firing, so "does
    this rule see data" is asked of its operands: ``A > 20 and on (x) B > 0``
    gives ``[A, B]``. A rule whose operands return nothing watches a metric
    that does not exist (a typo, a renamed metric, a label nobody sets).
    """
    return [_COMPARISON_TAIL.sub("", part).strip() for part in _split_top_level(expr)]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_promql(expr: str, *, rate_interval: str, range_: str, interval: str, variables: Mapping[str, str]) -> str:
    """Grafana's expansion of a PromQL target: ``$__rate_interval``, ``$__range``, ``$__interval``, ``$var``.

    Raises KeyError for a variable the dashboard uses but ``variables`` lacks,
    so a panel cannot silently depend on a variable nobody defined.
    """
    builtins = {"__rate_interval": rate_interval, "__range": range_, "__interval": interval}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        return variables[name]

    return _VARIABLE.sub(sub, expr)


_TIME_FILTER = re.compile(r"\$__timeFilter\((\w+)\)")
_TIME_GROUP = re.compile(r"\$__timeGroupAlias\((\w+),\s*'?(\w+)'?\)")
_INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def expand_sql(sql: str, *, time_from: str, time_to: str, variables: Mapping[str, str]) -> str:
    """Grafana's PostgreSQL macros (``$__timeFilter``, ``$__timeGroupAlias``) and ``$var`` / ``${var}``.

    ``time_from`` and ``time_to`` are SQL timestamp literals. Variable values
    are inserted as given: a caller quotes them as Grafana's ``sqlstring``
    format would.
    """

    def time_filter(m: re.Match[str]) -> str:
        return f"{m.group(1)} BETWEEN {time_from} AND {time_to}"

    def time_group(m: re.Match[str]) -> str:
        column, interval = m.group(1), m.group(2)
        seconds = int(interval[:-1]) * _INTERVALS[interval[-1]]
        return f"to_timestamp(floor(extract(epoch from {column}) / {seconds}) * {seconds}) AS time"

    sql = _TIME_FILTER.sub(time_filter, sql)
    sql = _TIME_GROUP.sub(time_group, sql)

    def sub(m: re.Match[str]) -> str:
        return variables[m.group(1) or m.group(2)]

    return _VARIABLE.sub(sub, sql)
