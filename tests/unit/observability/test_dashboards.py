"""Grafana dashboards, provisioning files and Prometheus rules: structure, references, syntax."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sqlbastion.observability import grafana
from sqlbastion.observability.metrics import Metrics
from sqlbastion.observability.queries import (
    alert_signals,
    annotation_queries,
    dashboard_files,
    expand_promql,
    expand_sql,
    iter_panels,
    load_dashboard,
    panel_queries,
    rule_queries,
)

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "dashboards" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
RULES = ROOT / "dashboards" / "prometheus" / "sqlbastion-alerts.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
VARIABLES = {"instance": ".*", "backend": ".*", "person": ".*"}


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: load_dashboard(p) for p in dashboard_files(DASHBOARDS)}


def provisioned_datasources() -> dict[str, str]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "sqlbastion.yaml").read_text())
    return {d["uid"]: d["type"] for d in doc["datasources"]}


def test_committed_dashboards_match_the_generator() -> None:
    generated = grafana.dashboards()
    committed = {p.name: p.read_text(encoding="utf-8") for p in dashboard_files(DASHBOARDS)}
    assert sorted(committed) == sorted(generated)
    for name, dashboard in generated.items():
        assert committed[name] == grafana.dumps(dashboard), (
            f"{name} differs from sqlbastion.observability.grafana: "
            "run python -m sqlbastion.observability.grafana dashboards/grafana/dashboards"
        )


def test_four_dashboards_with_unique_uids_and_titles() -> None:
    boards = all_dashboards()
    assert len(boards) == 4
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    assert all(len(u) <= 40 for u in uids)  # Grafana's uid limit
    assert len({b["title"] for b in boards.values()}) == 4


@pytest.mark.parametrize("name", sorted(p.name for p in dashboard_files(DASHBOARDS)))
def test_dashboard_structure(name: str) -> None:
    board = load_dashboard(DASHBOARDS / name)
    assert board["schemaVersion"] == grafana.SCHEMA_VERSION
    assert isinstance(board["title"], str)
    assert board["title"]
    panels = list(iter_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique within a dashboard"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"panel {p['title']!r} overlaps another"
        occupied |= cells
        if p["type"] != "row":
            assert p["targets"], f"panel {p['title']!r} has no query"
            assert p["title"]


@pytest.mark.parametrize("name", sorted(p.name for p in dashboard_files(DASHBOARDS)))
def test_datasource_references_match_provisioning(name: str) -> None:
    provisioned = provisioned_datasources()
    board = load_dashboard(DASHBOARDS / name)
    refs: list[dict[str, str]] = []
    for p in iter_panels(board):
        if p["type"] == "row":
            continue
        refs.append(p["datasource"])
        refs.extend(t["datasource"] for t in p["targets"])
    refs.extend(v["datasource"] for v in board["templating"]["list"] if "datasource" in v)
    refs.extend(a["datasource"] for a in board["annotations"]["list"] if not a.get("builtIn"))
    assert refs
    for ref in refs:
        assert ref["uid"] in provisioned, f"{name}: data source uid {ref['uid']!r} is not provisioned"
        assert provisioned[ref["uid"]] == ref["type"]


@pytest.mark.parametrize("name", sorted(p.name for p in dashboard_files(DASHBOARDS)))
def test_every_variable_used_is_defined(name: str) -> None:
    board = load_dashboard(DASHBOARDS / name)
    defined = {v["name"] for v in board["templating"]["list"]}
    used: set[str] = set()
    for q in panel_queries(board):
        used |= {a or b for a, b in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)", q.query) if not (a or b).startswith("__")}
    assert used <= defined, f"undefined variables: {used - defined}"


def test_prometheus_selectors_carry_the_instance_matcher() -> None:
    for board in all_dashboards().values():
        for q in panel_queries(board) + annotation_queries(board):
            if q.datasource_type != "prometheus":
                continue
            for selector in re.findall(r"\b(sqlbastion_\w+|process_\w+)\{([^}]*)\}", q.query):
                assert 'instance=~"$instance"' in selector[1], f"{q.title}: {selector[0]} lacks the instance matcher"


def test_every_prometheus_metric_in_the_dashboards_and_rules_exists() -> None:
    """Each metric name a query uses is one the registry exports (a typo would be a dead panel)."""
    exported = {m.name for m in Metrics().registry.collect()}
    names: set[str] = set()
    exprs = [q.query for b in all_dashboards().values() for q in panel_queries(b) if q.datasource_type == "prometheus"]
    exprs += [r.expr for r in rule_queries(yaml.safe_load(RULES.read_text()))]
    for expr in exprs:
        names |= set(re.findall(r"\b((?:sqlbastion|process)_\w+)", expr))
    suffixes = ("_bucket", "_sum", "_count", "_total")
    missing = set()
    for n in names:
        base = n
        for s in suffixes:
            if n.endswith(s):
                base = n[: -len(s)]
                break
        if n not in exported and base not in exported:
            missing.add(n)
    assert not missing, f"unknown metrics: {sorted(missing)}"


def test_prometheus_queries_parse_with_promtool(tmp_path: Path) -> None:
    """promtool parses every expanded dashboard expression (as recording rules)."""
    rules = []
    for board in all_dashboards().values():
        for q in panel_queries(board) + annotation_queries(board):
            if q.datasource_type == "prometheus":
                expr = expand_promql(q.query, rate_interval="1m", range_="1h", interval="15s", variables=VARIABLES)
                rules.append({"record": f"check:{q.dashboard.replace('-', '_')}:{q.panel_id}_{q.ref_id}", "expr": expr})
    for board in all_dashboards().values():
        for v in board["templating"]["list"]:
            if v.get("datasource", {}).get("type") == "prometheus":
                inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["definition"])
                assert inner, v["definition"]
                expr = expand_promql(
                    inner.group(1), rate_interval="1m", range_="1h", interval="15s", variables=VARIABLES
                )
                rules.append({"record": f"check:variable_{v['name']}", "expr": expr})
    assert len(rules) > 40
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_prometheus_config_passes_promtool() -> None:
    config = ROOT / "dashboards" / "prometheus" / "prometheus.yml"
    result = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_the_required_conditions() -> None:
    rules = {r.name: r for r in rule_queries(yaml.safe_load(RULES.read_text()))}
    for name in (
        "SqlbastionBlockedStatementSpike",
        "SqlbastionAuthFailureBurst",
        "SqlbastionBulkRead",
        "SqlbastionAuditSinkDown",
        "SqlbastionAuditSinkLagging",
        "SqlbastionAuditSpoolNearlyFull",
        "SqlbastionAuditEventsLost",
        "SqlbastionPolicyReloadFailed",
    ):
        assert name in rules
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("info", "warning", "critical")
            assert rule["labels"]["component"] in ("security", "audit", "proxy")
            assert rule["annotations"]["summary"]
    # no rule labels a series by anything a peer chooses
    for r in rules.values():
        assert "client_address" not in r.expr
        assert "sql" not in re.sub(r"sqlbastion", "", r.expr)


def test_alert_signals_strip_thresholds_and_split_set_operations() -> None:
    assert alert_signals("sum by (a) (increase(x_total[5m])) > 20") == ["sum by (a) (increase(x_total[5m]))"]
    assert alert_signals("min(up_g) == 0\nand on (instance, sink)\nsum(y) > 0") == ["min(up_g)", "sum(y)"]
    assert alert_signals('x{l="a and b"} >= 1e6') == ['x{l="a and b"}']
    assert alert_signals("a / on (i) b > 0.9") == ["a / on (i) b"]
    assert alert_signals("candy > bool 1 or sandy") == ["candy", "sandy"]


def test_expand_promql_and_sql() -> None:
    expr = 'rate(m{instance=~"$instance",b=~"${backend}"}[$__rate_interval]) + increase(m[$__range])'
    out = expand_promql(
        expr, rate_interval="30s", range_="1h", interval="5s", variables={"instance": "i", "backend": "b"}
    )
    assert out == 'rate(m{instance=~"i",b=~"b"}[30s]) + increase(m[1h])'
    with pytest.raises(KeyError):
        expand_promql("$nope", rate_interval="1m", range_="1h", interval="1m", variables={})
    sql = "SELECT $__timeGroupAlias(ts, '1m'), count(*) FROM t WHERE $__timeFilter(ts) AND p IN ($person)"
    out = expand_sql(sql, time_from="'2020-01-01'", time_to="now()", variables={"person": "'a','b'"})
    assert "ts BETWEEN '2020-01-01' AND now()" in out
    assert "floor(extract(epoch from ts) / 60) * 60) AS time" in out
    assert "IN ('a','b')" in out


def test_provisioning_files() -> None:
    provisioned = provisioned_datasources()
    assert provisioned == {grafana.PROMETHEUS_UID: "prometheus", grafana.AUDIT_UID: "grafana-postgresql-datasource"}
    ds_doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "sqlbastion.yaml").read_text())
    assert ds_doc["apiVersion"] == 1
    for ds in ds_doc["datasources"]:
        # secrets come from the environment, never from the file
        for value in (ds.get("secureJsonData") or {}).values():
            assert re.fullmatch(r"\$\{\w+\}", value)
    dash_doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sqlbastion.yaml").read_text())
    [provider] = dash_doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


def _label_names() -> dict[str, set[str]]:
    """Metric name (as exported, with suffixes) → its label names, plus Prometheus's target labels."""
    out: dict[str, set[str]] = {}
    m = Metrics()
    for family in m.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    for collector in vars(m).values():
        names = getattr(collector, "_labelnames", None)
        name = getattr(collector, "_name", None)
        if names is not None and name:
            for suffix in ("", "_total", "_bucket", "_sum", "_count"):
                out.setdefault(name + suffix, set()).update(names)
    for labels in out.values():
        labels |= {"instance", "job", "le"}
    return out


def _grouped(expr: str) -> list[tuple[set[str], str]]:
    """Each ``by (labels) (argument)`` / ``by (labels)`` clause: the labels and the argument it aggregates."""
    out = []
    for m in re.finditer(r"\bby\s*\(([^)]*)\)\s*\(", expr):
        depth, i = 1, m.end()
        while depth and i < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[i], 0)
            i += 1
        labels = {label.strip() for label in m.group(1).split(",") if label.strip()}
        out.append((labels, expr[m.end() : i - 1]))
    return out


def test_aggregations_group_by_labels_the_metrics_have() -> None:
    """``sum by (rule_id) (metric)`` over a metric without rule_id would chart one meaningless series."""
    known = _label_names()
    exprs = [q.query for b in all_dashboards().values() for q in panel_queries(b) if q.datasource_type == "prometheus"]
    exprs += [r.expr for r in rule_queries(yaml.safe_load(RULES.read_text()))]
    checked = 0
    for expr in exprs:
        for labels, argument in _grouped(expr):
            metrics = set(re.findall(r"\b((?:sqlbastion|process)_\w+|up)\b", argument))
            for metric in metrics:
                assert metric in known, f"{metric} in {expr}"
                missing = labels - known[metric]
                assert not missing, f"{expr}: {metric} has no label {sorted(missing)}"
                checked += 1
    assert checked > 50


def test_legends_name_labels_the_result_has() -> None:
    known = _label_names()
    for board in all_dashboards().values():
        for q in panel_queries(board):
            used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", q.legend))
            if not used or q.datasource_type != "prometheus":
                continue
            grouped = _grouped(q.query)
            if grouped:
                available = set().union(*(labels for labels, _ in grouped))
            else:
                metrics = set(re.findall(r"\b((?:sqlbastion|process)_\w+)\b", q.query))
                available = set().union(*(known[m] for m in metrics))
            assert used <= available, f"{q.dashboard} / {q.title}: legend {q.legend!r} names {sorted(used - available)}"


def test_annotations() -> None:
    boards = {b["uid"]: b for b in all_dashboards().values()}
    overview = annotation_queries(boards["sqlbastion-overview"])
    explorer = annotation_queries(boards["sqlbastion-audit-explorer"])
    assert [q.datasource_type for q in overview] == ["prometheus"]
    assert [q.datasource_type for q in explorer] == ["grafana-postgresql-datasource"]
    assert "policy_reloaded" in explorer[0].query
