"""Metric catalogue: bounded person labels, pre-created label sets, masking and reload bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass

from sqlbastion.observability.metrics import AUTH_FAILURE_REASONS, OTHER_PERSONS, Metrics, statement_type_label


@dataclass(frozen=True)
class Plan:
    refuse: str | None = None


def test_person_labels_off_by_default() -> None:
    m = Metrics()
    assert m.person_label("alice") is None


def test_person_labels_are_capped() -> None:
    m = Metrics()
    m.configure(person_labels=True, person_cap=2)
    assert m.person_label("alice") == "alice"
    assert m.person_label("bob") == "bob"
    assert m.person_label("carol") == OTHER_PERSONS
    assert m.person_label("alice") == "alice"
    m.configure(person_labels=True, person_cap=-5)
    assert m.person_label("dave") == OTHER_PERSONS
    # a new configuration starts a new allocation under its own cap
    m.configure(person_labels=True, person_cap=1)
    assert m.person_label("erin") == "erin"
    assert m.person_label("alice") == OTHER_PERSONS


def test_prepare_creates_zero_series() -> None:
    m = Metrics()
    m.prepare(backends=[("postgres", "pg")], sinks=["pgsink"], max_connections=50, spool_capacity_bytes=1024)
    get = m.registry.get_sample_value
    for reason in AUTH_FAILURE_REASONS:
        assert get("sqlbastion_auth_failures_total", {"protocol": "postgres", "backend": "pg", "reason": reason}) == 0
    assert get("sqlbastion_client_connections_active", {"protocol": "postgres", "backend": "pg"}) == 0
    assert get("sqlbastion_audit_sink_errors_total", {"sink": "pgsink"}) == 0
    assert get("sqlbastion_client_connections_limit") == 50
    assert get("sqlbastion_audit_spool_capacity_bytes") == 1024
    assert get("sqlbastion_proxy_seconds_count", {"protocol": "postgres", "backend": "pg"}) == 0


def test_observe_masking_counts_results() -> None:
    m = Metrics()
    plan = Plan()
    refused = Plan(refuse="denied")
    m.observe_masking("core", [plan, plan, refused])
    get = m.registry.get_sample_value
    assert get("sqlbastion_masked_results_total", {"backend": "core", "outcome": "masked"}) == 2
    assert get("sqlbastion_masked_results_total", {"backend": "core", "outcome": "refused"}) == 1
    # values are the planner's to count
    assert get("sqlbastion_masked_values_total", {"backend": "core", "function": "mobile"}) is None


def test_policy_version_has_one_series() -> None:
    m = Metrics()
    m.set_policy_version("a")
    m.record_policy_reload(ok=True, version="b")
    get = m.registry.get_sample_value
    assert get("sqlbastion_policy_info", {"version": "a"}) is None
    assert get("sqlbastion_policy_info", {"version": "b"}) == 1
    m.record_policy_reload(ok=False, version=None)
    assert get("sqlbastion_policy_info", {"version": "b"}) == 1
    assert get("sqlbastion_policy_last_reload_ok") == 0
    assert get("sqlbastion_policy_reloads_total", {"result": "failed"}) == 1


def test_recorder_records_a_statement() -> None:
    m = Metrics()
    m.configure(person_labels=True, person_cap=5)
    rec = m.recorder(protocol="postgres", backend="pg", person="alice")
    get = m.registry.get_sample_value
    # the person's series exist at 0 from the session's start
    assert get("sqlbastion_person_rows_returned_total", {"person": "alice"}) == 0
    assert get("sqlbastion_person_statements_total", {"person": "alice", "decision": "block"}) == 0
    rec.record(
        statement_type="select",
        decision="allow",
        rule_id="none",
        allowed=True,
        sensitive_columns=2,
        proxy_s=0.0001,
        backend_s=0.002,
        rows=7,
        backend_error=False,
    )
    rec.record(
        statement_type="drop",
        decision="block",
        rule_id="HR-DDL-DROP",
        allowed=False,
        sensitive_columns=0,
        proxy_s=0.0001,
        backend_s=0.0,
        rows=0,
        backend_error=False,
    )
    base = {"protocol": "postgres", "backend": "pg"}
    assert (
        get("sqlbastion_statements_total", {**base, "statement_type": "select", "decision": "allow", "rule_id": "none"})
        == 1
    )
    assert (
        get(
            "sqlbastion_statements_total",
            {**base, "statement_type": "drop", "decision": "block", "rule_id": "HR-DDL-DROP"},
        )
        == 1
    )
    assert get("sqlbastion_proxy_seconds_count", base) == 2
    assert get("sqlbastion_backend_seconds_count", base) == 1  # refused statements never reach the backend
    assert get("sqlbastion_rows_returned_total", base) == 7
    assert get("sqlbastion_sensitive_columns_read_total", {"backend": "pg"}) == 2
    assert get("sqlbastion_sensitive_statements_total", {**base, "decision": "allow"}) == 1
    assert get("sqlbastion_person_rows_returned_total", {"person": "alice"}) == 7
    assert (
        get("sqlbastion_person_refusals_total", {"person": "alice", "decision": "block", "rule_id": "HR-DDL-DROP"}) == 1
    )
    # a second session of the same backend shares the bound children
    other = m.recorder(protocol="postgres", backend="pg", person="bob")
    other.record(
        statement_type="select",
        decision="allow",
        rule_id="none",
        allowed=True,
        sensitive_columns=0,
        proxy_s=0.0,
        backend_s=0.0,
        rows=0,
        backend_error=True,
    )
    assert (
        get("sqlbastion_statements_total", {**base, "statement_type": "select", "decision": "allow", "rule_id": "none"})
        == 2
    )
    assert get("sqlbastion_backend_errors_total", {**base, "kind": "statement"}) == 1


def test_recorder_without_person_labels_creates_no_person_series() -> None:
    m = Metrics()
    rec = m.recorder(protocol="mysql", backend="core", person="alice")
    assert rec.person is None
    rec.record(
        statement_type="select",
        decision="allow",
        rule_id="none",
        allowed=True,
        sensitive_columns=0,
        proxy_s=0.0,
        backend_s=0.0,
        rows=3,
        backend_error=False,
    )
    names = {s.name for f in m.registry.collect() for s in f.samples}
    assert not any(n.startswith("sqlbastion_person_") for n in names)


def test_statement_type_labels_are_a_closed_set() -> None:
    assert statement_type_label("select") == "select"
    assert statement_type_label("create_table") == "create_table"
    assert statement_type_label("drop_view") == "drop_view"
    assert statement_type_label("create_foobar1") == "create_other"
    assert statement_type_label("alter_x9") == "alter_other"
    assert statement_type_label("foobar1") == "other"
    assert statement_type_label("") == "other"
    assert statement_type_label("select_" + "x" * 1000) == "other"


def test_clients_cannot_mint_statement_type_series() -> None:
    """Unknown verbs are named after the client's own words by the analyser; the metric stays bounded."""
    from sqlbastion.policies.engine import PolicyEngine
    from sqlbastion.policies.loader import loads_policy
    from sqlbastion.policies.model import StatementContext

    engine = PolicyEngine(
        loads_policy(
            '[[persons]]\nname = "eve"\nroles = ["r"]\n\n[[roles]]\nname = "r"\n'
            'grants = [{ actions = ["all"], objects = ["core:*"] }]\nunprovable = "audit_only"\n',
            file="policy.toml",
        ).policy
    )
    m = Metrics()
    rec = m.recorder(protocol="mysql", backend="core", person="eve")
    ctx = StatementContext(person="eve", roles=("r",), backend="core", dialect="mysql", database="d")
    seen_types: set[str] = set()
    for i in range(200):
        for sql in (f"FOOBAR{i} x", f"CREATE WIDGET{i} w", f"ALTER GADGET{i} g"):
            d = engine.decide(sql, ctx)
            seen_types.update(d.statement_types)
            rec.record(
                statement_type=d.statement_types[0] if d.statement_types else "unknown",
                decision=d.action.value,
                rule_id=d.rule_ids[0] if d.rule_ids else "none",
                allowed=d.allowed,
                sensitive_columns=0,
                proxy_s=0.0,
                backend_s=0.0,
                rows=0,
                backend_error=False,
            )
    labels = {
        s.labels["statement_type"] for f in m.registry.collect() if f.name == "sqlbastion_statements" for s in f.samples
    }
    assert len(seen_types) > 100  # the analyser did name them after the client's words
    assert labels <= {"other", "create_other", "alter_other", "create", "alter", "unknown"}
