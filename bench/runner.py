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
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pymysql

from bench import services
from bench.machine import describe_machine
from bench.measures import measure_audit, measure_connections, measure_policy, measure_rows, profile_sqlbastion
from bench.model import GROUPS, MASK_SQL, ROOT, Collector, Environment, Options, Workload, say
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

__all__ = ["main", "parse_args", "run"]

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
        say("starting PostgreSQL")
        server = start_postgres(env.run_dir / "postgres")
        env.servers["postgres"] = server
        say(f"loading pgbench scale {opts.scale} and {opts.mask_rows:,} masked-scan rows")
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
        say("starting MariaDB")
        server = start_mariadb(env.run_dir / "mariadb")
        env.servers["mysql"] = server
        say(f"loading sysbench tables and {opts.mask_rows:,} masked-scan rows")
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
            say(f"{path} ({protocol}): n/a: {exc}")
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
                    say(f"{w.name} / {path}: warm-up failed: {exc}")
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
                    say(f"round {rnd + 1} {w.name} / {path}: failed: {exc}")
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
                        # The event loop is the main thread; the rest is the other threads and the child
                        # processes (audit writer, delivery and sinks).
                        loop = threads_after.get(pid, 0.0) - threads_before.get(pid, 0.0)
                        scale = 1e6 / (value * opts.duration) if w.unit == "tps" else 1.0
                        coll.add(f"{w.key}:cpu-loop", path, loop * scale)
                        coll.add(f"{w.key}:cpu-threads", path, (used - loop) * scale)
                say(f"round {rnd + 1}/{opts.rounds} {w.name} / {path}: {value:,.2f} {w.unit}{extra}")


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
    """Where sqlbastion's CPU went: the event loop against its other threads and its audit processes."""
    parts = []
    unit = "µs/tx" if w.unit == "tps" else "s"
    for path in ("sqlbastion_bare", "sqlbastion"):
        loop, other = coll.samples.get((f"{w.key}:cpu-loop", path)), coll.samples.get((f"{w.key}:cpu-threads", path))
        if loop and other:
            med_loop, med_other = statistics.median(loop), statistics.median(other)
            parts.append(
                f"{PATHS[path]}: event loop {med_loop:,.1f} {unit}, "
                f"other threads and audit processes {med_other:,.1f} {unit}"
            )
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
        idle = measure_connections(opts, env) if "connections" in opts.groups else []
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
            findings = profile_sqlbastion(opts, env, loads)
        results += idle
    finally:
        services.stop_all()
        for server in env.servers.values():
            stop(server)
        if opts.keep:
            say(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    if "policy" in opts.groups:
        say("policy decision benchmark")
        results += measure_policy()
    if "masking" in opts.groups:
        say("masked row rewrite, in process")
        results.append(measure_rows())
    if "audit" in opts.groups:
        say("audit sink benchmark")
        results.append(measure_audit())
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
    say(f"figures with every sample: {data_file}")
    if opts.record is not None:
        append_run(opts.record, render_run(info, results))
        say(f"results appended to {opts.record}")
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
        help="a smoke run of a few minutes: 1 round of 3 s, 100,000 masked rows, 500 idle connections, no record",
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
