"""The session's own cost per statement: ``authorize`` → ``mask_plan`` → ``finish``, without sockets.

Both proxies call these three for every statement. This benchmark runs them as
the PostgreSQL relay does for a ``pgbench -S`` transaction, with the real
runtime pieces ``serve`` composes: a ``PolicyStore`` over a policy file (the
bench person may read the bench database; two columns of ``bench_mask`` are
classified and masked for their role, as in ``bench/services.py``), a catalog,
the ``MaskingPlanner`` and either a discarding audit hook (``discard``: the
session, the policy and the metrics alone) or the real audit pipeline
(``pipeline``: intake, chained spool and one SQLite sink delivered by a child
process, as ``serve`` builds it).

Workloads:

* ``point``  — ``SELECT abalance FROM pgbench_accounts WHERE aid = N``, a new
  literal per statement (a fingerprint hit in the decision cache, what
  pgbench and real applications send), one result column, nothing to mask.
* ``masked`` — ``SELECT id, mobile, id_card, city FROM bench_mask WHERE id = N``:
  the plan masks two of the four columns.

Figures: thread CPU µs per statement, median of rounds. ``hot``: one session,
statements back to back. ``cold``: eight sessions in turn with 8 MiB of memory
touched before each statement (outside the timed part), so the interpreter's
code and the session's objects are out of the CPU caches, as in a proxy
process sharing two cores with pgbench and the servers; judge changes by
``cold``. With the pipeline, ``proc`` is the process's CPU per statement
including the audit writer thread's (after the writer caught up).

Run: ``.venv/bin/python bench/session_bench.py [--statements 20000] [--rounds 5] [--json] [--profile]``
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # bench/profile.py would shadow the standard library's profile module that cProfile imports.
    sys.path[0] = str(Path(__file__).resolve().parent.parent / "src")

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlbastion.audit.delivery import DeliveryProcess
from sqlbastion.audit.intake import IntakeRing, ring_path_for
from sqlbastion.audit.pipeline import AuditPipeline
from sqlbastion.audit.spool import Spool
from sqlbastion.config import loads
from sqlbastion.masking.plan import MaskingPlanner
from sqlbastion.masking.policy import merge_masking_policies, parse_masking_policy
from sqlbastion.policies.catalog import Catalog, TableInfo
from sqlbastion.policies.engine import PolicyEngine
from sqlbastion.policies.loader import load_policy_files
from sqlbastion.policies.store import LoadedEngine, PolicyStore
from sqlbastion.proxy.session import AuditHook, ClientInfo, DiscardAudit, ResultColumn, Runtime, Session
from sqlbastion.proxy.session import StatementOutcome as Outcome

BACKEND = "pg"
DATABASE = "bench"
POLICY = f"""
[[persons]]
name = "bench"
roles = ["bench"]
networks = ["127.0.0.0/8"]

[[roles]]
name = "bench"
duties = ["use"]
grants = [{{ actions = ["select"], objects = ["{BACKEND}:{DATABASE}.*", "{BACKEND}:{DATABASE}.public.*"] }}]
masks = {{ mobile = "mobile", id_card = "id_card" }}
unprovable = "block"

[[classifications]]
objects = ["{BACKEND}:{DATABASE}.public.bench_mask.mobile"]
type = "mobile"
level = 3

[[classifications]]
objects = ["{BACKEND}:{DATABASE}.public.bench_mask.id_card"]
type = "id_card"
level = 4
"""
TABLES = (
    TableInfo(schema="public", name="pgbench_accounts", columns=("aid", "bid", "abalance", "filler")),
    TableInfo(schema="public", name="bench_mask", columns=("id", "mobile", "id_card", "city")),
)
WORKLOADS: dict[str, tuple[str, tuple[ResultColumn, ...], int]] = {
    # SQL with {n}, the result's columns as RowDescription + the catalog name them, masked columns.
    "point": (
        "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
        (
            ResultColumn(
                name="abalance", schema="public", table="pgbench_accounts", column="abalance", type_name="int4"
            ),
        ),
        0,
    ),
    "masked": (
        "SELECT id, mobile, id_card, city FROM bench_mask WHERE id = {n}",
        tuple(
            ResultColumn(name=c, schema="public", table="bench_mask", column=c, type_name=t)
            for c, t in (("id", "int4"), ("mobile", "text"), ("id_card", "text"), ("city", "text"))
        ),
        2,
    ),
}


class Bench:
    """The runtime of one measurement: policy store, planner and an audit hook, sharing one directory."""

    def __init__(self, directory: Path, audit: AuditHook) -> None:
        policy_file = directory / "policy.toml"
        policy_file.write_text(POLICY)
        self.settings = loads(
            f'[policy]\nfiles = ["{policy_file}"]\n'
            f'\n[[backends]]\nname = "{BACKEND}"\nprotocol = "postgres"\nlisten = "127.0.0.1:6432"\n'
            f'host = "127.0.0.1"\nport = 5432\nuser = "svc"\ndatabase = "{DATABASE}"\n'
        )
        loaded = load_policy_files([policy_file])
        masking = merge_masking_policies([parse_masking_policy(data, file=f) for f, data in loaded.documents])
        catalog = Catalog.build(backend=BACKEND, dialect="postgres", database=DATABASE, tables=TABLES)
        engine = PolicyEngine(loaded.policy, masking=masking, catalogs={BACKEND: catalog})
        planner = MaskingPlanner(masking)
        store = PolicyStore(
            self.settings, planner=planner, loaded=LoadedEngine(engine=engine, masking=masking, warnings=())
        )
        self.runtime = Runtime(engine=store, masking=planner, audit=audit)

    def session(self) -> Session:
        s = Session(
            runtime=self.runtime,
            backend=self.settings.backends[0],
            person="bench",
            client=ClientInfo(address="127.0.0.1", port=40000, protocol="postgres", application_name="pgbench"),
        )
        s.opened()
        return s


def statement(session: Session, sql: str, columns: tuple[ResultColumn, ...], masked: int) -> None:
    """One statement as the relay handles it; raises when the session's answer is not the expected one."""
    verdict = session.authorize(sql)
    if not verdict.allowed:
        raise SystemExit(f"the statement was refused: {verdict.message}")
    plan = session.mask_plan(verdict, columns)
    if sum(m is not None for m in plan.columns) != masked or plan.refuse is not None:
        raise SystemExit(f"unexpected mask plan: {plan}")
    session.finish(verdict, Outcome(rows=1, bytes_sent=64, backend_us=180))


def run_hot(session: Session, workload: str, start: int, count: int) -> int:
    """Thread CPU ns for ``count`` statements back to back on one session."""
    text, columns, masked = WORKLOADS[workload]
    sqls = [text.format(n=1 + (start + i) * 7919 % 100_000) for i in range(count)]
    clock = time.thread_time_ns
    began = clock()
    for sql in sqls:
        statement(session, sql, columns, masked)
    return clock() - began


_JUNK = bytearray(8 << 20)


def _evict() -> None:
    """Touch one byte per 64-byte cache line of 8 MiB: beyond L2 and most of a shared L3."""
    _JUNK[::64] = b"\x01" * (len(_JUNK) // 64)


def run_cold(sessions: list[Session], workload: str, start: int, count: int) -> int:
    text, columns, masked = WORKLOADS[workload]
    sqls = [text.format(n=1 + (start + i) * 7919 % 100_000) for i in range(count)]
    clock = time.thread_time_ns
    total = 0
    for i, sql in enumerate(sqls):
        session = sessions[i % len(sessions)]
        _evict()
        began = clock()
        statement(session, sql, columns, masked)
        total += clock() - began
    return total


@contextmanager
def pipeline(directory: Path) -> Iterator[AuditPipeline]:
    """The audit pipeline as ``serve`` builds it (bench/audit_bench.py does the same)."""
    spool = Spool(directory / "spool", secret=b"bench", segment_bytes=64 << 20)
    ring_path = ring_path_for(spool.directory)
    process = DeliveryProcess(
        spool_dir=spool.directory,
        base_dir=directory,
        sinks=[{"type": "sqlite", "name": "sqlite", "path": str(directory / "audit.db"), "batch_size": 2000}],
        grace_s=60,
    )
    p = AuditPipeline(
        spool=spool,
        sinks=[],
        fsync="interval",
        fsync_interval_ms=50,
        max_queue=1_000_000,
        intake_ring=IntakeRing(ring_path) if ring_path is not None else None,
        delivery_process=process,
    )
    p.open()
    try:
        yield p
    finally:
        p.close()


def _caught_up(p: AuditPipeline, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while p._written_count < p._emitted and time.monotonic() < deadline:
        time.sleep(0.005)


def measure(audit_mode: str, statements: int, rounds: int, cold_statements: int) -> dict[str, float]:
    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sqlbastion-session-bench-") as d:
        directory = Path(d)
        with pipeline(directory) if audit_mode == "pipeline" else _nothing() as p:
            bench = Bench(directory, p if p is not None else DiscardAudit())
            for workload in WORKLOADS:
                hot: list[float] = []
                cold: list[float] = []
                proc: list[float] = []
                for r in range(rounds):
                    session = bench.session()
                    run_hot(session, workload, 0, max(1, statements // 10))  # warm-up
                    if p is not None:
                        _caught_up(p)
                    cpu = time.process_time_ns()
                    hot.append(run_hot(session, workload, r * statements, statements) / statements / 1000)
                    if p is not None:
                        _caught_up(p)
                        proc.append((time.process_time_ns() - cpu) / statements / 1000)
                    sessions = [bench.session() for _ in range(8)]
                    run_cold(sessions, workload, 0, 80)
                    cold_ns = run_cold(sessions, workload, r * cold_statements, cold_statements)
                    cold.append(cold_ns / cold_statements / 1000)
                    for s in (session, *sessions):
                        s.closed("bench")
                result[f"{workload}_hot"] = round(statistics.median(hot), 2)
                result[f"{workload}_hot_best"] = round(min(hot), 2)
                result[f"{workload}_cold"] = round(statistics.median(cold), 1)
                if proc:
                    result[f"{workload}_proc"] = round(statistics.median(proc), 1)
    return result


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def profile(statements: int) -> None:
    import cProfile  # only here: bench/profile.py shadows its profile module when bench/ is on sys.path
    import pstats

    with tempfile.TemporaryDirectory(prefix="sqlbastion-session-bench-") as d:
        bench = Bench(Path(d), DiscardAudit())
        for workload in WORKLOADS:
            session = bench.session()
            run_hot(session, workload, 0, 1000)
            prof = cProfile.Profile()
            prof.enable()
            run_hot(session, workload, 1000, statements)
            prof.disable()
            print(f"--- {workload}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(22)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--statements", type=int, default=20000)
    parser.add_argument("--cold-statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--audit", choices=("discard", "pipeline", "both"), default="both")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.statements)
        return
    modes = ("discard", "pipeline") if args.audit == "both" else (args.audit,)
    figures: dict[str, dict[str, float]] = {
        m: measure(m, args.statements, args.rounds, args.cold_statements) for m in modes
    }
    if args.json:
        print(json.dumps(figures))
        return
    print("µs of thread CPU per statement in Session.authorize + mask_plan + finish (real policy and masking)")
    print("  audit     workload   hot (median / best)   cold (median)   process incl. audit writer")
    for mode, f in figures.items():
        for w in WORKLOADS:
            proc = f"{f[w + '_proc']:9.1f}" if w + "_proc" in f else "        –"
            hot = f"{f[w + '_hot']:8.2f} / {f[w + '_hot_best']:<8.2f}"
            print(f"  {mode:9} {w:9} {hot}  {f[w + '_cold']:12.1f}   {proc}")


if __name__ == "__main__":
    main()
