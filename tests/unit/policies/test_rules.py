"""The rule catalogue: every built-in rule is documented and exercised by the corpus."""

from __future__ import annotations

from sqlbastion.policies.rules import BUILTIN_RULES, FEATURE_RULES, NON_RELAXABLE, RULES, UNPROVABLE_RULES
from tests.unit.policies.corpus import cases
from tests.unit.policies.support import ROOT

# Rules whose trigger needs a session state or limit the corpus does not set
# (they are covered in test_lexer_state.py).
ELSEWHERE = {"SB-LIMIT-SIZE", "SB-LIMIT-STATEMENTS"}


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    for rule in BUILTIN_RULES:
        prefix = rule.id.rsplit("-", 1)[0] + "-*"
        assert rule.id in doc or prefix in doc, rule.id


def test_every_rule_is_exercised() -> None:
    expected = {rule for _, _, _, rule, _ in cases()}
    missing = {r.id for r in BUILTIN_RULES} - expected - ELSEWHERE
    assert missing == set()


def test_catalogue_is_consistent() -> None:
    assert len(RULES) == len(BUILTIN_RULES)
    assert set(UNPROVABLE_RULES.values()) <= set(RULES)
    assert set(RULES) >= NON_RELAXABLE
    for feature, rule in FEATURE_RULES.items():
        assert feature in rule.features
    for rule in BUILTIN_RULES:
        assert rule.id.split("-")[0] in ("HR", "MASK", "SB")
        assert rule.title
