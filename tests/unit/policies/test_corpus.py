"""Every statement of the corpus, in both dialects where it is portable: exact decision and rule id."""

from __future__ import annotations

import pytest

from tests.unit.policies.corpus import cases
from tests.unit.policies.support import decide

CASES = cases()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 300
    assert {d for _, d, *_ in CASES} == {"mysql", "postgres"}


@pytest.mark.parametrize(
    ("person", "dialect", "action", "rule", "sql"),
    CASES,
    ids=[f"{i}-{c[1][:2]}-{c[3]}" for i, c in enumerate(CASES)],
)
def test_statement(person: str, dialect: str, action: str, rule: str, sql: str) -> None:
    d = decide(person, sql, dialect)  # type: ignore[arg-type]  # "mysql" / "postgres" from the corpus
    detail = f"{d.action.value} {d.rule_ids} {d.reason}"
    assert d.action.value == action, detail
    if rule == "-":
        assert d.rule_ids == (), detail
    else:
        assert rule in d.rule_ids, detail
        hit = next(h for h in d.rule_hits if h.rule_id == rule)
        assert hit.action.value == action or d.action.value == action, detail
