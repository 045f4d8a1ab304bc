"""The benchmark harness's pure parts: figures, ratios, targets, the Markdown table, output parsers.

The benchmark itself is not run here (it takes minutes and needs quiet cores);
these tests keep the code that turns its measurements into a report correct.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bench import external, services
from bench.model import GROUPS, Collector, Environment, Workload
from bench.pyspy import summarize_collapsed
from bench.relay import start_relay
from bench.report import (
    Figure,
    RunInfo,
    Target,
    WorkloadResult,
    append_run,
    format_value,
    markdown_table,
    render_run,
    results_data,
)
from bench.runner import _measure_rounds, _rotate, parse_args
from bench.workloads import Endpoint, WorkloadError, parse_pgbench_tps, parse_sysbench, pgbench_command

from sqlbastion.app import validate_policy
from sqlbastion.config import load as load_config
from sqlbastion.devtools.servers import ServerInfo
from sqlbastion.policies.model import ColumnRef
from sqlbastion.policies.store import load_engine
from sqlbastion.users import UsersFile

PGBENCH_15 = """\
pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 3 s
number of transactions actually processed: 103354
number of failed transactions: 0 (0.000%)
latency average = 0.232 ms
initial connection time = 8.410 ms
tps = 34451.280137 (without initial connection time)
"""

SYSBENCH_1_0 = """\
sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)

Running the test with following options:
Number of threads: 8

SQL statistics:
    queries performed:
        read:                            95480
        write:                           0
        other:                           0
        total:                           95480
    transactions:                        95480  (31826.74 per sec.)
    queries:                             95480  (31826.74 per sec.)
    ignored errors:                      0      (0.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

Latency (ms):
         min:                                    0.08
         avg:                                    0.25
         max:                                   12.09
         95th percentile:                        0.50
         sum:                                23900.52
"""

PG_TARGET = Target(kind="ratio_at_least", value=1.0, against="pgbouncer", first_bar=0.8)


def _pg(sqlbastion: tuple[float, ...], pgbouncer: tuple[float, ...] = (1000.0, 1000.0, 1000.0)) -> WorkloadResult:
    return WorkloadResult(
        name="pgbench -S",
        unit="tps",
        figures=(
            Figure(path="direct", samples=(2000.0,)),
            Figure(path="pgbouncer", samples=pgbouncer),
            Figure(path="sqlbastion", samples=sqlbastion),
        ),
        target=PG_TARGET,
    )


# -- figures, ratios, targets ----------------------------------------------


def test_figure_is_the_median_of_its_samples_and_reports_its_spread() -> None:
    f = Figure(path="direct", samples=(100.0, 90.0, 110.0))
    assert f.value == 100.0
    assert f.spread == pytest.approx(0.10)
    assert Figure(path="direct", samples=(5.0,)).spread is None
    assert Figure(path="direct", reason="down").value is None


@pytest.mark.parametrize(
    ("samples", "status"),
    [
        ((1000.0,), "met"),
        ((1200.0,), "met"),
        ((900.0,), "first bar met"),
        ((800.0,), "first bar met"),
        ((700.0,), "missed"),
    ],
)
def test_throughput_ratio_against_pgbouncer_is_judged_with_the_first_bar(
    samples: tuple[float, ...], status: str
) -> None:
    r = _pg(samples)
    assert r.ratio() == pytest.approx(samples[0] / 1000.0)
    assert r.status() == status


def test_time_ratio_is_lower_is_better() -> None:
    target = Target(kind="ratio_at_most", value=2.0, against="direct")
    fast = WorkloadResult(
        name="scan",
        unit="s",
        figures=(Figure(path="direct", samples=(1.0,)), Figure(path="sqlbastion", samples=(1.9,))),
        target=target,
    )
    slow = WorkloadResult(
        name="scan",
        unit="s",
        figures=(Figure(path="direct", samples=(1.0,)), Figure(path="sqlbastion", samples=(2.5,))),
        target=target,
    )
    assert fast.status() == "met"
    assert slow.status() == "missed"


def test_absolute_targets_judge_the_subject_alone() -> None:
    rss = WorkloadResult(
        name="idle",
        unit="MiB",
        figures=(Figure(path="sqlbastion", samples=(250.0,)),),
        target=Target(kind="at_most", value=300),
    )
    audit = WorkloadResult(
        name="audit",
        unit="events/s",
        figures=(Figure(path="sqlbastion", samples=(15_000.0,)),),
        target=Target(kind="at_least", value=20_000),
    )
    assert rss.status() == "met"
    assert audit.status() == "missed"
    assert rss.ratio() is None


def test_a_missing_path_makes_the_ratio_and_status_not_available_never_a_guess() -> None:
    r = WorkloadResult(
        name="pgbench -S",
        unit="tps",
        figures=(Figure(path="pgbouncer", samples=(1000.0,)), Figure(path="sqlbastion", reason="listener missing")),
        target=PG_TARGET,
    )
    assert r.ratio() is None
    assert r.status() == "n/a"
    zero = _pg((10.0,), pgbouncer=(0.0,))
    assert zero.ratio() is None


def test_a_ratio_target_needs_its_baseline_path() -> None:
    with pytest.raises(ValueError, match="against"):
        Target(kind="ratio_at_least", value=1.0)


def test_a_baseline_without_a_target_still_shows_the_ratio() -> None:
    r = WorkloadResult(
        name="read only",
        unit="tps",
        figures=(Figure(path="relay", samples=(1000.0,)), Figure(path="sqlbastion", samples=(950.0,))),
        baseline="relay",
    )
    assert r.ratio() == pytest.approx(0.95)
    assert r.status() == "—"
    assert "0.95× bare relay" in markdown_table([r])


# -- formatting --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (34451.28, "tps", "34,451"),
        (1.2345, "s", "1.23"),
        (12.345, "µs", "12.3"),
        (287.61, "MiB", "287.6"),
        (25_000.4, "events/s", "25,000"),
    ],
)
def test_values_are_formatted_with_the_precision_of_their_unit(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_table_has_a_column_per_used_path_and_the_ratio_target_and_status() -> None:
    table = markdown_table([_pg((900.0, 950.0, 850.0))])
    lines = table.splitlines()
    assert lines[0] == "| Workload | Unit | direct | PgBouncer | sqlbastion | Ratio | Target | Status |"
    assert "bare relay" not in lines[0]  # no workload measured the relay
    assert lines[1].count("|") == lines[0].count("|")
    row = lines[2]
    assert "| 2,000 |" in row
    assert "| 900 ±6% |" in row  # median 900, half range 50 / 900
    assert "0.90× PgBouncer" in row
    assert "≥ 1.0× PgBouncer (first bar 0.8×)" in row
    assert row.endswith("| first bar met |")


def test_reasons_cannot_break_the_table() -> None:
    r = WorkloadResult(
        name="x | y",
        unit="tps",
        figures=(Figure(path="sqlbastion", reason="exited 1: a|b\nsecond line " + "z" * 400),),
    )
    header, _, row = markdown_table([r]).splitlines()[:3]
    assert row.count("|") == header.count("|") == 7  # workload, unit, sqlbastion, ratio, target, status
    assert "\n" not in row
    assert "n/a (exited 1: a/b second line" in row


def test_notes_follow_the_table() -> None:
    r = WorkloadResult(
        name="idle", unit="MiB", figures=(Figure(path="sqlbastion", samples=(100.0,)),), note="20.5 KiB per connection"
    )
    assert markdown_table([r]).rstrip().endswith("- idle: 20.5 KiB per connection")


def test_results_as_data_keep_every_sample_and_reason() -> None:
    data = results_data([_pg((900.0, 950.0, 850.0))])
    json.dumps(data)  # plain data
    (row,) = data
    figures = row["figures"]
    assert isinstance(figures, dict)
    assert figures["sqlbastion"] == {"value": 900.0, "samples": [900.0, 950.0, 850.0], "reason": None}
    assert row["ratio"] == pytest.approx(0.9)
    assert row["status"] == "first bar met"
    assert row["compared_with"] == "pgbouncer"


def test_runs_are_appended_under_the_results_heading(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "performance.md"
    info = RunInfo(
        started=datetime(2026, 11, 25, 1, 2, tzinfo=UTC),
        machine={"CPU": "Test CPU", "cores": "2"},
        settings={"rounds": "3 × 8 s"},
        findings=["pgbench: self 12.0%: data_received (sqlbastion/proxy/postgres/relay.py)"],
    )
    append_run(doc, render_run(info, [_pg((1000.0,))]))
    append_run(doc, render_run(info, [_pg((1100.0,))]))
    text = doc.read_text()
    assert text.startswith("# Performance")
    assert text.count("## Results") == 1
    assert text.count("### Run of 2026-11-25 01:02 UTC") == 2
    assert "- CPU: Test CPU" in text
    assert "self 12.0%" in text
    assert text.index("| 1,000 |") < text.index("| 1,100 |")


def test_appending_keeps_what_the_document_already_says(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nHow to run.\n\n## Results\n\n### Run of earlier\n\nold table\n")
    append_run(doc, "### Run of later\n")
    text = doc.read_text()
    assert text.index("How to run.") < text.index("old table") < text.index("### Run of later")


# -- tool output parsers -----------------------------------------------------


def test_pgbench_tps_is_read_from_its_summary() -> None:
    assert parse_pgbench_tps(PGBENCH_15) == pytest.approx(34451.280137)
    old = "tps = 1200.5 (including connections establishing)\ntps = 1234.5 (excluding connections establishing)\n"
    assert parse_pgbench_tps(old) == pytest.approx(1234.5)


def test_pgbench_failures_are_errors_not_figures() -> None:
    with pytest.raises(WorkloadError, match="3 failed"):
        parse_pgbench_tps(PGBENCH_15.replace("failed transactions: 0", "failed transactions: 3"))
    with pytest.raises(WorkloadError, match="no tps"):
        parse_pgbench_tps("pgbench: error: connection to server failed\n")
    lost_scale = PGBENCH_15.replace("scaling factor: 10", "scaling factor: 0") + (
        "pgbench: error: empty range given to random\n"
    )
    with pytest.raises(WorkloadError, match="scale 0"):
        parse_pgbench_tps(lost_scale)


def test_sysbench_figures_are_read_from_its_summary() -> None:
    f = parse_sysbench(SYSBENCH_1_0)
    assert f.tps == pytest.approx(31826.74)
    assert f.qps == pytest.approx(31826.74)
    assert f.errors == 0
    assert f.p95_ms == pytest.approx(0.50)


def test_sysbench_fatal_lines_are_errors() -> None:
    out = "FATAL: unable to connect to MySQL server on host '127.0.0.1', port 1: aborting...\n" + SYSBENCH_1_0
    with pytest.raises(WorkloadError, match="unable to connect"):
        parse_sysbench(out)
    with pytest.raises(WorkloadError, match="no summary"):
        parse_sysbench("sysbench 1.0.20\n")


def test_pgbench_command_never_carries_the_password() -> None:
    ep = Endpoint(path="direct", host="127.0.0.1", port=5432, user="u", password="secret-pw", database="bench")
    cmd = pgbench_command(ep, mode="prepared", clients=8, seconds=5)
    assert "secret-pw" not in " ".join(cmd)
    assert "--protocol=prepared" in cmd
    assert "-S" in cmd
    assert cmd[-1] == "bench"


def test_collapsed_stacks_give_self_and_inclusive_shares() -> None:
    raw = (
        "<module> (uvloop/__init__.py:10);run (asyncio/runners.py:118);"
        "data_received (/x/src/sqlbastion/proxy/postgres/relay.py:88);"
        "decide (/x/src/sqlbastion/policies/engine.py:40) 30\n"
        "<module> (uvloop/__init__.py:10);run (asyncio/runners.py:118);"
        "data_received (/x/src/sqlbastion/proxy/postgres/relay.py:91) 50\n"
        "<module> (uvloop/__init__.py:10);run (asyncio/runners.py:118) 20\n"
        "garbage line without count\n"
    )
    s = summarize_collapsed(raw, only_under="sqlbastion")
    assert s.samples == 100
    assert s.self_share[0] == ("data_received (sqlbastion/proxy/postgres/relay.py)", 0.5)
    inclusive = dict(s.inclusive_share)
    assert inclusive["data_received (sqlbastion/proxy/postgres/relay.py)"] == pytest.approx(0.8)
    assert inclusive["decide (sqlbastion/policies/engine.py)"] == pytest.approx(0.3)
    assert all("sqlbastion" in k for k in inclusive)
    assert s.lines(top=1)[0] == "100 samples"
    assert summarize_collapsed("").samples == 0


def test_thread_frames_give_each_threads_share() -> None:
    raw = (
        "thread (0x1): MainThread;run (uvloop/__init__.py:92);decide (/x/src/sqlbastion/policies/engine.py:40) 60\n"
        "thread (0x2): sqlbastion-audit-writer;_write_loop (/x/src/sqlbastion/audit/pipeline.py:270) 40\n"
    )
    s = summarize_collapsed(raw, only_under=("sqlbastion", "thread ("))
    inclusive = dict(s.inclusive_share)
    assert inclusive["thread (0x1): MainThread"] == pytest.approx(0.6)
    assert inclusive["thread (0x2): sqlbastion-audit-writer"] == pytest.approx(0.4)
    assert "run (uvloop/__init__.py)" not in inclusive


def test_component_benchmark_figures_from_json_or_text_lines() -> None:
    out = "\n".join(
        [
            "policy benchmark (3-table join)",
            json.dumps({"cache": {"hit_us": 11.5, "miss_ms": 1.25}}),
            "cache hit: 12.5 µs/decision",
        ]
    )
    figures = external.parse_figures(out)
    assert external.pick(figures, words=("hit",), kind="latency") == pytest.approx(11.5)
    assert external.pick(figures, words=("miss",), kind="latency") == pytest.approx(1250.0)
    text_only = external.parse_figures("cache miss, 3-table join: 840 us\naudit sqlite sink: 23,500 events/s\n")
    assert external.pick(text_only, words=("miss",), kind="latency") == pytest.approx(840.0)
    assert external.pick(text_only, words=(), kind="rate") == pytest.approx(23_500.0)
    assert external.pick(text_only, words=("hit",), kind="latency") is None


def test_component_benchmark_json_over_several_lines_is_read_by_name() -> None:
    out = json.dumps(
        {"burst": {"events": 200000, "events_per_second": 31500}, "paced": {"loop_lag_ms_p99": 0.8}}, indent=2
    )
    figures = external.parse_figures(out)
    assert external.named(figures, "burst.events_per_second") == 31500
    assert external.named(figures, "paced.loop_lag_ms_p99") == 0.8
    assert external.named(figures, "burst.nothing") is None
    policy = external.parse_figures(json.dumps({"hit": {"median_us": 9.5}, "fingerprint_hit": {"median_us": 210.0}}))
    assert external.named(policy, "hit.median_us") == 9.5
    assert external.named(policy, "fingerprint_hit.median_us") == 210.0


def test_component_benchmark_json_after_log_lines_is_still_read() -> None:
    """A component's own log lines on the same stream (an audit queue warning) come before the document."""
    log = "2026-11-25 04:47:48 [error    ] the audit intake queue is full component=audit.writer\n"
    out = log + json.dumps({"burst": {"events_per_second": 28331}, "paced": {"loop_lag_ms_p99": 2.9}}, indent=2)
    figures = external.parse_figures(out)
    assert external.named(figures, "burst.events_per_second") == 28331
    assert external.named(figures, "paced.loop_lag_ms_p99") == 2.9


# -- runner options ------------------------------------------------------------


def test_paths_take_turns_between_rounds() -> None:
    paths = ["direct", "pgbouncer", "sqlbastion"]
    assert [_rotate(paths, r)[0] for r in range(4)] == ["direct", "pgbouncer", "sqlbastion", "direct"]
    assert _rotate([], 3) == []


def test_options_are_validated(capsys: pytest.CaptureFixture[str]) -> None:
    opts = parse_args(["--only", "postgres,masking", "--rounds", "2", "--no-record"])
    assert opts.groups == frozenset({"postgres", "masking"})
    assert opts.record is None
    assert opts.rounds == 2
    with pytest.raises(SystemExit):
        parse_args(["--only", "postgres,nonsense"])
    with pytest.raises(SystemExit):
        parse_args(["--duration", "0"])
    assert "unknown group" in capsys.readouterr().err
    quick = parse_args(["--quick"])
    assert (quick.rounds, quick.duration, quick.mask_rows, quick.record) == (1, 3, 100_000, None)
    assert quick.groups == frozenset(GROUPS)


# -- the bare relay ------------------------------------------------------------


async def test_relay_copies_bytes_both_ways_and_half_closes() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF: the relay must pass the client's half-close on
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    relay = await start_relay(("127.0.0.1", 0), ("127.0.0.1", up_port))
    port = relay.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = bytes(range(256)) * 4096  # 1 MiB: more than one socket buffer each way
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        back = await asyncio.wait_for(reader.read(), 10)
        assert back == payload[::-1]
        writer.close()
    finally:
        relay.close()
        upstream.close()
        await relay.wait_closed()
        await upstream.wait_closed()


async def test_relay_closes_the_client_when_the_upstream_is_down() -> None:
    from sqlbastion.devtools.servers import free_port

    relay = await start_relay(("127.0.0.1", 0), ("127.0.0.1", free_port()))
    port = relay.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        relay.close()
        await relay.wait_closed()


# -- the generated sqlbastion configuration --------------------------------------


@pytest.mark.parametrize(
    ("protocol", "column"),
    [
        ("mysql", ColumnRef(database=None, schema="bench", table="bench_mask", column="{}")),
        ("postgres", ColumnRef(database="bench", schema="public", table="bench_mask", column="{}")),
    ],
)
def test_generated_configuration_loads_and_masks_the_two_scan_columns(
    tmp_path: Path, protocol: str, column: ColumnRef
) -> None:
    """If the policy format moves on, the benchmark must notice here, not measure an unmasked scan."""
    server = ServerInfo(
        kind="mariadb" if protocol == "mysql" else "postgres",
        host="127.0.0.1",
        port=3306,
        directory=str(tmp_path),
        pid=1,
        admin_user="admin",
        admin_password="admin-pw",
        service_user="sqlbastion",
        service_password="service-pw",
        socket="",
    )
    config, secret_env = services.write_sqlbastion_config(tmp_path, protocol, server, port=40000, admin_port=40001)
    settings = load_config(config)
    text = config.read_text()
    assert f'password = "env:{secret_env}"' in text  # the backend password is referenced, never written
    assert "service-pw" not in text
    assert validate_policy(settings) == []
    loaded = load_engine(settings)
    backend = settings.backends[0].name

    def treatment(name: str) -> str:
        ref = ColumnRef(database=column.database, schema=column.schema, table=column.table, column=name)
        return loaded.masking.treatment(("bench",), backend, ref).kind

    assert treatment("mobile") == "mask"
    assert treatment("id_card") == "mask"
    assert treatment("city") == "clear"
    assert UsersFile.load(settings.resolve_path(settings.users_file)).get(services.BENCH_PERSON) is not None


# -- the round loop, with stand-in workloads ---------------------------------------


def _endpoint(path: str) -> Endpoint:
    return Endpoint(path=path, host="127.0.0.1", port=1, user="u", password="p", database="bench")


def test_rounds_alternate_paths_and_a_failing_path_is_reported_not_retried(tmp_path: Path) -> None:
    calls: list[str] = []

    def measure(ep: Endpoint) -> float:
        calls.append(ep.path)
        if ep.path == "sqlbastion" and calls.count("sqlbastion") == 2:
            raise WorkloadError("exited 1: lost connection")
        return {"direct": 300.0, "pgbouncer": 200.0, "sqlbastion": 100.0}[ep.path]

    env = Environment(run_dir=tmp_path)
    env.endpoints["postgres"] = {p: _endpoint(p) for p in ("direct", "pgbouncer", "sqlbastion")}
    env.endpoints["postgres"]["relay"] = "relay: not listening"
    load = Workload(
        key="w",
        name="w",
        unit="tps",
        protocol="postgres",
        paths=("direct", "pgbouncer", "relay", "sqlbastion"),
        measure=measure,
    )
    opts = parse_args(["--rounds", "3", "--warmup", "0", "--only", "postgres", "--no-record"])
    coll = Collector()
    _measure_rounds(opts, env, [load], coll)
    # Round 1 starts with direct, round 2 one further along, round 3 further still.
    assert calls[:3] == ["direct", "pgbouncer", "sqlbastion"]
    assert calls[3:5] == ["pgbouncer", "sqlbastion"]  # sqlbastion fails here …
    assert calls[5:] == ["direct", "direct", "pgbouncer"]  # … and is not run again
    assert coll.figure("w", "direct").samples == (300.0, 300.0, 300.0)
    assert coll.figure("w", "relay").reason == "relay: not listening"
    assert coll.figure("w", "sqlbastion").reason == "exited 1: lost connection"
    assert coll.figure("w", "sqlbastion").value is None


def test_a_failed_warm_up_marks_the_path_before_any_round(tmp_path: Path) -> None:
    def measure(ep: Endpoint) -> float:
        return 1.0

    def warm(ep: Endpoint) -> float:
        if ep.path == "sqlbastion":
            raise WorkloadError("FATAL: unable to connect")
        return 1.0

    env = Environment(run_dir=tmp_path)
    env.endpoints["mysql"] = {p: _endpoint(p) for p in ("direct", "sqlbastion")}
    load = Workload(
        key="w", name="w", unit="tps", protocol="mysql", paths=("direct", "sqlbastion"), measure=measure, warm=warm
    )
    coll = Collector()
    _measure_rounds(parse_args(["--rounds", "2", "--only", "mysql"]), env, [load], coll)
    assert coll.figure("w", "sqlbastion").reason == "FATAL: unable to connect"
    assert coll.figure("w", "direct").samples == (1.0, 1.0)


async def test_relay_stops_reading_upstream_while_the_client_does_not_read() -> None:
    """Backpressure: a client that reads nothing must not make the relay buffer the whole stream.

    64 MiB is more than every buffer on the way can hold even with Linux's largest
    default autotuned socket buffers (tcp_rmem 32 MiB, tcp_wmem 4 MiB, and the
    client's receive buffer pinned small below).
    """
    total = 64 << 20
    upstream_writer: list[asyncio.StreamWriter] = []
    sent = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer.append(writer)
        chunk = b"x" * (1 << 20)
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        sent.set()
        writer.close()

    upstream = await asyncio.start_server(flood, "127.0.0.1", 0)
    relay = await start_relay(("127.0.0.1", 0), ("127.0.0.1", upstream.sockets[0].getsockname()[1]))
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)  # no autotuning on the client side
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", relay.sockets[0].getsockname()[1]))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
        await asyncio.sleep(1.0)  # the client reads nothing meanwhile
        assert not sent.is_set()  # the flood is held back: the relay stopped reading upstream
        received = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
            received += len(chunk)
        assert received == total
        assert sent.is_set()
        writer.close()
    finally:
        relay.close()
        upstream.close()
        await relay.wait_closed()
        await upstream.wait_closed()


def test_profile_brief_names_functions_without_start_up_frames() -> None:
    raw = (
        "thread (0x1): MainThread;<module> (/x/src/sqlbastion/cli.py:266);main (/x/src/sqlbastion/cli.py:260);"
        "run (/x/src/sqlbastion/proxy/server.py:109);_data_row (/x/src/sqlbastion/proxy/postgres/relay.py:500) 3\n"
    )
    brief = summarize_collapsed(raw, only_under=("sqlbastion", "thread (")).brief()
    assert brief.startswith("3 samples. Self: `_data_row (postgres/relay.py)` 100%.")
    assert "`thread (0x1): MainThread` 100%" in brief
    assert "cli.py" not in brief
    assert "server.py" not in brief


# -- the row-rewrite reference loop --------------------------------------------------


def test_chunked_row_rewrite_matches_the_current_path_including_nulls_and_other_messages() -> None:
    from bench.rows_bench import rewrite_chunked, rewrite_current, sample_rows, split_frames

    from sqlbastion.proxy.postgres import protocol as pg

    def star(value: bytes) -> bytes:
        return b"*" * len(value)

    def drop(value: bytes) -> bytes | None:
        return None

    maskers = [None, star, drop, None]
    rows = sample_rows(50) + pg.encode_data_row([b"51", None, b"x", None]) + pg.encode_data_row([None, b"", b"", b"y"])
    complete = pg.encode_message(ord("C"), b"SELECT 52\x00")  # CommandComplete
    chunk = rows + complete
    out, tail = rewrite_chunked(chunk + b"D\x00\x00", maskers)  # a message cut short stays for the next chunk
    assert tail == len(chunk)

    def current(v: list[bytes | None]) -> list[bytes | None]:
        return [v[0], None if v[1] is None else star(v[1]), None, v[3]]

    expected = b"".join(pg.encode_data_row(current(pg.decode_data_row(f[5:]))) for f in split_frames(rows))
    assert out == expected + complete
    assert (
        rewrite_current(split_frames(sample_rows(3)), [None, star, None, None])
        == rewrite_chunked(sample_rows(3), [None, star, None, None])[0]
    )
    with pytest.raises(ValueError, match="RowDescription"):
        rewrite_chunked(pg.encode_data_row([b"1"]), maskers)


# -- process bookkeeping -------------------------------------------------------------


def test_process_figures_come_from_proc_for_this_process() -> None:
    import os

    pid = os.getpid()
    busy_until = time.process_time() + 0.05
    while time.process_time() < busy_until:
        pass
    assert services.cpu_seconds(pid) >= 0.05
    threads = services.thread_cpu_seconds(pid)
    assert pid in threads  # the main thread's id is the pid
    assert sum(threads.values()) <= services.cpu_seconds(pid) + 0.05
    assert 5 < services.rss_mib(pid) < 4096


def test_the_relay_process_starts_relays_and_stops(tmp_path: Path) -> None:
    import socket as sock
    import threading

    upstream = sock.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen()

    def echo() -> None:
        # The start-up probe connects (and leaves) first; then the real client.
        while True:
            try:
                conn, _ = upstream.accept()
            except OSError:
                return  # the listening socket was closed: the test is over
            with conn:
                data = conn.recv(100)
                if data:
                    conn.sendall(data.upper())

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    target = Endpoint(
        path="direct", host="127.0.0.1", port=upstream.getsockname()[1], user="u", password="p", database="d"
    )
    try:
        started = services.start_relay(target, tmp_path)
        assert started.endpoint.path == "relay"
        with sock.create_connection(("127.0.0.1", started.endpoint.port), timeout=10) as c:
            c.sendall(b"ping")
            assert c.recv(100) == b"PING"
    finally:
        services.stop_all()
        upstream.close()
    assert started.proc.poll() is not None  # stopped, and reaped


def test_a_process_that_exits_at_start_is_unavailable_with_its_log(tmp_path: Path) -> None:
    import subprocess
    import sys

    log = tmp_path / "x.log"
    log.write_text("fatal: port already in use\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(services.Unavailable, match="exited with code 3: fatal: port already in use"):
        services._wait_listening(1, proc, log, 10)
