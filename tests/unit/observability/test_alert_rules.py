"""Alert rule semantics with ``promtool test rules``: synthetic series in, firing alerts out.

The shipped rules are copied without their annotations (their templates are
checked by ``promtool check rules``; here only expressions, ``for`` windows and
labels matter), then each scenario states which alerts fire, and with which
labels, at a given time. Series notation is promtool's: ``0+10x5`` is
0, 10, … 50 at successive intervals; ``_`` is a missing sample.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "dashboards" / "prometheus" / "sqlbastion-alerts.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

I = 'instance="sb1:9187",job="sqlbastion"'  # noqa: E741  # the scrape labels every series carries


def stmt(decision: str, rule: str, backend: str = "core", stype: str = "select") -> str:
    return (
        f'sqlbastion_statements_total{{{I},protocol="mysql",backend="{backend}",'
        f'statement_type="{stype}",decision="{decision}",rule_id="{rule}"}}'
    )


def auth_failures(protocol: str, backend: str) -> str:
    return f'sqlbastion_auth_failures_total{{{I},protocol="{protocol}",backend="{backend}",reason="bad_credentials"}}'


SECURITY = {"component": "security"}
AUDIT = {"component": "audit"}
PROXY = {"component": "proxy"}

SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "blocked spike: a steady rule over the threshold fires, a slow one does not",
        "interval": "1m",
        "input_series": [
            {"series": stmt("block", "HR-DDL-DROP"), "values": "0+10x10"},
            {"series": stmt("block", "HR-SLOW"), "values": "0+1x10"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "8m",
                "alertname": "SqlbastionBlockedStatementSpike",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            **SECURITY,
                            "instance": "sb1:9187",
                            "backend": "core",
                            "rule_id": "HR-DDL-DROP",
                        }
                    }
                ],
            }
        ],
    },
    {
        "name": "blocked spike: a rule's first burst (its series is born at 25) fires",
        "interval": "1m",
        "input_series": [
            {"series": stmt("block", "HR-NEW"), "values": "_x10 25 25 25"},
            {"series": stmt("allow", "none"), "values": "0+100x14"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "SqlbastionBlockedStatementSpike", "exp_alerts": []},
            {
                "eval_time": "12m",
                "alertname": "SqlbastionBlockedStatementSpike",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            **SECURITY,
                            "instance": "sb1:9187",
                            "backend": "core",
                            "rule_id": "HR-NEW",
                        }
                    }
                ],
            },
        ],
    },
    {
        "name": "brute force: 3 failures a minute for 5 minutes fires at once, 1 a minute does not",
        "interval": "1m",
        "input_series": [
            {
                "series": auth_failures("mysql", "core"),
                "values": "0+3x10",
            },
            {
                "series": auth_failures("postgres", "pg"),
                "values": "0+1x10",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "6m",
                "alertname": "SqlbastionAuthFailureBurst",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            **SECURITY,
                            "instance": "sb1:9187",
                            "backend": "core",
                            "protocol": "mysql",
                        }
                    }
                ],
            }
        ],
    },
    {
        "name": "bulk read: one person's 150,000 rows in 10 minutes, including a newly seen person",
        "interval": "1m",
        "input_series": [
            {"series": f'sqlbastion_person_rows_returned_total{{{I},person="carol"}}', "values": "0+15000x20"},
            {"series": f'sqlbastion_person_rows_returned_total{{{I},person="dave"}}', "values": "0+100x20"},
            {"series": f'sqlbastion_person_rows_returned_total{{{I},person="erin"}}', "values": "_x15 200000x5"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "17m",
                "alertname": "SqlbastionBulkRead",
                "exp_alerts": [
                    {"exp_labels": {"severity": "warning", **SECURITY, "instance": "sb1:9187", "person": "carol"}},
                    {"exp_labels": {"severity": "warning", **SECURITY, "instance": "sb1:9187", "person": "erin"}},
                ],
            }
        ],
    },
    {
        "name": "bulk read per backend, for deployments without person labels",
        "interval": "1m",
        "input_series": [
            {
                "series": f'sqlbastion_rows_returned_total{{{I},protocol="mysql",backend="core"}}',
                "values": "0+1000000x15",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": "SqlbastionBackendBulkRead",
                "exp_alerts": [
                    {"exp_labels": {"severity": "info", **SECURITY, "instance": "sb1:9187", "backend": "core"}}
                ],
            }
        ],
    },
    {
        "name": "sink down: failing deliveries for 5 minutes fire; a sink that is down but idle does not",
        "interval": "1m",
        "input_series": [
            {"series": f'sqlbastion_audit_sink_up{{{I},sink="kafka"}}', "values": "1 1 0x15"},
            {"series": f'sqlbastion_audit_sink_errors_total{{{I},sink="kafka"}}', "values": "0 0 1+1x15"},
            {"series": f'sqlbastion_audit_sink_up{{{I},sink="syslog"}}', "values": "0x17"},
            {"series": f'sqlbastion_audit_sink_errors_total{{{I},sink="syslog"}}', "values": "4x17"},
        ],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "SqlbastionAuditSinkDown", "exp_alerts": []},
            {
                "eval_time": "10m",
                "alertname": "SqlbastionAuditSinkDown",
                "exp_alerts": [
                    {"exp_labels": {"severity": "critical", **AUDIT, "instance": "sb1:9187", "sink": "kafka"}}
                ],
            },
        ],
    },
    {
        "name": "sink lagging: over 10,000 events behind for 10 minutes",
        "interval": "1m",
        "input_series": [
            {"series": f'sqlbastion_audit_sink_lag_events{{{I},sink="pg"}}', "values": "0 20000x20"},
            {"series": f'sqlbastion_audit_sink_lag_events{{{I},sink="sqlite"}}', "values": "0 500x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "SqlbastionAuditSinkLagging", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "SqlbastionAuditSinkLagging",
                "exp_alerts": [{"exp_labels": {"severity": "warning", **AUDIT, "instance": "sb1:9187", "sink": "pg"}}],
            },
        ],
    },
    {
        "name": "spool: 85 % for 5 minutes is nearly full, 97 % is full",
        "interval": "1m",
        "input_series": [
            {"series": f"sqlbastion_audit_spool_capacity_bytes{{{I}}}", "values": "1000x20"},
            {"series": f"sqlbastion_audit_spool_bytes{{{I}}}", "values": "100 850x8 970x10"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "8m",
                "alertname": "SqlbastionAuditSpoolNearlyFull",
                "exp_alerts": [{"exp_labels": {"severity": "warning", **AUDIT, "instance": "sb1:9187"}}],
            },
            {"eval_time": "8m", "alertname": "SqlbastionAuditSpoolFull", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "SqlbastionAuditSpoolFull",
                "exp_alerts": [{"exp_labels": {"severity": "critical", **AUDIT, "instance": "sb1:9187"}}],
            },
        ],
    },
    {
        "name": "spool: a zero capacity (not configured yet) never divides into an alert",
        "interval": "1m",
        "input_series": [
            {"series": f"sqlbastion_audit_spool_capacity_bytes{{{I}}}", "values": "0x10"},
            {"series": f"sqlbastion_audit_spool_bytes{{{I}}}", "values": "100x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "SqlbastionAuditSpoolNearlyFull", "exp_alerts": []},
            {"eval_time": "9m", "alertname": "SqlbastionAuditSpoolFull", "exp_alerts": []},
        ],
    },
    {
        "name": "lost events fire at once; audit refusals too",
        "interval": "1m",
        "input_series": [
            {"series": f"sqlbastion_audit_events_lost_total{{{I}}}", "values": "0 0 0 3 3"},
            {"series": f"sqlbastion_audit_refusals_total{{{I}}}", "values": "0 0 0 0 7"},
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "SqlbastionAuditEventsLost", "exp_alerts": []},
            {
                "eval_time": "3m",
                "alertname": "SqlbastionAuditEventsLost",
                "exp_alerts": [{"exp_labels": {"severity": "critical", **AUDIT, "instance": "sb1:9187"}}],
            },
            {
                "eval_time": "4m",
                "alertname": "SqlbastionAuditRefusingStatements",
                "exp_alerts": [{"exp_labels": {"severity": "critical", **AUDIT, "instance": "sb1:9187"}}],
            },
        ],
    },
    {
        "name": "policy reload failed until a reload succeeds",
        "interval": "1m",
        "input_series": [{"series": f"sqlbastion_policy_last_reload_ok{{{I}}}", "values": "1 0 0 1"}],
        "alert_rule_test": [
            {
                "eval_time": "2m",
                "alertname": "SqlbastionPolicyReloadFailed",
                "exp_alerts": [{"exp_labels": {"severity": "warning", **PROXY, "instance": "sb1:9187"}}],
            },
            {"eval_time": "3m", "alertname": "SqlbastionPolicyReloadFailed", "exp_alerts": []},
        ],
    },
    {
        "name": "down, connection slots and event loop lag",
        "interval": "1m",
        "input_series": [
            {"series": f"up{{{I}}}", "values": "1 0x5"},
            {"series": f"sqlbastion_client_connections_limit{{{I}}}", "values": "100x10"},
            {
                "series": f'sqlbastion_client_connections_active{{{I},protocol="mysql",backend="core"}}',
                "values": "95x10",
            },
            {"series": f"sqlbastion_event_loop_lag_seconds{{{I}}}", "values": "0.5x10"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "4m",
                "alertname": "SqlbastionDown",
                "exp_alerts": [
                    {"exp_labels": {"severity": "critical", **PROXY, "instance": "sb1:9187", "job": "sqlbastion"}}
                ],
            },
            {
                "eval_time": "6m",
                "alertname": "SqlbastionConnectionsNearLimit",
                "exp_alerts": [{"exp_labels": {"severity": "warning", **PROXY, "instance": "sb1:9187"}}],
            },
            {
                "eval_time": "6m",
                "alertname": "SqlbastionEventLoopLag",
                "exp_alerts": [{"exp_labels": {"severity": "warning", **PROXY, "instance": "sb1:9187"}}],
            },
        ],
    },
    {
        "name": "backend connect errors sustained for 5 minutes",
        "interval": "1m",
        "input_series": [
            {
                "series": f'sqlbastion_backend_errors_total{{{I},protocol="postgres",backend="pg",kind="connect"}}',
                "values": "0+30x15",
            },
            {
                "series": f'sqlbastion_backend_errors_total{{{I},protocol="postgres",backend="pg",kind="statement"}}',
                "values": "0+300x15",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "12m",
                "alertname": "SqlbastionBackendConnectErrors",
                "exp_alerts": [
                    {"exp_labels": {"severity": "critical", **PROXY, "instance": "sb1:9187", "backend": "pg"}}
                ],
            }
        ],
    },
]


@pytest.fixture(scope="module")
def rules_without_annotations(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path = tmp_path_factory.mktemp("rules") / "rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_alert_scenario(scenario: dict[str, Any], rules_without_annotations: Path) -> None:
    test_file = rules_without_annotations.parent / "test.yml"
    body = {k: v for k, v in scenario.items() if k != "name"}
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_without_annotations)], "evaluation_interval": "1m", "tests": [body]},
            sort_keys=False,
        )
    )
    result = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_scenario() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for s in SCENARIOS for t in s["alert_rule_test"]}
    assert names <= tested, f"alerts without a scenario: {sorted(names - tested)}"
