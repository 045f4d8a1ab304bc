"""Combining roles, overrides, break-glass modes, custom rules and the facts a decision carries."""

from __future__ import annotations

from sqlbastion.masking.policy import parse_masking_policy
from sqlbastion.policies.engine import PolicyEngine
from sqlbastion.policies.loader import loads_policy
from sqlbastion.policies.model import Action
from tests.unit.policies.support import context, mysql_catalog

POLICY = """
[[persons]]
name = "glass"
roles = ["breakglass"]

[[persons]]
name = "both"
roles = ["reader", "writer"]
max_rows = 10

[[persons]]
name = "reader"
roles = ["reader"]
max_rows = 10

[[persons]]
name = "exporter"
roles = ["reader", "export"]
max_rows = 10

[[roles]]
name = "breakglass"
grants = [{ actions = ["all"], objects = ["core:*"] }]
unprovable = "audit_only"
masks = { default = "clear" }

[[roles]]
name = "reader"
grants = [{ actions = ["select"], objects = ["core:bank.*"] }]
masks = { mobile = "mobile" }
rule_overrides = { "NIGHTLY-TX" = "alert" }

[[roles]]
name = "writer"
grants = [{ actions = ["insert", "update", "delete"], objects = ["core:bank.accounts"] }]
rule_overrides = { "HR-DML-NO-WHERE" = "review" }

[[roles]]
name = "export"
grants = [{ actions = ["export"], objects = ["core:*"] }]

[[classifications]]
objects = ["core:bank.customers.mobile"]
type = "mobile"
level = 3

[[rules]]
id = "NIGHTLY-TX"
title = "Reading transactions"
severity = "low"
action = "block"
match = { statement_types = ["select"], tables = ["core:bank.transactions"], roles = ["reader"] }

[[rules]]
id = "NO-LIMIT-SCAN"
title = "Unbounded scan of customers"
severity = "medium"
action = "review"
match = { statement_types = ["select"], tables = ["core:bank.customers"], has_limit = false, has_where = false }
"""

loaded = loads_policy(POLICY)
ENGINE = PolicyEngine(
    loaded.policy,
    masking=parse_masking_policy(loaded.documents[0][1], file="p"),
    catalogs={"core": mysql_catalog()},
)


def d(person: str, sql: str):  # type: ignore[no-untyped-def]  # a Decision; short helper
    return ENGINE.decide(sql, context(person))


def test_audit_only_allows_unprovable_as_alert() -> None:
    r = d("glass", "SELEC 1")
    assert r.action is Action.ALERT
    assert r.allowed
    assert r.rule_ids == ("SB-UNPROVABLE-PARSE",)
    # Lexer-state rules stay blocking even for break-glass roles.
    assert d("glass", "SET NAMES gbk").action is Action.BLOCK


def test_several_roles_unite_grants_and_take_the_most_permissive_override() -> None:
    assert d("reader", "DELETE FROM accounts WHERE id = 1").rule_ids == ("SB-GRANT-DENIED",)
    assert d("both", "DELETE FROM accounts WHERE id = 1").allowed
    r = d("both", "DELETE FROM accounts")
    assert r.action is Action.REVIEW
    assert r.rule_ids == ("HR-DML-NO-WHERE",)


def test_custom_rules_match_facts_and_roles_override_them() -> None:
    r = d("reader", "SELECT amount FROM transactions WHERE id = 1")
    assert r.action is Action.ALERT
    assert r.rule_ids == ("NIGHTLY-TX",)
    assert d("glass", "SELECT amount FROM transactions WHERE id = 1").rule_ids == ()
    r = d("glass", "SELECT id FROM customers")
    assert r.action is Action.REVIEW
    assert r.rule_ids == ("NO-LIMIT-SCAN",)
    assert d("glass", "SELECT id FROM customers LIMIT 10").allowed
    assert d("glass", "SELECT id FROM customers WHERE id = 1").allowed


def test_max_rows_and_export() -> None:
    assert d("reader", "SELECT id FROM accounts WHERE id = 1").max_rows == 10
    assert d("exporter", "SELECT id FROM accounts WHERE id = 1").max_rows is None


def test_decision_facts() -> None:
    r = d(
        "reader",
        "SELECT c.mobile, a.balance FROM customers c JOIN accounts a ON a.customer_id = c.id WHERE c.id = 3",
    )
    assert r.allowed
    assert r.statement_types == ("select",)
    assert r.objects_read == ("bank.accounts", "bank.customers")
    assert [str(c) for c in r.sensitive_columns] == ["bank.customers.mobile"]
    [cols] = r.output_columns
    assert [(o.name, o.direct) for o in cols] == [("mobile", True), ("balance", True)]
    assert "bank.customers.id" in {str(c) for c in r.columns_read}
    assert len(r.fingerprint) == 16
    assert r.policy_version == loaded.policy.version
    assert d("glass", "SELECT mobile FROM customers WHERE id = 1").sensitive_columns == ()
