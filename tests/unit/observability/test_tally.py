"""Per-session statement tallies: the same exposition as plain prometheus-client metrics, current at
scrape time, never going backwards while sessions come and go."""

from __future__ import annotations

import gc
import random
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sqlbastion.observability.metrics import Metrics
from sqlbastion.observability.tally import LATENCY_BUCKETS, LATENCY_BUCKETS_US, StatementRecorder

RULES = ("none", "HR-DDL-DROP", "SB-ADMISSION")
DECISIONS = ("allow", "alert", "review", "block")
TYPES = ("select", "insert", "drop_table", "multi")


class Reference:
    """What the session recorded before tallies: one prometheus-client operation per metric per statement."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.statements = Counter(
            "sqlbastion_statements_total",
            "d",
            ["protocol", "backend", "statement_type", "decision", "rule_id"],
            registry=r,
        )
        self.proxy = Histogram(
            "sqlbastion_proxy_seconds", "d", ["protocol", "backend"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.backend = Histogram(
            "sqlbastion_backend_seconds", "d", ["protocol", "backend"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.rows = Counter("sqlbastion_rows_returned_total", "d", ["protocol", "backend"], registry=r)
        self.person_statements = Counter("sqlbastion_person_statements_total", "d", ["person", "decision"], registry=r)
        self.person_refusals = Counter(
            "sqlbastion_person_refusals_total", "d", ["person", "decision", "rule_id"], registry=r
        )
        self.person_rows = Counter("sqlbastion_person_rows_returned_total", "d", ["person"], registry=r)
        self.sensitive = Counter(
            "sqlbastion_sensitive_statements_total", "d", ["protocol", "backend", "decision"], registry=r
        )
        self.sensitive_columns = Counter("sqlbastion_sensitive_columns_read_total", "d", ["backend"], registry=r)
        self.errors = Counter("sqlbastion_backend_errors_total", "d", ["protocol", "backend", "kind"], registry=r)
        self.masked = Counter("sqlbastion_masked_results_total", "d", ["backend", "outcome"], registry=r)

    def statement(
        self,
        protocol: str,
        backend: str,
        person: str,
        key: tuple[str, str, str],
        allowed: bool,
        sensitive: int,
        proxy_us: int,
        backend_us: int,
        rows: int,
        error: bool,
    ) -> None:
        self.statements.labels(protocol, backend, *key).inc()
        self.proxy.labels(protocol, backend).observe(proxy_us / 1e6)
        if allowed:
            self.backend.labels(protocol, backend).observe(backend_us / 1e6)
        if rows:
            self.rows.labels(protocol, backend).inc(rows)
            self.person_rows.labels(person).inc(rows)
        if sensitive:
            self.sensitive.labels(protocol, backend, key[1]).inc()
            if allowed:
                self.sensitive_columns.labels(backend).inc(sensitive)
        if error:
            self.errors.labels(protocol, backend, "statement").inc()
        self.person_statements.labels(person, key[1]).inc()
        if not allowed:
            self.person_refusals.labels(person, key[1], key[2]).inc()


def _values(
    registry: CollectorRegistry, prefix: str = "sqlbastion_"
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _random_statement(rng: random.Random) -> tuple[tuple[str, str, str], bool, int, int, int, int, bool]:
    decision = rng.choice(DECISIONS)
    allowed = decision in ("allow", "alert")
    # Durations around every bucket bound, the bounds themselves included (le is inclusive).
    proxy_us = rng.choice((0, 1, *LATENCY_BUCKETS_US, *(b + 1 for b in LATENCY_BUCKETS_US), rng.randrange(20_000_000)))
    backend_us = rng.choice((0, *LATENCY_BUCKETS_US, rng.randrange(20_000_000)))
    return (
        (rng.choice(TYPES), decision, rng.choice(RULES)),
        allowed,
        rng.choice((0, 0, 1, 3)),
        proxy_us,
        backend_us,
        rng.choice((0, 1, 7, 1000)),
        rng.random() < 0.1,
    )


def test_exposition_equals_plain_prometheus_metrics() -> None:
    rng = random.Random(7)
    m = Metrics()
    m.configure(person_labels=True, person_cap=10)
    ref = Reference()
    sessions: list[tuple[StatementRecorder, str, str, str]] = []
    for _ in range(300):
        if not sessions or rng.random() < 0.05:
            protocol, backend, person = rng.choice(("mysql", "postgres")), rng.choice(("a", "b")), rng.choice("xyz")
            sessions.append((m.recorder(protocol=protocol, backend=backend, person=person), protocol, backend, person))
        if rng.random() < 0.03 and len(sessions) > 1:
            sessions.pop(rng.randrange(len(sessions)))  # a session ends: its tally is folded
            gc.collect()
        rec, protocol, backend, person = rng.choice(sessions)
        key, allowed, sensitive, proxy_us, backend_us, rows, error = _random_statement(rng)
        rec.count(key, allowed, sensitive, proxy_us, backend_us, rows, error)
        ref.statement(protocol, backend, person, key, allowed, sensitive, proxy_us, backend_us, rows, error)
    got = _values(m.registry)
    want = _values(ref.registry)
    for name_labels, value in want.items():
        if name_labels[0].endswith("_sum"):  # summed in whole µs here, in float seconds there
            assert got.get(name_labels) == pytest.approx(value, rel=1e-12), name_labels
        else:
            assert got.get(name_labels) == value, name_labels
    # Nothing beyond: the zero series the session start creates (person series, per-backend series).
    extra = {k: v for k, v in got.items() if k not in want and k[0].startswith(tuple(n for n, _ in want))}
    assert all(v == 0 for v in extra.values()), extra


def test_each_series_keeps_its_created_sample() -> None:
    m = Metrics()
    rec = m.recorder(protocol="postgres", backend="pg", person="alice")
    rec.count(("select", "allow", "none"), True, 0, 10, 10, 1, False)
    text = generate_latest(m.registry).decode()
    assert 'sqlbastion_statements_created{backend="pg",decision="allow",protocol="postgres",rule_id="none",' in text
    assert 'sqlbastion_proxy_seconds_created{backend="pg",protocol="postgres"}' in text
    assert 'sqlbastion_proxy_seconds_bucket{backend="pg",le="5e-05",protocol="postgres"} 1.0' in text


def test_live_sessions_are_current_at_scrape_time_and_ended_ones_stay_counted() -> None:
    m = Metrics()
    get = m.registry.get_sample_value
    labels = {
        "protocol": "mysql",
        "backend": "core",
        "statement_type": "select",
        "decision": "allow",
        "rule_id": "none",
    }
    rec = m.recorder(protocol="mysql", backend="core", person="p")
    for i in range(1, 4):
        rec.count(("select", "allow", "none"), True, 0, 60, 200, 2, False)
        assert get("sqlbastion_statements_total", labels) == i
    other = m.recorder(protocol="mysql", backend="core", person="q")
    other.count(("select", "allow", "none"), True, 0, 60, 200, 2, False)
    assert get("sqlbastion_statements_total", labels) == 4
    assert m.statement_totals.live_sessions() == 2
    del rec, other
    gc.collect()
    assert get("sqlbastion_statements_total", labels) == 4
    assert m.statement_totals.live_sessions() == 0
    assert get("sqlbastion_rows_returned_total", {"protocol": "mysql", "backend": "core"}) == 8
    assert get("sqlbastion_proxy_seconds_sum", {"protocol": "mysql", "backend": "core"}) == 4 * 60 / 1e6
    assert get("sqlbastion_backend_seconds_bucket", {"protocol": "mysql", "backend": "core", "le": "0.00025"}) == 4


def test_direct_increments_and_session_counts_add_up() -> None:
    """Listeners count connect errors on the metric object; sessions count statement errors in tallies."""
    m = Metrics()
    m.prepare(backends=[("postgres", "pg")])
    get = m.registry.get_sample_value
    m.backend_errors.labels("postgres", "pg", "statement").inc()
    m.backend_errors.labels("postgres", "pg", "connect").inc()
    rec = m.recorder(protocol="postgres", backend="pg", person="a")
    rec.count(("select", "allow", "none"), True, 0, 1, 1, 0, True)
    rec.masked_result(refused=False)
    rec.masked_result(refused=True)
    m.observe_masking("pg", [rec_plan()])
    assert get("sqlbastion_backend_errors_total", {"protocol": "postgres", "backend": "pg", "kind": "statement"}) == 2
    assert get("sqlbastion_backend_errors_total", {"protocol": "postgres", "backend": "pg", "kind": "connect"}) == 1
    assert get("sqlbastion_masked_results_total", {"backend": "pg", "outcome": "masked"}) == 2
    assert get("sqlbastion_masked_results_total", {"backend": "pg", "outcome": "refused"}) == 1


class _Plan:
    refuse: str | None = None


def rec_plan() -> _Plan:
    return _Plan()


def test_idle_sessions_cost_a_scrape_nothing_and_change_nothing() -> None:
    m = Metrics()
    recs = [m.recorder(protocol="mysql", backend="core", person=f"p{i}") for i in range(2000)]
    assert m.statement_totals.live_sessions() == 0  # a tally is attached at a session's first count
    started = time.perf_counter()
    before = _values(m.registry)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # 2,000 empty tallies are skipped, not summed
    assert all(v == 0 for k, v in before.items() if k[0] == "sqlbastion_proxy_seconds_count")
    del recs


def test_counters_never_go_backwards_while_sessions_end_under_concurrent_scrapes() -> None:
    """A scraper thread reads while the owner thread counts, drops sessions and starts new ones."""
    m = Metrics()
    m.configure(person_labels=True, person_cap=3)
    stop = threading.Event()
    problems: list[str] = []
    scrapes = [0]

    def scraper() -> None:
        last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while not stop.is_set():
            now = _values(m.registry)
            for k, v in now.items():
                if (k[0].endswith(("_total", "_count", "_bucket", "_sum"))) and v < last.get(k, 0):
                    problems.append(f"{k}: {last[k]} → {v}")
            last = now
            scrapes[0] += 1

    t = threading.Thread(target=scraper)
    t.start()
    rng = random.Random(3)
    total = 0
    deadline = time.monotonic() + 3.0
    try:
        live: list[StatementRecorder] = []
        while time.monotonic() < deadline and total < 60_000:
            if len(live) < 20 or rng.random() < 0.01:
                live.append(m.recorder(protocol="postgres", backend="pg", person=rng.choice("abcde")))
            if rng.random() < 0.01:
                live.pop(rng.randrange(len(live)))
            if rng.random() < 0.001:
                gc.collect()
            key, allowed, sensitive, proxy_us, backend_us, rows, error = _random_statement(rng)
            rng.choice(live).count(key, allowed, sensitive, proxy_us, backend_us, rows, error)
            total += 1
    finally:
        stop.set()
        t.join()
    assert not problems, problems[:5]
    assert scrapes[0] > 3
    live.clear()
    gc.collect()
    counted = sum(v for (name, _), v in _values(m.registry).items() if name == "sqlbastion_statements_total")
    assert counted == total
    assert (
        m.registry.get_sample_value("sqlbastion_proxy_seconds_count", {"protocol": "postgres", "backend": "pg"})
        == total
    )
