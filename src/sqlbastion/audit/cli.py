"""``sqlbastion audit search | tail | verify | export`` (docs/audit.md, "Command line").

They read the SQLite store and the spool named in the configuration
(``--config``); ``--db`` and ``--spool`` override them. Exit codes follow
cli.py: 0 ok, 1 failed, 4 the chain is broken.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from sqlbastion.audit.chain import initial_key, verify_spool
from sqlbastion.audit.spool import KEY_FILE, STATE_FILE, is_locked
from sqlbastion.audit.store import SearchFilter, csv_header, csv_row, parse_time, search, table_lines
from sqlbastion.cli import DEFAULT_CONFIG, EXIT_CHAIN_BROKEN, EXIT_FAIL, EXIT_OK, register_commands
from sqlbastion.config import ConfigError, Settings, load
from sqlbastion.settings_schema import SecretUnavailable

__all__ = ["add_commands"]


def _err(text: str) -> None:
    sys.stderr.write(f"sqlbastion: {text}\n")


def _db_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    settings = load(args.config)
    for sink in settings.audit.sinks:
        if sink.type == "sqlite" and sink.path:
            return settings.resolve_path(sink.path)
    from sqlbastion.audit.pipeline import default_sqlite_path

    return default_sqlite_path(settings)


def _open_db(args: argparse.Namespace) -> sqlite3.Connection:
    path = _db_path(args)
    if not path.exists():
        raise FileNotFoundError(f"no audit database at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _filter(args: argparse.Namespace, *, limit: int | None) -> SearchFilter:
    return SearchFilter(
        since=parse_time(args.since) if getattr(args, "since", None) else None,
        until=parse_time(args.until) if getattr(args, "until", None) else None,
        person=getattr(args, "person", None),
        decision=getattr(args, "decision", None),
        rule=getattr(args, "rule", None),
        object=getattr(args, "object", None),
        session=getattr(args, "session", None),
        kind=getattr(args, "kind", None),
        limit=limit,
    )


def _print(event: dict[str, Any], as_json: bool) -> None:
    sys.stdout.write((json.dumps(event, ensure_ascii=False) if as_json else table_lines(event)) + "\n")


def cmd_search(args: argparse.Namespace) -> int:
    try:
        f = _filter(args, limit=args.limit)
        with _open_db(args) as conn:
            for _, event in search(conn, f):
                _print(event, args.json)
    except (ConfigError, ValueError, FileNotFoundError, sqlite3.Error) as exc:
        _err(str(exc))
        return EXIT_FAIL
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        conn = _open_db(args)
        f = _filter(args, limit=None)
        last = conn.execute("SELECT coalesce(max(rowid), 0) FROM audit_events").fetchone()[0]
        start = max(0, int(last) - args.lines)
        while True:
            rows = list(search(conn, SearchFilter(**{**_asdict(f), "after_rowid": start, "limit": 1000})))
            for rowid, event in rows:
                _print(event, args.json)
                start = rowid
            sys.stdout.flush()
            if not args.follow:
                return EXIT_OK
            if not rows:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK
    except (ConfigError, ValueError, FileNotFoundError, sqlite3.Error) as exc:
        _err(str(exc))
        return EXIT_FAIL


def _asdict(f: SearchFilter) -> dict[str, Any]:
    return {name: getattr(f, name) for name in f.__slots__}


def cmd_export(args: argparse.Namespace) -> int:
    try:
        f = _filter(args, limit=None)
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
        try:
            if args.format == "csv":
                out.write(csv_header())
            n = 0
            with _open_db(args) as conn:
                for _, event in search(conn, f):
                    out.write(csv_row(event) if args.format == "csv" else json.dumps(event, ensure_ascii=False) + "\n")
                    n += 1
        finally:
            if args.output:
                out.close()
    except (ConfigError, ValueError, FileNotFoundError, OSError, sqlite3.Error) as exc:
        _err(str(exc))
        return EXIT_FAIL
    if args.output:
        sys.stderr.write(f"exported {n} event(s) to {args.output}\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        settings: Settings | None = None
        if args.spool:
            spool = Path(args.spool)
        else:
            settings = load(args.config)
            from sqlbastion.audit.pipeline import spool_directory

            spool = spool_directory(settings)
        algorithm = args.algorithm or (settings.audit.chain_algorithm if settings else "hmac-sha256")
        if args.key_file:
            # Read like a file: secret reference (trailing line break dropped).
            text = Path(args.key_file).read_text(encoding="utf-8").rstrip("\r\n")
            secret = bytes.fromhex(text.strip()) if args.key_hex else text.encode("utf-8")
        elif settings is not None and settings.audit.chain_key is not None:
            secret = settings.audit.chain_key.reveal_bytes()
        else:
            secret = bytes.fromhex((spool / KEY_FILE).read_text(encoding="ascii").strip())
    except (ConfigError, OSError, ValueError, SecretUnavailable) as exc:
        _err(f"cannot read the chain key or spool: {exc}")
        return EXIT_FAIL
    if not spool.is_dir():
        _err(f"no spool directory at {spool}")
        return EXIT_FAIL
    report = verify_spool(
        spool,
        algorithm=algorithm,
        key0=initial_key(algorithm, secret),
        live=is_locked(spool),
        witness_seq=_witness_seq(spool, settings, args),
    )
    if args.json:
        p = report.problem
        sys.stdout.write(
            json.dumps(
                {
                    "ok": report.ok,
                    "records": report.records,
                    "events": report.events,
                    "segments": report.segments,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "open_segment": report.open_segment,
                    "problem": None
                    if p is None
                    else {"kind": p.problem, "segment": p.segment, "line": p.line, "seq": p.seq, "detail": p.detail},
                }
            )
            + "\n"
        )
    else:
        sys.stdout.write(report.describe() + "\n")
    return EXIT_OK if report.ok else EXIT_CHAIN_BROKEN


def _witness_seq(spool: Path, settings: Settings | None, args: argparse.Namespace) -> int | None:
    """The highest seq known outside the segments: the writer's checkpoint, the SQLite store.
    A spool whose newest segments were deleted still verifies on its own; these tell."""
    seen: list[int] = []
    try:
        state = json.loads((spool / STATE_FILE).read_text(encoding="ascii"))
        seen.append(int(state["seq"]) - 1)  # the checkpoint holds the next seq
    except (OSError, ValueError, KeyError, TypeError):
        pass
    db: Path | None = Path(args.db) if getattr(args, "db", None) else None
    if db is None and settings is not None:
        db = next((settings.resolve_path(s.path) for s in settings.audit.sinks if s.type == "sqlite" and s.path), None)
    if db is not None and db.exists():
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                value = conn.execute("SELECT max(chain_seq) FROM audit_events").fetchone()[0]
            if value is not None:
                seen.append(int(value))
        except sqlite3.Error:
            pass
    return max(seen) if seen else None


def _common(p: argparse.ArgumentParser, *, db: bool = True) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")
    if db:
        p.add_argument("--db", default=None, help="SQLite audit database (default: the configuration's)")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="from this time (ISO 8601, or 15m / 2h / 7d ago)")
    p.add_argument("--until", help="before this time")
    p.add_argument("--person", help="events of this person")
    p.add_argument("--decision", choices=("allow", "alert", "review", "block"), help="statement decision")
    p.add_argument("--rule", help="events that hit this rule id")
    p.add_argument("--object", help="a table (db.table / db.schema.table) or column read or written")
    p.add_argument("--session", help="events of this session id")
    p.add_argument("--kind", help="event kind (statement, auth_failed, …)")


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="search, follow, verify and export the audit trail",
        description="Search, follow, verify and export the audit trail (docs/audit.md).",
    )
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")

    s = asub.add_parser("search", help="search events", description="Search audit events (oldest first).")
    _common(s)
    _filters(s)
    s.add_argument("--limit", type=int, default=1000, help="at most this many events (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="one JSON event per line instead of a table")
    s.set_defaults(func=cmd_search)

    t = asub.add_parser("tail", help="show the latest events", description="Show the latest events; -f follows.")
    _common(t)
    _filters(t)
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    t.add_argument("-n", "--lines", type=int, default=20, help="start with this many latest events")
    t.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    t.add_argument("--json", action="store_true", help="JSON lines")
    t.set_defaults(func=cmd_tail)

    v = asub.add_parser(
        "verify",
        help="check the tamper-evident chain",
        description="Check the spool's chain. Exit 0 intact, 4 broken (the first bad record is reported), 1 error.",
    )
    _common(v, db=False)
    v.add_argument("--spool", default=None, help="spool directory (default: the configuration's audit.spool_dir)")
    v.add_argument("--key-file", default=None, help="file holding the chain secret (default: audit.chain_key)")
    v.add_argument("--key-hex", action="store_true", help="the key file holds hex (like the generated chain.key)")
    v.add_argument("--algorithm", choices=("hmac-sha256", "hmac-sm3"), default=None, help="chain algorithm")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(func=cmd_verify)

    e = asub.add_parser("export", help="export events as JSONL or CSV", description="Export events for a time range.")
    _common(e)
    _filters(e)
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default: jsonl)")
    e.add_argument("--output", "-o", default=None, help="write to this file (default: standard output)")
    e.set_defaults(func=cmd_export)


register_commands(add_commands)
