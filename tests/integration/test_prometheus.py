"""A real Prometheus scrapes sqlbastion while real clients run traffic through the proxies.

Then every PromQL expression of every dashboard panel and every alert rule is
asked of Prometheus's HTTP API: each must return data (no dead panels, no
alert watching a metric nobody exports), and the alerts whose conditions the
traffic provokes must fire: blocked-statement spike, authentication failure
burst (brute force), bulk read, failed policy reload.

The rules are the shipped file with every ``for:`` set to 0 s, so the test
need not wait minutes; thresholds are the shipped ones, and the traffic
exceeds them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.masking.plan import MaskingPlanner
from sqlbastion.masking.policy import parse_masking_policy
from sqlbastion.observability.metrics import METRICS
from sqlbastion.observability.queries import (
    alert_signals,
    dashboard_files,
    expand_promql,
    load_dashboard,
    panel_queries,
    rule_queries,
)
from sqlbastion.policies.catalog import CatalogStore
from sqlbastion.policies.engine import PolicyEngine
from sqlbastion.policies.loader import loads_policy
from sqlbastion.proxy.services import ProxyServices
from sqlbastion.proxy.session import Runtime
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
RULES = ROOT / "dashboards" / "prometheus" / "sqlbastion-alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

TOKEN_ENV = "SQLBASTION_TEST_ADMIN_TOKEN"
PG_SECRET_ENV = "SQLBASTION_TEST_PROM_PG_PW"
TOKEN = "prometheus-scrape-token"
PERSONS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "outsider": "outsider-pw"}

# The policy the proxy enforces: block, review and alert rules on marker tables, a
# classified column, and a person refused at admission by network.
POLICY = """
[[persons]]
name = "alice"
roles = ["analyst"]

[[persons]]
name = "bob"
roles = ["analyst"]

[[persons]]
name = "outsider"
roles = ["analyst"]
networks = ["10.0.0.0/8"]

[[roles]]
name = "analyst"
grants = [{ actions = ["select"], objects = ["pg:postgres.public.*"] }]
masks = { secret_text = "full" }

[[rules]]
id = "PROM-FORBID"
title = "Reading the forbidden table"
severity = "high"
action = "block"
match = { tables = ["pg:postgres.public.prom_forbidden"] }

[[rules]]
id = "PROM-REVIEW"
title = "Reading the reviewed table"
severity = "medium"
action = "review"
match = { tables = ["pg:postgres.public.prom_review"] }

[[rules]]
id = "PROM-ALERT"
title = "Reading the watched table"
severity = "low"
action = "alert"
match = { tables = ["pg:postgres.public.prom_alert"] }

[[classifications]]
objects = ["pg:postgres.public.prom_t.secret"]
type = "secret_text"
level = 4
"""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result = data["result"]
        return result if isinstance(result, list) else [result]

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.api("/api/v1/alerts")["alerts"] if a["state"] == "firing"}


def _settings(directory: Path, pg: ServerInfo, *, admin_port: int, pg_port: int) -> Settings:
    return loads(
        f"""
users_file = "{directory / "users.toml"}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "env:{TOKEN_ENV}"
metrics_person_labels = true
metrics_person_label_cap = 10

[audit]
spool_dir = "{directory / "spool"}"
on_audit_failure = "fail_open"

[[audit.sinks]]
type = "sqlite"
path = "{directory / "audit.db"}"

[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{pg_port}"
host = "{pg.host}"
port = {pg.port}
user = "{pg.service_user}"
password = "env:{PG_SECRET_ENV}"
database = "postgres"
""",
        source=str(directory / "sqlbastion.toml"),
    )


def _start_prometheus(directory: Path, *, admin_port: int) -> Prometheus:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "0s"
    (directory / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (directory / "token").write_text(TOKEN)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(directory / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "sqlbastion",
                "authorization": {"type": "Bearer", "credentials_file": str(directory / "token")},
                "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(url=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {(directory / 'prometheus.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return prom
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("prometheus did not become ready")


@dataclass
class Stack:
    prometheus: Prometheus
    proxy: ProxyThread
    pg_port: int
    admin_port: int
    reloads: list[str]
    policy_version: str


@pytest.fixture(scope="module")
def stack(postgres_server: ServerInfo) -> Iterator[Stack]:
    saved = {k: os.environ.get(k) for k in (TOKEN_ENV, PG_SECRET_ENV)}
    os.environ[TOKEN_ENV] = TOKEN
    os.environ[PG_SECRET_ENV] = postgres_server.service_password
    with tempfile.TemporaryDirectory(prefix="sqlbastion-prom-") as tmp:
        directory = Path(tmp)
        users = UsersFile(path=directory / "users.toml")
        for name, pw in PERSONS.items():
            users.persons[name] = make_credentials(name, pw, ("scram_sha_256",))
        users.save()
        admin_port, pg_port = free_port(), free_port()
        settings = _settings(directory, postgres_server, admin_port=admin_port, pg_port=pg_port)
        _create_tables(postgres_server)
        catalogs = CatalogStore(settings.backends)
        assert asyncio.run(catalogs.refresh("pg"))
        masking = parse_masking_policy(tomllib.loads(POLICY), file="policy.toml")
        engine = PolicyEngine(loads_policy(POLICY, file="policy.toml").policy, masking=masking, catalogs=catalogs.get)
        pipeline = AuditPipeline.from_settings(settings)  # serve() starts and drains it
        reloads: list[str] = []

        def reload_policy() -> tuple[bool, str]:
            reloads.append("tried")
            return False, "policy.toml: roles[0].grants[0].actions: unknown action 'selec'"

        services = ProxyServices(
            settings=settings,
            users=UsersFile.load(settings.users_file),
            runtime=Runtime(engine=engine, masking=MaskingPlanner(masking), audit=pipeline),
            reload_policy=reload_policy,
        )
        proxy = ProxyThread(settings, services=services).start()
        prometheus = _start_prometheus(directory, admin_port=admin_port)
        try:
            yield Stack(
                prometheus=prometheus,
                proxy=proxy,
                pg_port=pg_port,
                admin_port=admin_port,
                reloads=reloads,
                policy_version=engine.version,
            )
        finally:
            prometheus.process.terminate()
            try:
                prometheus.process.wait(10)
            except subprocess.TimeoutExpired:
                prometheus.process.kill()
            proxy.stop()
            METRICS.configure(person_labels=False, person_cap=100)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _connect(stack: Stack, person: str, password: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.pg_port,
        user=person,
        password=password,
        dbname="postgres",
        sslmode="disable",
        autocommit=True,
        connect_timeout=10,
    )


def _create_tables(server: ServerInfo) -> None:
    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.admin_user,
        password=server.admin_password,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        for table, rows in (("prom_t", 50), ("prom_big", 120000), ("prom_forbidden", 1), ("prom_review", 1)):
            admin.execute(f"DROP TABLE IF EXISTS {table}")
            admin.execute(f"CREATE TABLE {table} (id int, secret text)")
            admin.execute(f"INSERT INTO {table} SELECT g, 'secret-' || g FROM generate_series(1, {rows}) g")
            admin.execute(f"GRANT SELECT ON {table} TO {server.service_user}")
        admin.execute("DROP TABLE IF EXISTS prom_alert")
        admin.execute("CREATE TABLE prom_alert (id int)")
        admin.execute(f"GRANT SELECT ON prom_alert TO {server.service_user}")


def _run_traffic(stack: Stack) -> None:
    # Brute force: more failed logins than SqlbastionAuthFailureBurst's threshold (10 in 5 min).
    for _ in range(12):
        with pytest.raises(psycopg.OperationalError):
            _connect(stack, "alice", "wrong-password")
    with pytest.raises(psycopg.OperationalError):
        _connect(stack, "outsider", PERSONS["outsider"])

    with _connect(stack, "alice", PERSONS["alice"]) as alice, _connect(stack, "bob", PERSONS["bob"]) as bob:
        for i in range(30):
            assert alice.execute("SELECT id FROM prom_t WHERE id = %s", (i + 1,)).fetchone() == (i + 1,)
        # A blocked-statement spike: more than SqlbastionBlockedStatementSpike's 20 in 5 min.
        for _ in range(25):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute("SELECT id FROM prom_forbidden")
        for _ in range(3):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                bob.execute("SELECT id FROM prom_review")
        alice.execute("SELECT id FROM prom_alert")
        rows = bob.execute("SELECT id, secret FROM prom_t ORDER BY id").fetchall()
        assert rows[0] == (1, "****")
        with pytest.raises(psycopg.errors.DivisionByZero):
            alice.execute("SELECT id / 0 FROM prom_t")
        # A bulk read: more than SqlbastionBulkRead's 100,000 rows in 10 min.
        assert len(bob.execute("SELECT id FROM prom_big").fetchall()) == 120000

    # A policy reload that is refused: SqlbastionPolicyReloadFailed.
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.admin_port}/-/reload",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 422
    assert stack.reloads == ["tried"]


def _queries() -> list[tuple[str, str]]:
    """(what, PromQL) for every dashboard panel, dashboard variable and alert rule operand."""
    variables = {"instance": ".*", "backend": ".*", "person": ".*"}
    out: list[tuple[str, str]] = []
    for path in dashboard_files(DASHBOARDS):
        board = load_dashboard(path)
        for q in panel_queries(board):
            if q.datasource_type != "prometheus":
                continue
            # $__rate_interval as Grafana computes it for a 15-minute view; $__range for that view.
            expr = expand_promql(q.query, rate_interval="5m", range_="15m", interval="15s", variables=variables)
            out.append((f"{board['uid']} / {q.title} / {q.ref_id}", expr))
        for v in board["templating"]["list"]:
            if v.get("datasource", {}).get("type") == "prometheus":
                selector = v["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
                expr = expand_promql(selector, rate_interval="5m", range_="15m", interval="15s", variables=variables)
                out.append((f"{board['uid']} / variable {v['name']}", expr))
    for rule in rule_queries(yaml.safe_load(RULES.read_text())):
        for n, signal in enumerate(alert_signals(rule.expr)):
            out.append((f"alert {rule.name} operand {n}", signal))
    return out


def test_every_panel_and_alert_sees_data_and_the_provoked_alerts_fire(stack: Stack) -> None:
    prom = stack.prometheus
    # Scrapes are working before the traffic, so counters start from their pre-created zeros.
    deadline = time.monotonic() + 20
    while not prom.query('up{job="sqlbastion"} == 1'):
        assert time.monotonic() < deadline, "Prometheus never scraped sqlbastion"
        time.sleep(0.5)
    time.sleep(2)

    _run_traffic(stack)

    queries = _queries()
    assert len(queries) > 60
    pending = dict(queries)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        time.sleep(1)
        for what, expr in list(pending.items()):
            if prom.query(expr):
                del pending[what]
    assert not pending, "queries that returned no data:\n" + "\n".join(f"{w}: {e}" for w, e in pending.items())

    expected = {
        "SqlbastionBlockedStatementSpike",
        "SqlbastionAuthFailureBurst",
        "SqlbastionBulkRead",
        "SqlbastionPolicyReloadFailed",
    }
    deadline = time.monotonic() + 30
    firing = prom.firing()
    while not expected <= firing and time.monotonic() < deadline:
        time.sleep(1)
        firing = prom.firing()
    assert expected <= firing, f"not firing: {expected - firing}"
    # Conditions the traffic did not create do not fire.
    quiet = {"SqlbastionAuditEventsLost", "SqlbastionAuditSinkDown", "SqlbastionDown", "SqlbastionAuditSpoolFull"}
    assert not (quiet & firing), f"unexpectedly firing: {quiet & firing}"

    # The alerts carry the labels the traffic implies.
    alerts = prom.api("/api/v1/alerts")["alerts"]
    spike = [a for a in alerts if a["labels"]["alertname"] == "SqlbastionBlockedStatementSpike"]
    assert {a["labels"]["rule_id"] for a in spike} == {"PROM-FORBID"}
    bulk = [a for a in alerts if a["labels"]["alertname"] == "SqlbastionBulkRead"]
    assert {a["labels"]["person"] for a in bulk} == {"bob"}
    burst = [a for a in alerts if a["labels"]["alertname"] == "SqlbastionAuthFailureBurst"]
    assert {a["labels"]["backend"] for a in burst} == {"pg"}


def test_counts_in_prometheus_match_the_traffic(stack: Stack) -> None:
    prom = stack.prometheus

    def value(expr: str) -> float:
        result = prom.query(expr)
        assert result, expr
        return float(result[0]["value"][1])

    # Read after the first test's traffic; scrapes every second, so allow a few.
    deadline = time.monotonic() + 10
    while value('sum(sqlbastion_person_refusals_total{person="alice",rule_id="PROM-FORBID"})') < 25:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert value('sum(sqlbastion_auth_failures_total{backend="pg",reason="bad_credentials"})') >= 12
    assert value('sum(sqlbastion_auth_failures_total{backend="pg",reason="network"})') >= 1
    assert value('sum(sqlbastion_statements_total{backend="pg",decision="review",rule_id="PROM-REVIEW"})') >= 3
    assert value('sum(sqlbastion_person_rows_returned_total{person="bob"})') >= 120050
    assert value('sum(sqlbastion_masked_values_total{backend="pg",function="full"})') >= 50
    assert value('sum(sqlbastion_backend_errors_total{backend="pg",kind="statement"})') >= 1
    assert value('sqlbastion_policy_last_reload_ok{job="sqlbastion"}') == 0
    assert value(f'sqlbastion_policy_info{{version="{stack.policy_version}"}}') == 1
    assert value('sum(sqlbastion_decision_cache_total{result="hit"})') >= 20
    assert value('sum(sqlbastion_statements_total{backend="pg",decision="alert",rule_id="PROM-ALERT"})') >= 1
    # Person labels never include a name that failed to log in.
    persons = {r["metric"]["person"] for r in prom.query("sqlbastion_person_statements_total")}
    assert persons <= {"alice", "bob", "_other"}
