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

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from sqlbastion.config import Settings, loads
from sqlbastion.devtools.harness import ProxyThread
from sqlbastion.devtools.servers import ServerInfo, free_port
from sqlbastion.observability.metrics import METRICS
from sqlbastion.observability.queries import (
    alert_signals,
    annotation_queries,
    dashboard_files,
    expand_promql,
    expand_sql,
    load_dashboard,
    panel_queries,
    rule_queries,
)
from sqlbastion.policies.loader import loads_policy
from sqlbastion.users import UsersFile, make_credentials

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards" / "grafana" / "dashboards"
RULES = ROOT / "dashboards" / "prometheus" / "sqlbastion-alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

TOKEN_ENV = "SQLBASTION_TEST_ADMIN_TOKEN"
PG_SECRET_ENV = "SQLBASTION_TEST_PROM_PG_PW"
MY_SECRET_ENV = "SQLBASTION_TEST_PROM_MY_PW"
AUDIT_DSN_ENV = "SQLBASTION_TEST_PROM_AUDIT_DSN"
AUDIT_DATABASE = "prom_audit"
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
grants = [{ actions = ["select"], objects = ["pg:postgres.public.*", "core:promdb.*"] }]
masks = { secret_text = "full" }

[[rules]]
id = "PROM-FORBID"
title = "Reading the forbidden table"
severity = "high"
action = "block"
match = { tables = ["pg:postgres.public.prom_forbidden", "core:promdb.prom_forbidden"] }

[[rules]]
id = "PROM-REVIEW"
title = "Reading the reviewed table"
severity = "medium"
action = "review"
match = { tables = ["pg:postgres.public.prom_review", "core:promdb.prom_review"] }

[[rules]]
id = "PROM-ALERT"
title = "Reading the watched table"
severity = "low"
action = "alert"
match = { tables = ["pg:postgres.public.prom_alert", "core:promdb.prom_alert"] }

[[classifications]]
objects = ["pg:postgres.public.prom_t.secret", "core:promdb.prom_t.secret"]
type = "secret_text"
level = 4
"""
TABLES = (("prom_t", 50), ("prom_big", 120000), ("prom_forbidden", 1), ("prom_review", 1), ("prom_alert", 1))


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


def _settings(directory: Path, pg: ServerInfo, my: ServerInfo, *, admin_port: int) -> Settings:
    return loads(
        f"""
users_file = "users.toml"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "env:{TOKEN_ENV}"
metrics_person_labels = true
metrics_person_label_cap = 10

[policy]
files = ["policy.toml"]

[audit]
spool_dir = "spool"
on_audit_failure = "fail_open"

[[audit.sinks]]
type = "sqlite"
path = "audit.db"

[[audit.sinks]]
type = "postgres"
dsn = "env:{AUDIT_DSN_ENV}"

[[backends]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{free_port()}"
host = "{pg.host}"
port = {pg.port}
user = "{pg.service_user}"
password = "env:{PG_SECRET_ENV}"
database = "postgres"

[[backends]]
name = "core"
protocol = "mysql"
listen = "127.0.0.1:{free_port()}"
host = "{my.host}"
port = {my.port}
user = "{my.service_user}"
password = "env:{MY_SECRET_ENV}"
database = "promdb"
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
    settings: Settings
    directory: Path
    admin_port: int
    policy_version: str
    postgres: ServerInfo
    audit_refs: list[str]

    def port(self, backend: str) -> int:
        return self.proxy.port(backend)


@pytest.fixture(scope="module")
def stack(postgres_server: ServerInfo, mariadb_server: ServerInfo) -> Iterator[Stack]:
    """sqlbastion as ``serve`` composes it (policy files, masking, audit) and a Prometheus scraping it."""
    names = (TOKEN_ENV, PG_SECRET_ENV, MY_SECRET_ENV, AUDIT_DSN_ENV)
    saved = {k: os.environ.get(k) for k in names}
    os.environ[TOKEN_ENV] = TOKEN
    os.environ[PG_SECRET_ENV] = postgres_server.service_password
    os.environ[MY_SECRET_ENV] = mariadb_server.service_password
    os.environ[AUDIT_DSN_ENV] = _audit_dsn(postgres_server)
    with tempfile.TemporaryDirectory(prefix="sqlbastion-prom-") as tmp:
        directory = Path(tmp)
        users = UsersFile(path=directory / "users.toml")
        for name, pw in PERSONS.items():
            users.persons[name] = make_credentials(name, pw)
        users.save()
        (directory / "policy.toml").write_text(POLICY)
        _create_pg_tables(postgres_server)
        _create_mysql_tables(mariadb_server)
        admin_port = free_port()
        settings = _settings(directory, postgres_server, mariadb_server, admin_port=admin_port)
        proxy = ProxyThread(settings).start()
        prometheus = _start_prometheus(directory, admin_port=admin_port)
        try:
            yield Stack(
                prometheus=prometheus,
                proxy=proxy,
                settings=settings,
                directory=directory,
                admin_port=admin_port,
                policy_version=loads_policy(POLICY, file="policy.toml").policy.version,
                postgres=postgres_server,
                audit_refs=[],
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


def _pg(stack: Stack, person: str, password: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(
        host="127.0.0.1",
        port=stack.port("pg"),
        user=person,
        password=password,
        dbname="postgres",
        sslmode="disable",
        autocommit=True,
        connect_timeout=10,
    )


def _my(stack: Stack, person: str, password: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host="127.0.0.1",
        port=stack.port("core"),
        user=person,
        password=password,
        database="promdb",
        autocommit=True,
        connect_timeout=10,
    )


def _audit_dsn(server: ServerInfo) -> str:
    user, password = urllib.parse.quote(server.admin_user), urllib.parse.quote(server.admin_password)
    return f"postgresql://{user}:{password}@{server.host}:{server.port}/{AUDIT_DATABASE}"


def _create_pg_tables(server: ServerInfo) -> None:
    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.admin_user,
        password=server.admin_password,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        # The PostgreSQL audit sink's own database, which the audit explorer reads.
        admin.execute(f"DROP DATABASE IF EXISTS {AUDIT_DATABASE}")
        admin.execute(f"CREATE DATABASE {AUDIT_DATABASE}")
        for table, rows in TABLES:
            admin.execute(f"DROP TABLE IF EXISTS {table}")
            admin.execute(f"CREATE TABLE {table} (id int, secret text)")
            admin.execute(f"INSERT INTO {table} SELECT g, 'secret-' || g FROM generate_series(1, {rows}) g")
            admin.execute(f"GRANT SELECT ON {table} TO {server.service_user}")


def _create_mysql_tables(server: ServerInfo) -> None:
    admin = pymysql.connect(
        host=server.host, port=server.port, user=server.admin_user, password=server.admin_password, autocommit=True
    )
    with admin, admin.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS promdb")
        cur.execute("USE promdb")  # the seq_1_to_N sequence tables need a current database
        for table, rows in TABLES:
            cur.execute(f"DROP TABLE IF EXISTS promdb.{table}")
            cur.execute(f"CREATE TABLE promdb.{table} (id INT, secret VARCHAR(32))")
            cur.execute(f"INSERT INTO promdb.{table} SELECT seq, CONCAT('secret-', seq) FROM seq_1_to_{rows}")


def _run_traffic(stack: Stack) -> None:
    # Brute force: more failed logins than SqlbastionAuthFailureBurst's threshold (10 in 5 min).
    for _ in range(12):
        with pytest.raises(psycopg.OperationalError):
            _pg(stack, "alice", "wrong-password")
    for _ in range(3):
        with pytest.raises(pymysql.err.OperationalError):
            _my(stack, "alice", "wrong-password")
    with pytest.raises(psycopg.OperationalError):
        _pg(stack, "outsider", PERSONS["outsider"])
    with pytest.raises(psycopg.OperationalError):
        _pg(stack, "mallory", "guess")  # no such person

    with _pg(stack, "alice", PERSONS["alice"]) as alice, _pg(stack, "bob", PERSONS["bob"]) as bob:
        for i in range(30):
            assert alice.execute("SELECT id FROM prom_t WHERE id = %s", (i + 1,)).fetchone() == (i + 1,)
        # A blocked-statement spike: more than SqlbastionBlockedStatementSpike's 20 in 5 min.
        for _ in range(25):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as blocked:
                alice.execute("SELECT id FROM prom_forbidden")
        ref = re.search(r"Audit ref ([0-9a-f-]{36})\.", str(blocked.value))
        assert ref, str(blocked.value)
        stack.audit_refs.append(ref.group(1))
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

    with _my(stack, "alice", PERSONS["alice"]) as my_alice, my_alice.cursor() as cur:
        for i in range(10):
            cur.execute("SELECT id FROM prom_t WHERE id = %s", (i + 1,))
            assert cur.fetchone() == (i + 1,)
        for _ in range(5):
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cur.execute("SELECT id FROM prom_forbidden")
            assert refused.value.args[0] == 1227
        cur.execute("SELECT id, secret FROM prom_t ORDER BY id")
        assert cur.fetchall()[0] == (1, "****")
        cur.execute("SELECT id FROM prom_big")
        assert len(cur.fetchall()) == 120000

    # An edit that breaks the policy, then a reload: refused, the old policy stays
    # (SqlbastionPolicyReloadFailed), and statements are still decided by it.
    (stack.directory / "policy.toml").write_text(POLICY.replace('actions = ["select"]', 'actions = ["selec"]'))
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.admin_port}/-/reload",
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 422
    assert "selec" in json.loads(info.value.read())["message"]
    with _pg(stack, "alice", PERSONS["alice"]) as alice, pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("SELECT id FROM prom_forbidden")


def _queries() -> list[tuple[str, str]]:
    """(what, PromQL) for every dashboard panel, dashboard variable and alert rule operand."""
    variables = {"instance": ".*", "backend": ".*", "person": ".*"}
    out: list[tuple[str, str]] = []
    for path in dashboard_files(DASHBOARDS):
        board = load_dashboard(path)
        for q in panel_queries(board) + annotation_queries(board):
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
    # (The registry is process-wide: in a full test run, other tests' proxies add their own series.)
    spike = {
        (a["labels"]["backend"], a["labels"]["rule_id"])
        for a in alerts
        if a["labels"]["alertname"] == "SqlbastionBlockedStatementSpike"
    }
    assert ("pg", "PROM-FORBID") in spike
    assert ("core", "PROM-FORBID") not in spike  # 5 blocks on core stay below the threshold
    bulk = {a["labels"]["person"] for a in alerts if a["labels"]["alertname"] == "SqlbastionBulkRead"}
    assert {"alice", "bob"} <= bulk
    burst = {a["labels"]["backend"] for a in alerts if a["labels"]["alertname"] == "SqlbastionAuthFailureBurst"}
    assert "pg" in burst


def test_counts_in_prometheus_match_the_traffic(stack: Stack) -> None:
    prom = stack.prometheus

    def value(expr: str) -> float:
        result = prom.query(expr)
        assert result, expr
        return float(result[0]["value"][1])

    # Read after the first test's traffic; scrapes every second, so allow a few.
    deadline = time.monotonic() + 10
    while value('sum(sqlbastion_person_refusals_total{person="alice",rule_id="PROM-FORBID"})') < 31:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert value('sum(sqlbastion_auth_failures_total{backend="pg",reason="bad_credentials"})') >= 12
    assert value('sum(sqlbastion_auth_failures_total{backend="pg",reason="network"})') >= 1
    assert value('sum(sqlbastion_statements_total{backend="pg",decision="review",rule_id="PROM-REVIEW"})') >= 3
    assert value('sum(sqlbastion_person_rows_returned_total{person="bob"})') >= 120050
    assert value('sum(sqlbastion_masked_values_total{backend="pg",function="full"})') >= 50
    assert value('sum(sqlbastion_masked_values_total{backend="core",function="full"})') >= 50
    assert value('sum(sqlbastion_statements_total{backend="core",decision="block",rule_id="PROM-FORBID"})') >= 5
    assert value('sum(sqlbastion_auth_failures_total{backend="core",reason="bad_credentials"})') >= 3
    assert value('sum(sqlbastion_rows_returned_total{backend="core"})') >= 120000
    assert value('sum(sqlbastion_backend_errors_total{backend="pg",kind="statement"})') >= 1
    assert value('sqlbastion_policy_last_reload_ok{job="sqlbastion"}') == 0
    assert value(f'sqlbastion_policy_info{{version="{stack.policy_version}"}}') == 1
    assert value('sum(sqlbastion_decision_cache_total{result="hit"})') >= 20
    assert value('sum(sqlbastion_statements_total{backend="pg",decision="alert",rule_id="PROM-ALERT"})') >= 1
    # Person labels never include a name that failed to log in or was refused at admission.
    persons = {r["metric"]["person"] for r in prom.query("sqlbastion_person_statements_total")}
    assert {"alice", "bob"} <= persons
    assert not persons & {"mallory", "outsider"}


def test_audit_explorer_queries_read_the_postgres_sink(stack: Stack) -> None:
    """Every SQL panel and variable of the audit explorer runs against the real sink table and finds the traffic."""
    assert stack.audit_refs, "run after the traffic test"
    prom = stack.prometheus
    deadline = time.monotonic() + 30
    while not prom.query('sqlbastion_audit_sink_up{sink="postgres"} == 1 and sqlbastion_audit_sink_lag_events == 0'):
        assert time.monotonic() < deadline, "the PostgreSQL sink did not catch up"
        time.sleep(0.5)
    board = load_dashboard(DASHBOARDS / "sqlbastion-audit-explorer.json")
    queries = [
        q
        for q in panel_queries(board) + annotation_queries(board)
        if q.datasource_type == "grafana-postgresql-datasource"
    ]
    assert any(q.panel_id == 0 for q in queries)  # the policy-reload annotation (the traffic made one)
    queries_by_title = {q.title: q.query for q in queries}
    [person_variable] = [v for v in board["templating"]["list"] if v["name"] == "person"]
    server = stack.postgres
    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.admin_user,
        password=server.admin_password,
        dbname=AUDIT_DATABASE,
        autocommit=True,
    ) as conn:
        persons = [r[0] for r in conn.execute(person_variable["query"]).fetchall()]
        assert {"alice", "bob"} <= set(persons)

        def run(sql: str, *, person: str, event_id: str = "") -> list[tuple[Any, ...]]:
            expanded = expand_sql(
                sql,
                time_from="now() - interval '1 hour'",
                time_to="now()",
                variables={"person": person, "event_id": "'" + event_id.replace("'", "''") + "'"},
            )
            return conn.execute(expanded).fetchall()

        everyone = person_variable["allValue"]
        for q in queries:
            assert run(q.query, person=everyone, event_id=stack.audit_refs[0]), f"{q.title}: no rows"
        # The person filter narrows; a multi-value selection is a quoted list, as Grafana formats it.
        refused = run(queries_by_title["Refused statements"], person="'bob'")
        assert refused
        assert {r[2] for r in refused} == {"bob"}
        assert {r[5] for r in refused} == {"PROM-REVIEW"}
        both = run(queries_by_title["Refused statements"], person="'alice','bob'")
        assert {r[2] for r in both} == {"alice", "bob"}
        # The audit ref a client saw finds exactly that event.
        [event] = run(queries_by_title["Event by audit ref"], person=everyone, event_id=stack.audit_refs[0])
        assert event[1] == stack.audit_refs[0]
        assert event[3] == "alice"
        assert event[5] == "block"
        assert event[6] == "PROM-FORBID"
        assert not run(queries_by_title["Event by audit ref"], person=everyone, event_id="x' OR '1'='1")
        # Sensitive reads name the classified column, and the rows read include the bulk read.
        sensitive = run(queries_by_title["Sensitive columns read, by person"], person=everyone)
        assert any(r[1].endswith("prom_t.secret") for r in sensitive)
        rows = {(r[0], r[1]): r[3] for r in run(queries_by_title["Rows read, by person and backend"], person=everyone)}
        assert rows[("bob", "pg")] >= 120000
        assert rows[("alice", "core")] >= 120000
        failures = run(queries_by_title["Authentication failures"], person=everyone)
        assert {r[5] for r in failures} >= {"bad_credentials", "network"}
