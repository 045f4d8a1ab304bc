"""The benchmark run: start everything, measure every path in alternating rounds, report.

Strategy: all figures of a run come from the same machine within minutes, and
the paths of one workload take turns (round 1: direct, PgBouncer, sqlbastion;
round 2 starts one further along …), so drift in the machine's speed (other
processes, thermal limits, caches) falls on every path alike. Each path gets
an unrecorded warm-up first. A path whose component is missing, or that fails
a round, is reported as ``n/a (reason)`` and skipped for the rest of the run;
nothing a missing part does stops the other measurements.

Budget with the defaults (8 s rounds, 3 rounds) on two cores: about 12 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pymysql

from bench import external, profile, services
from bench.idle import hold_idle_postgres, open_idle_mysql
from bench.machine import describe_machine
from bench.report import (
    PATHS,
    Figure,
    RunInfo,
    Target,
    WorkloadResult,
    append_run,
    markdown_table,
    render_run,
    results_data,
)
from bench.workloads import Endpoint, WorkloadError, run_pgbench, run_scan, run_sysbench
from sqlbastion.devtools.servers import ServerError, ServerInfo, start_mariadb, start_postgres, stop

__all__ = ["GROUPS", "main"]

ROOT = Path(__file__).resolve().parent.parent
GROUPS = ("postgres", "mysql", "masking", "connections", "policy", "audit")
# Each PostgreSQL client session holds a backend session; the test server allows 500.
PG_IDLE_MAX = 400
MASK_SQL = f"SELECT id, mobile, id_card, city FROM {services.MASK_TABLE}"


def _say(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


@dataclass(frozen=True, kw_only=True)
class Options:
    duration: int
    rounds: int
    warmup: int
    clients: int
    scale: int
    mask_rows: int
    connections: int
    groups: frozenset[str]
    profile: bool
    record: Path | None
    keep: bool
    bare: bool = False


@dataclass(frozen=True, kw_only=True)
class Workload:
    """One row of the table measured in rounds: a client tool against each path of one protocol."""

    key: str
    name: str
    unit: str
    protocol: str  # "mysql" or "postgres": which endpoints it runs against
    paths: tuple[str, ...]
    measure: Callable[[Endpoint], float]
    target: Target | None = None
    baseline: str | None = None
    # Workloads of time (seconds) get no warm-up of their own beyond the first round's caches.
    warm: Callable[[Endpoint], object] | None = None


@dataclass
class Collector:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, path: str, value: float) -> None:
        self.samples.setdefault((key, path), []).append(value)

    def fail(self, key: str, path: str, reason: str) -> None:
        self.reasons.setdefault((key, path), reason)

    def failed(self, key: str, path: str) -> bool:
        return (key, path) in self.reasons

    def figure(self, key: str, path: str) -> Figure:
        if (key, path) in self.reasons:
            return Figure(path=path, reason=self.reasons[key, path])
        values = tuple(self.samples.get((key, path), ()))
        return Figure(path=path, samples=values, reason=None if values else "not measured")


@dataclass
class Environment:
    """What the run started: servers, and per protocol each path's endpoint or the reason it has none."""

    run_dir: Path
    servers: dict[str, ServerInfo] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Endpoint | str]] = field(default_factory=dict)
    proxies: dict[str, services.Started] = field(default_factory=dict)
    server_versions: dict[str, str] = field(default_factory=dict)

    pids: dict[tuple[str, str], int] = field(default_factory=dict)

    def endpoint(self, protocol: str, path: str) -> Endpoint | str:
        return self.endpoints.get(protocol, {}).get(path, f"no {protocol} server")

    def add(self, protocol: str, started: services.Started) -> None:
        """A middlebox path is up: its endpoint for the clients, its process for CPU accounting."""
        self.endpoints.setdefault(protocol, {})[started.endpoint.path] = started.endpoint
        self.pids[protocol, started.endpoint.path] = started.proc.pid


# -- setting up ------------------------------------------------------------


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            # Root may lift the hard limit too; the servers and proxies started later inherit it.
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _setup(opts: Options, env: Environment) -> None:
    need_pg = bool(opts.groups & {"postgres", "masking", "connections"})
    need_my = bool(opts.groups & {"mysql", "masking", "connections"})
    if need_pg:
        _setup_postgres(opts, env)
    if need_my:
        _setup_mysql(opts, env)


def _setup_postgres(opts: Options, env: Environment) -> None:
    eps: dict[str, Endpoint | str] = {}
    env.endpoints["postgres"] = eps
    try:
        _say("starting PostgreSQL")
        server = start_postgres(env.run_dir / "postgres")
        env.servers["postgres"] = server
        _say(f"loading pgbench scale {opts.scale} and {opts.mask_rows:,} masked-scan rows")
        services.load_postgres_data(server, scale=opts.scale, mask_rows=opts.mask_rows)
        env.server_versions["PostgreSQL"] = _pg_version(server)
    except (ServerError, services.Unavailable, OSError, asyncpg.PostgresError) as exc:
        for p in ("direct", "pgbouncer", "relay", "sqlbastion"):
            eps[p] = f"PostgreSQL: {exc}"
        return
    direct = services.direct_endpoint(server)
    eps["direct"] = direct
    try:
        env.add("postgres", services.start_pgbouncer(server, env.run_dir, clients=opts.clients))
    except (services.Unavailable, OSError) as exc:
        eps["pgbouncer"] = f"PgBouncer: {exc}"
    try:
        env.add("postgres", services.start_relay(direct, env.run_dir))
    except (services.Unavailable, OSError) as exc:
        eps["relay"] = f"relay: {exc}"
    _start_proxy("postgres", server, env, bare=opts.bare)


def _setup_mysql(opts: Options, env: Environment) -> None:
    eps: dict[str, Endpoint | str] = {}
    env.endpoints["mysql"] = eps
    try:
        _say("starting MariaDB")
        server = start_mariadb(env.run_dir / "mariadb")
        env.servers["mysql"] = server
        _say(f"loading sysbench tables and {opts.mask_rows:,} masked-scan rows")
        services.load_mysql_data(server, mask_rows=opts.mask_rows, connections=opts.connections)
        env.server_versions["MariaDB"] = _mysql_version(server)
    except (ServerError, services.Unavailable, OSError, pymysql.MySQLError) as exc:
        for p in ("direct", "relay", "sqlbastion"):
            eps[p] = f"MariaDB: {exc}"
        return
    direct = services.direct_endpoint(server)
    eps["direct"] = direct
    try:
        env.add("mysql", services.start_relay(direct, env.run_dir))
    except (services.Unavailable, OSError) as exc:
        eps["relay"] = f"relay: {exc}"
    _start_proxy("mysql", server, env, bare=opts.bare)


def _start_proxy(protocol: str, server: ServerInfo, env: Environment, *, bare: bool) -> None:
    for path in ("sqlbastion_bare", "sqlbastion") if bare else ("sqlbastion",):
        try:
            started = services.start_sqlbastion(protocol, server, env.run_dir, bare=path == "sqlbastion_bare")
        except (services.Unavailable, OSError) as exc:
            env.endpoints[protocol][path] = str(exc)
            _say(f"{path} ({protocol}): n/a: {exc}")
            continue
        env.proxies[protocol if path == "sqlbastion" else f"{protocol}:bare"] = started
        env.add(protocol, started)


def _pg_version(server: ServerInfo) -> str:
    async def q() -> str:
        conn = await asyncpg.connect(
            host=server.host,
            port=server.port,
            user=server.admin_user,
            password=server.admin_password,
            database="postgres",
        )
        try:
            return str(await conn.fetchval("SELECT version()"))
        finally:
            await conn.close()

    return asyncio.run(q()).split(" on ")[0]


def _mysql_version(server: ServerInfo) -> str:
    conn = pymysql.connect(host=server.host, port=server.port, user=server.admin_user, password=server.admin_password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
            return f"MariaDB {row[0] if row else 'unknown'}"
    finally:
        conn.close()


# -- the workloads ---------------------------------------------------------


def _workloads(opts: Options) -> list[Workload]:
    d, c = opts.duration, opts.clients
    pg_bar = Target(kind="ratio_at_least", value=1.0, against="pgbouncer", first_bar=0.8)
    relay_bar = Target(kind="ratio_at_least", value=0.9, against="relay")
    mask_bar = Target(kind="ratio_at_most", value=2.0, against="direct")
    bare = ("sqlbastion_bare",) if opts.bare else ()
    out: list[Workload] = []
    if "postgres" in opts.groups:
        for mode in ("simple", "prepared"):

            def bench(ep: Endpoint, mode: str = mode, seconds: int = d) -> float:
                return run_pgbench(ep, mode=mode, clients=c, seconds=seconds)

            def warm_pg(ep: Endpoint, b: Callable[..., float] = bench) -> float:
                return b(ep, seconds=opts.warmup)

            out.append(
                Workload(
                    key=f"pgbench-{mode}",
                    name=f"pgbench -S -M {mode}, {c} clients",
                    unit="tps",
                    protocol="postgres",
                    paths=("direct", "pgbouncer", "relay", *bare, "sqlbastion"),
                    measure=bench,
                    warm=warm_pg,
                    target=pg_bar,
                )
            )
    if "mysql" in opts.groups:
        for test, ps_mode, label, target in (
            ("oltp_point_select", "auto", "prepared statements", relay_bar),
            ("oltp_point_select", "disable", "--db-ps-mode=disable", relay_bar),
            ("oltp_read_only", "auto", "prepared statements", None),
        ):

            def measure(ep: Endpoint, test: str = test, ps_mode: str = ps_mode, seconds: int = d) -> float:
                return run_sysbench(ep, test=test, threads=c, seconds=seconds, ps_mode=ps_mode).tps

            def warm_my(ep: Endpoint, m: Callable[..., float] = measure) -> float:
                return m(ep, seconds=opts.warmup)

            out.append(
                Workload(
                    key=f"sysbench-{test}-{ps_mode}",
                    name=f"sysbench {test}, {label}, {c} threads",
                    unit="tps",
                    protocol="mysql",
                    paths=("direct", "relay", *bare, "sqlbastion"),
                    measure=measure,
                    warm=warm_my,
                    target=target,
                    baseline=None if target else "relay",
                )
            )
    if "masking" in opts.groups:
        for protocol, label in (("mysql", "MySQL (mariadb CLI)"), ("postgres", "PostgreSQL (psql)")):

            def scan(ep: Endpoint, protocol: str = protocol) -> float:
                return run_scan(ep, protocol=protocol, sql=MASK_SQL, expect_rows=opts.mask_rows, timeout=600)

            out.append(
                Workload(
                    key=f"mask-{protocol}",
                    name=f"{opts.mask_rows:,}-row SELECT, 2 masked columns, {label}",
                    unit="s",
                    protocol=protocol,
                    paths=("direct", "sqlbastion"),
                    measure=scan,
                    target=mask_bar,
                )
            )
    return out


def _rotate(paths: list[str], n: int) -> list[str]:
    if not paths:
        return paths
    n %= len(paths)
    return paths[n:] + paths[:n]


def _measure_rounds(opts: Options, env: Environment, loads: list[Workload], coll: Collector) -> None:
    runnable: dict[str, list[tuple[str, Endpoint]]] = {}
    for w in loads:
        runnable[w.key] = []
        for path in w.paths:
            ep = env.endpoint(w.protocol, path)
            if isinstance(ep, str):
                coll.fail(w.key, path, ep)
            else:
                runnable[w.key].append((path, ep))
    if "masking" in opts.groups:
        _check_masked(env, coll)
    if opts.warmup > 0:
        for w in loads:
            if w.warm is None:
                continue
            for path, ep in runnable[w.key]:
                try:
                    w.warm(ep)
                except WorkloadError as exc:
                    coll.fail(w.key, path, str(exc))
                    _say(f"{w.name} / {path}: warm-up failed: {exc}")
    for rnd in range(opts.rounds):
        for w in loads:
            order = _rotate([p for p, _ in runnable[w.key]], rnd)
            eps = dict(runnable[w.key])
            for path in order:
                if coll.failed(w.key, path):
                    continue
                pid = env.pids.get((w.protocol, path))
                cpu_before = _cpu(pid)
                threads_before = _threads(pid) if path.startswith("sqlbastion") else None
                try:
                    value = w.measure(eps[path])
                except WorkloadError as exc:
                    coll.fail(w.key, path, str(exc))
                    _say(f"round {rnd + 1} {w.name} / {path}: failed: {exc}")
                    continue
                coll.add(w.key, path, value)
                cpu_after = _cpu(pid)
                extra = ""
                if cpu_before is not None and cpu_after is not None and value > 0:
                    used = cpu_after - cpu_before
                    # Throughput: CPU µs the middlebox spent per transaction; time: CPU seconds per run.
                    per = used / (value * opts.duration) * 1e6 if w.unit == "tps" else used
                    coll.add(f"{w.key}:cpu", path, per)
                    extra = f" ({per:,.1f} {'CPU µs/tx' if w.unit == 'tps' else 'CPU s'})"
                    threads_after = _threads(pid)
                    if pid is not None and threads_before is not None and threads_after is not None:
                        # The event loop is the main thread; the others are the audit writer and sinks.
                        loop = threads_after.get(pid, 0.0) - threads_before.get(pid, 0.0)
                        scale = 1e6 / (value * opts.duration) if w.unit == "tps" else 1.0
                        coll.add(f"{w.key}:cpu-loop", path, loop * scale)
                        coll.add(f"{w.key}:cpu-threads", path, (used - loop) * scale)
                _say(f"round {rnd + 1}/{opts.rounds} {w.name} / {path}: {value:,.2f} {w.unit}{extra}")


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return services.cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def _threads(pid: int | None) -> dict[int, float] | None:
    if pid is None:
        return None
    try:
        return services.thread_cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return None


def _split_note(w: Workload, coll: Collector) -> str | None:
    """Where sqlbastion's CPU went: the event loop against its other threads (audit writer, sinks)."""
    parts = []
    unit = "µs/tx" if w.unit == "tps" else "s"
    for path in ("sqlbastion_bare", "sqlbastion"):
        loop, other = coll.samples.get((f"{w.key}:cpu-loop", path)), coll.samples.get((f"{w.key}:cpu-threads", path))
        if loop and other:
            med_loop, med_other = statistics.median(loop), statistics.median(other)
            parts.append(f"{PATHS[path]}: event loop {med_loop:,.1f} {unit}, other threads {med_other:,.1f} {unit}")
    return "; ".join(parts) or None


def _cpu_result(w: Workload, coll: Collector) -> WorkloadResult | None:
    """The middleboxes' own CPU per transaction (or per scan): robust when other work shares the cores."""
    paths = [p for p in w.paths if p != "direct"]
    key = f"{w.key}:cpu"
    if not any((key, p) in coll.samples for p in paths):
        return None
    figures = tuple(
        Figure(path=p, samples=tuple(coll.samples[key, p]))
        if (key, p) in coll.samples
        else Figure(path=p, reason=coll.reasons.get((w.key, p), "not measured"))
        for p in paths
    )
    if w.unit == "tps":
        return WorkloadResult(
            name=f"{w.name}: CPU per transaction",
            unit="µs",
            figures=figures,
            baseline="relay" if "relay" in paths else None,
            note=_split_note(w, coll),
        )
    return WorkloadResult(name=f"{w.name}: CPU per run", unit="s", figures=figures, note=_split_note(w, coll))


def _first_row(ep: Endpoint, protocol: str) -> str:
    sql = MASK_SQL + " WHERE id = 1"
    if protocol == "mysql":
        cmd = ["mariadb", "--no-defaults", "--batch", "--skip-column-names", "--skip-ssl"]
        cmd += [f"--host={ep.host}", f"--port={ep.port}", f"--user={ep.user}", ep.database, "-e", sql]
        extra = {"MYSQL_PWD": ep.password}
    else:
        cmd = ["psql", "-X", "-A", "-t", "-h", ep.host, "-p", str(ep.port), "-U", ep.user, "-d", ep.database]
        cmd += ["-c", sql]
        extra = {"PGPASSWORD": ep.password, "PGSSLMODE": "disable"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, **extra}, check=False)
    if r.returncode != 0:
        raise WorkloadError(" ".join(r.stderr.split())[:140] or f"{cmd[0]} exited {r.returncode}")
    return r.stdout.strip()


def _check_masked(env: Environment, coll: Collector) -> None:
    """The masked-scan figure only counts if sqlbastion really masked: compare one row with the direct one."""
    for protocol in ("mysql", "postgres"):
        key = f"mask-{protocol}"
        direct, proxied = env.endpoint(protocol, "direct"), env.endpoint(protocol, "sqlbastion")
        if isinstance(direct, str) or isinstance(proxied, str):
            continue
        try:
            clear, masked = _first_row(direct, protocol), _first_row(proxied, protocol)
        except WorkloadError as exc:
            coll.fail(key, "sqlbastion", str(exc))
            continue
        if clear == masked:
            coll.fail(key, "sqlbastion", "rows came back unmasked (policy or masking not applied)")
        else:
            coll.notes[key] = f"row 1 direct `{clear}` → through sqlbastion `{masked}`"


# -- connections, policy, audit --------------------------------------------


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


def _measure_connections(opts: Options, env: Environment) -> list[WorkloadResult]:
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
        _say(f"opening {opts.connections:,} idle MySQL connections through sqlbastion (RSS {before:.1f} MiB)")
        idle = open_idle_mysql(ep, opts.connections)
        opened = len(idle.connections)
        try:
            time.sleep(2)  # let the proxy settle: buffers allocated at login are what an idle session keeps
            after = services.rss_mib(proxy.proc.pid)
        finally:
            idle.close()
        _say(f"RSS {after:.1f} MiB with {opened:,} open (in {idle.seconds:.1f}s; error: {idle.first_error})")
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
    _say(f"opening {pg_count:,} idle PostgreSQL connections through sqlbastion (RSS {before:.1f} MiB)")
    figures = hold_idle_postgres(pg_ep, pg_count, lambda: services.rss_mib(pid))
    _say(f"RSS {figures.measured:.1f} MiB with {figures.opened:,} open (error: {figures.first_error})")
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


def _measure_policy() -> list[WorkloadResult]:
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


def _measure_rows() -> WorkloadResult:
    """bench/rows_bench.py: CPU µs per masked PostgreSQL DataRow rewritten in process (no sockets)."""
    name = "masked DataRow rewrite in process (4 columns, 2 masked)"
    figures = _external("rows_bench.py", 300)
    if isinstance(figures, str):
        return _one(name, "µs", None, figures, None)
    current = external.named(figures, "current_us_per_row")
    parts = [
        f"{label} {value:.2f} µs"
        for label, key in (
            ("splitting frames only", "floor_us_per_row"),
            ("the two maskers only", "maskers_only_us_per_row"),
            ("a chunk-at-a-time reference loop", "chunked_us_per_row"),
        )
        if (value := external.named(figures, key)) is not None
    ]
    note = "per row: " + ", ".join(parts) if parts else None
    return _one(name, "µs", current, "rows_bench.py printed no figure", None, note)


def _measure_audit() -> WorkloadResult:
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


def _profile(opts: Options, env: Environment, loads: list[Workload]) -> list[str]:
    """Run each protocol's first workload and its masked scan once more under py-spy, per sqlbastion path."""
    findings: list[str] = []
    if profile.py_spy() is None:
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
    spy = profile.record(pid, opts.duration + 2, out)
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
    summary = profile.summarize_collapsed(out.read_text(errors="replace"), only_under=("sqlbastion", "thread ("))
    _say(f"profile of {w.name} through {path}: {out}")
    for line in summary.lines(top=8):
        _say(f"{w.name} ({PATHS[path]}): {line}")
    return [f"{w.name} ({PATHS[path]}): {summary.brief(top=8)}"]


# -- the run ---------------------------------------------------------------


def run(opts: Options) -> list[WorkloadResult]:
    _raise_nofile(max(65536, opts.connections * 3 + 1024))
    run_dir = Path(tempfile.mkdtemp(prefix="sqlbastion-bench-"))
    os.chmod(run_dir, 0o755)  # the servers run as their own accounts and need to reach it
    env = Environment(run_dir=run_dir)
    coll = Collector()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    results: list[WorkloadResult] = []
    findings: list[str] = []
    try:
        _setup(opts, env)
        # Idle connections first, on fresh proxies: memory freed after a workload stays in the
        # process (Python's allocator keeps its arenas), which would hide the per-connection cost.
        idle = _measure_connections(opts, env) if "connections" in opts.groups else []
        loads = _workloads(opts)
        _measure_rounds(opts, env, loads, coll)
        for w in loads:
            results.append(
                WorkloadResult(
                    name=w.name,
                    unit=w.unit,
                    figures=tuple(coll.figure(w.key, p) for p in w.paths),
                    target=w.target,
                    baseline=w.baseline,
                    note=coll.notes.get(w.key),
                )
            )
        results += [r for r in (_cpu_result(w, coll) for w in loads) if r is not None]
        if opts.profile:
            findings = _profile(opts, env, loads)
        results += idle
    finally:
        services.stop_all()
        for server in env.servers.values():
            stop(server)
        if opts.keep:
            _say(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    if "policy" in opts.groups:
        _say("policy decision benchmark")
        results += _measure_policy()
    if "masking" in opts.groups:
        _say("masked row rewrite, in process")
        results.append(_measure_rows())
    if "audit" in opts.groups:
        _say("audit sink benchmark")
        results.append(_measure_audit())
    elapsed = time.monotonic() - t0
    settings = {
        "rounds": f"{opts.rounds} × {opts.duration} s per path (warm-up {opts.warmup} s), paths alternating",
        "clients": f"{opts.clients} (pgbench clients, sysbench threads)",
        "data": f"pgbench scale {opts.scale}; sysbench 4 × 100,000 rows; {opts.mask_rows:,} masked-scan rows",
        "sqlbastion": "one `sqlbastion serve` process per protocol, policy and SQLite audit on"
        + ("; with `--bare`, also its listeners with an allow-all runtime" if opts.bare else ""),
        "run time": f"{elapsed / 60:.1f} min",
    }
    info = RunInfo(started=started, machine=describe_machine(env.server_versions), settings=settings, findings=findings)
    sys.stdout.write(markdown_table(results))
    data_dir = ROOT / "var" / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    data_file = data_dir / f"results-{started:%Y%m%dT%H%M}.json"
    data_file.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "machine": info.machine,
                "settings": info.settings,
                "results": results_data(results),
                "profile": list(findings),
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    _say(f"figures with every sample: {data_file}")
    if opts.record is not None:
        append_run(opts.record, render_run(info, results))
        _say(f"results appended to {opts.record}")
    return results


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="sqlbastion against direct connections, PgBouncer and a bare relay, in one run.",
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per path per round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded seconds per path first (default: 2)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench clients / sysbench threads (default: 8)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default: %(default)s)")
    parser.add_argument("--mask-rows", type=int, default=1_000_000, help="rows of the masked scan (default: 1M)")
    parser.add_argument("--connections", type=int, default=5000, help="idle connections to hold (default: 5000)")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups to run (default: all of {','.join(GROUPS)})"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of sqlbastion")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/performance.md")
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"), help="where results are appended")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (logs, configs) for inspection")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure sqlbastion's listener with an allow-all runtime (no policy, masking, audit)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in about three minutes: 1 round of 3 s, 100,000 masked rows, 500 idle connections, no record",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 3, 1, 1
        args.mask_rows, args.connections, args.no_record = 100_000, 500, True
    groups = frozenset(g.strip() for g in args.only.split(",") if g.strip())
    unknown = groups - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
    if args.duration < 1 or args.rounds < 1 or args.clients < 1 or args.mask_rows < 1 or args.connections < 1:
        parser.error("--duration, --rounds, --clients, --mask-rows and --connections must be positive")
    return Options(
        duration=args.duration,
        rounds=args.rounds,
        warmup=max(0, args.warmup),
        clients=args.clients,
        scale=max(1, args.scale),
        mask_rows=args.mask_rows,
        connections=args.connections,
        groups=groups,
        profile=not args.no_profile,
        record=None if args.no_record else Path(args.output),
        keep=args.keep,
        bare=args.bare,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    run(opts)
    return 0
