"""bench/session_bench.py measures what it says: real policy decisions, real mask plans, every statement audited."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from bench import session_bench

from sqlbastion.proxy.session import StatementOutcome


class Counting:
    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    def emit(self, event: dict[str, object]) -> None:
        self.events.append(event)

    def accepting(self) -> bool:
        return True


def test_the_workloads_are_allowed_planned_and_audited(tmp_path: Path) -> None:
    audit = Counting()
    bench = session_bench.Bench(tmp_path, audit)
    session = bench.session()
    for workload in session_bench.WORKLOADS:
        session_bench.run_hot(session, workload, 0, 30)  # raises when refused or planned otherwise
    statements = [e for e in audit.events if e["kind"] == "statement"]
    assert len(statements) == 60
    assert {e["decision"] for e in statements} == {"allow"}
    masked = [e for e in statements if e["masks_applied"]]
    assert len(masked) == 30
    functions = {m["function"] for e in masked for m in cast(list[dict[str, str]], e["masks_applied"])}
    assert functions == {"mobile", "id_card"}


def test_a_refused_statement_stops_the_benchmark(tmp_path: Path) -> None:
    bench = session_bench.Bench(tmp_path, Counting())
    session = bench.session()
    verdict = session.authorize("DROP TABLE pgbench_accounts")
    assert not verdict.allowed
    session.finish(verdict, StatementOutcome())
    with pytest.raises(SystemExit, match="refused"):
        session_bench.statement(session, "DELETE FROM pgbench_accounts", (), 0)


def test_measure_reports_every_figure() -> None:
    figures = session_bench.measure("discard", 40, 1, 20)
    for workload in session_bench.WORKLOADS:
        assert figures[f"{workload}_hot"] > 0
        assert figures[f"{workload}_cold"] > 0
