"""The measurements beside the alternating rounds: idle connections, component benchmarks, profiles."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

from bench import external, pyspy, services
from bench.idle import hold_idle_postgres, open_idle_mysql
from bench.model import PG_IDLE_MAX, ROOT, Environment, Options, Workload, say
from bench.report import PATHS, Figure, Target, WorkloadResult
from bench.workloads import Endpoint, WorkloadError

__all__ = ["measure_audit", "measure_connections", "measure_policy", "measure_rows", "profile_sqlbastion"]


def _idle_result(
    name: str, target: Target | None, wanted: int, opened: int, error: str | None, before: float, after: float
) -> WorkloadResult:
    if error is not None or opened < wanted:
        reason = f"only {opened:,} of {wanted:,} opened ({error}); RSS {after:.1f} MiB"
        return WorkloadResult(name=name, unit="MiB", figures=(Figure(path="sqlbastion", reason=reason),), target=target)
    per_conn = (after - before) * 1024 / max(1, opened)
    note = f"RSS {before:.1f} MiB before, {after:.1f} MiB with {opened:,} open: {per_conn:.1f} KiB per connection"
    if opened != 5000:
        note += f" (estimate for 5,000: {before + per_conn * 5000 / 1024:.0f} MiB)"
    return WorkloadResult(
        name=name, unit="MiB", figures=(Figure(path="sqlbastion", samples=(after,)),), target=target, note=note
    )


def measure_connections(opts: Options, env: Environment) -> list[WorkloadResult]:
    """sqlbastion's RSS with many idle logged-in clients.

    MySQL carries the target (MariaDB's max_connections is raised for it).
    PostgreSQL is capped by the test server's max_connections (500), since every
    client session holds a backend session; its per-connection cost is shown.
    """
    results: list[WorkloadResult] = []
    name = f"{opts.connections:,} idle MySQL client connections: sqlbastion RSS"
    target = Target(kind="at_most", value=300.0)
    proxy = env.proxies.get("mysql")
    ep = env.endpoint("mysql", "sqlbastion")
    if proxy is None or isinstance(ep, str):
        reason = ep if isinstance(ep, str) else "sqlbastion (mysql) did not start"
        results.append(
            WorkloadResult(name=name, unit="MiB", figures=(Figure(path="sqlbastion", reason=reason),), target=target)
        )
    else:
        before = services.rss_mib(proxy.proc.pid)
        say(f"opening {opts.connections:,} idle MySQL connections through sqlbastion (RSS {before:.1f} MiB)")
        idle = open_idle_mysql(ep, opts.connections)
        opened = len(idle.connections)
        try:
            time.sleep(2)  # let the proxy settle: buffers allocated at login are what an idle session keeps
            after = services.rss_mib(proxy.proc.pid)
        finally:
            idle.close()
        say(f"RSS {after:.1f} MiB with {opened:,} open (in {idle.seconds:.1f}s; error: {idle.first_error})")
        results.append(_idle_result(name, target, opts.connections, opened, idle.first_error, before, after))
    pg_count = min(opts.connections, PG_IDLE_MAX)
    pg_name = f"{pg_count:,} idle PostgreSQL client connections: sqlbastion RSS"
    pg_proxy = env.proxies.get("postgres")
    pg_ep = env.endpoint("postgres", "sqlbastion")
    if pg_proxy is None or isinstance(pg_ep, str):
        reason = pg_ep if isinstance(pg_ep, str) else "sqlbastion (postgres) did not start"
        results.append(WorkloadResult(name=pg_name, unit="MiB", figures=(Figure(path="sqlbastion", reason=reason),)))
        return results
    pid = pg_proxy.proc.pid
    before = services.rss_mib(pid)
    say(f"opening {pg_count:,} idle PostgreSQL connections through sqlbastion (RSS {before:.1f} MiB)")
    figures = hold_idle_postgres(pg_ep, pg_count, lambda: services.rss_mib(pid))
    say(f"RSS {figures.measured:.1f} MiB with {figures.opened:,} open (error: {figures.first_error})")
    results.append(_idle_result(pg_name, None, pg_count, figures.opened, figures.first_error, before, figures.measured))
    return results


def _external(script: str, timeout: float) -> list[external.ExternalFigure] | str:
    """A component benchmark's figures (run with ``--json``), or the reason there are none."""
    try:
        out = external.run_script(ROOT / "bench" / script, timeout=timeout, args=("--json",))
    except RuntimeError as exc:
        return str(exc)
    return external.parse_figures(out)


def _one(
    name: str, unit: str, value: float | None, missing: str, target: Target | None, note: str | None = None
) -> WorkloadResult:
    fig = (
        Figure(path="sqlbastion", samples=(value,)) if value is not None else Figure(path="sqlbastion", reason=missing)
    )
    return WorkloadResult(name=name, unit=unit, figures=(fig,), target=target, note=note)


def measure_policy() -> list[WorkloadResult]:
    """bench/policy_bench.py: median µs per decision on a 3-table join (hit, literal-only change, miss)."""
    rows = (
        ("policy decision, cache hit (same text)", "hit", Target(kind="at_most", value=30.0)),
        ("policy decision, fingerprint hit (new literal)", "fingerprint_hit", None),
        ("policy decision, cache miss (3-table join)", "miss", Target(kind="at_most", value=2000.0)),
    )
    figures = _external("policy_bench.py", 600)
    if isinstance(figures, str):
        return [_one(name, "µs", None, figures, target) for name, _, target in rows]
    results = []
    for name, key, target in rows:
        value = external.named(figures, f"{key}.median_us")
        if value is None:
            value = external.pick(figures, words=(key.replace("_", " "),), kind="latency")
        note = None
        if key == "fingerprint_hit":
            note = "what pgbench and sysbench hit: the same statement with a new literal each time"
        results.append(_one(name, "µs", value, "policy_bench.py printed no such figure", target, note))
    return results


def measure_rows() -> WorkloadResult:
    """bench/rows_bench.py: CPU µs per masked PostgreSQL DataRow rewritten in process (no sockets)."""
    name = "masked DataRow rewrite in process (4 columns, 2 masked)"
    figures = _external("rows_bench.py", 300)
    if isinstance(figures, str):
        return _one(name, "µs", None, figures, None)
    # The headline is what the relay runs: the compiled rewriter, or its Python reference without it.
    current = external.named(figures, "compiled_us_per_row")
    if current is None:
        current = external.named(figures, "rowref_us_per_row")
    parts = [
        f"{label} {value:.2f} µs"
        for label, key in (
            ("splitting frames only", "floor_us_per_row"),
            ("the two maskers only", "maskers_only_us_per_row"),
            ("the old per-row decode/mask/encode", "current_us_per_row"),
            ("the pure-Python rewriter", "rowref_us_per_row"),
            ("the compiled rewriter", "compiled_us_per_row"),
            ("MySQL text rows: mask_text_row per packet", "mysql_current_us_per_row"),
            ("MySQL compiled", "mysql_compiled_us_per_row"),
        )
        if (value := external.named(figures, key)) is not None
    ]
    note = "per row: " + ", ".join(parts) if parts else None
    return _one(name, "µs", current, "rows_bench.py printed no figure", None, note)


def measure_audit() -> WorkloadResult:
    """bench/audit_bench.py: events per second end to end into the SQLite sink."""
    name = "audit events into the SQLite sink, sustained"
    target = Target(kind="at_least", value=20_000.0)
    figures = _external("audit_bench.py", 900)
    if isinstance(figures, str):
        return _one(name, "events/s", None, figures, target)
    value = external.named(figures, "burst.events_per_second")
    if value is None:
        value = external.pick(figures, words=(), kind="rate")
    lag, base = (
        external.named(figures, "paced.loop_lag_ms_p99"),
        external.named(figures, "baseline_loop.loop_lag_ms_p99"),
    )
    note = None
    if lag is not None and base is not None:
        note = f"event-loop lag p99 while emitting 20,000 events/s: {lag:.2f} ms (without the pipeline {base:.2f} ms)"
    return _one(name, "events/s", value, "audit_bench.py printed no events/s figure", target, note)


# -- profiling -------------------------------------------------------------


def profile_sqlbastion(opts: Options, env: Environment, loads: list[Workload]) -> list[str]:
    """Run each protocol's first workload and its masked scan once more under py-spy, per sqlbastion path."""
    findings: list[str] = []
    if pyspy.py_spy() is None:
        return ["py-spy is not installed (pip install -e '.[dev]')"]
    profiles = ROOT / "var" / "bench" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for w in loads:
        for path, proxy_key in (("sqlbastion", w.protocol), ("sqlbastion_bare", f"{w.protocol}:bare")):
            proxy = env.proxies.get(proxy_key)
            ep = env.endpoint(w.protocol, path)
            kind = f"{proxy_key}-{'scan' if w.key.startswith('mask') else 'load'}"
            if proxy is None or isinstance(ep, str) or kind in seen or path not in w.paths:
                continue
            seen.add(kind)
            findings += _profile_one(opts, w, path, proxy.proc.pid, ep, profiles / f"{w.key}-{path}.txt")
    return findings


def _profile_one(opts: Options, w: Workload, path: str, pid: int, ep: Endpoint, out: Path) -> list[str]:
    spy = pyspy.record(pid, opts.duration + 2, out)
    if spy is None:
        return []
    time.sleep(0.5)  # py-spy attaches before the load starts
    with contextlib.suppress(WorkloadError):
        w.measure(ep)
    try:
        _, err = spy.communicate(timeout=opts.duration + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
        return [f"{w.name} ({path}): py-spy did not finish"]
    if not out.exists():
        return [f"{w.name} ({path}): py-spy failed: {' '.join(err.decode(errors='replace').split())[:160]}"]
    summary = pyspy.summarize_collapsed(out.read_text(errors="replace"), only_under=("sqlbastion", "thread ("))
    say(f"profile of {w.name} through {path}: {out}")
    for line in summary.lines(top=8):
        say(f"{w.name} ({PATHS[path]}): {line}")
    return [f"{w.name} ({PATHS[path]}): {summary.brief(top=8)}"]
