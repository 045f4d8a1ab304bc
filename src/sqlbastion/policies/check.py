"""``sqlbastion check``: dry-run statements against the policy, as the proxy would decide them.

Prints, per statement (or per statement of ``--file``), the decision, the
rules that fired and why, the objects and columns involved and the mask each
result column would get. ``--json`` prints one JSON document. The exit code
is the strictest decision: 0 allow (or alert), 1 block, 2 review, 3 error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from sqlbastion.config import ConfigError, load
from sqlbastion.policies.catalog import CatalogStore, load_catalog
from sqlbastion.policies.lexer import LexError, LexerState, lex
from sqlbastion.policies.model import STRICTNESS, Action, Decision, StatementContext
from sqlbastion.policies.store import LoadedEngine, load_engine

EXIT = {Action.ALLOW: 0, Action.ALERT: 0, Action.BLOCK: 1, Action.REVIEW: 2}
CATALOG_TIMEOUT_S = 10.0


def _split_file(sql: str, dialect: str) -> list[str]:
    """The statements of an SQL file, each as the text a client would send (comments included)."""
    try:
        statements = lex(sql, LexerState(dialect="mysql" if dialect == "mysql" else "postgres"))
    except LexError:
        return [sql]
    if len(statements) <= 1:
        return [sql]
    return [s.source for s in statements]


def _masks(loaded: LoadedEngine, decision: Decision, ctx: StatementContext) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    roles = loaded.engine.roles_of(ctx.person)
    for cols in decision.output_columns:
        row: list[dict[str, Any]] = []
        for oc in cols:
            strongest = "clear"
            function: str | None = None
            for src in sorted(oc.sources, key=str):
                t = loaded.masking.treatment(roles, ctx.backend, src)
                if t.kind == "deny" or (t.kind == "mask" and strongest == "clear"):
                    strongest, function = t.kind, t.function
            if oc.opaque and strongest == "clear" and loaded.masking.restricted(roles):
                strongest = "mask (unproven lineage)"
            row.append(
                {
                    "column": oc.name,
                    "sources": [str(s) for s in sorted(oc.sources, key=str)],
                    "direct": oc.direct,
                    "treatment": strongest,
                    "function": function,
                }
            )
        out.append(row)
    return out


def _result(loaded: LoadedEngine, sql: str, decision: Decision, ctx: StatementContext) -> dict[str, Any]:
    return {
        "statement": sql,
        "decision": decision.action.value,
        "reason": decision.reason,
        "rules": [
            {"id": h.rule_id, "title": h.title, "severity": h.severity, "action": h.action.value, "why": h.why}
            for h in decision.rule_hits
        ],
        "statement_types": list(decision.statement_types),
        "objects_read": list(decision.objects_read),
        "objects_written": list(decision.objects_written),
        "columns_read": [str(c) for c in decision.columns_read],
        "sensitive_columns": [str(c) for c in decision.sensitive_columns],
        "masks": _masks(loaded, decision, ctx),
        "fingerprint": decision.fingerprint,
        "policy_version": decision.policy_version,
    }


def _print_text(r: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"statement: {r['statement']}\n")
    w(f"decision: {r['decision']}\n")
    for rule in r["rules"]:
        w(f"  rule {rule['id']} ({rule['title']}, {rule['severity']}, {rule['action']}): {rule['why']}\n")
    if r["reason"] and not r["rules"]:
        w(f"  reason: {r['reason']}\n")
    if r["statement_types"]:
        w(f"  statement types: {', '.join(r['statement_types'])}\n")
    if r["objects_read"]:
        w(f"  reads: {', '.join(r['objects_read'])}\n")
    if r["objects_written"]:
        w(f"  writes: {', '.join(r['objects_written'])}\n")
    if r["columns_read"]:
        w(f"  columns: {', '.join(r['columns_read'])}\n")
    for i, cols in enumerate(r["masks"]):
        prefix = f"  result {i + 1}: " if len(r["masks"]) > 1 else "  result: "
        parts = []
        for c in cols:
            t = c["treatment"] if c["treatment"] != "mask" else f"mask {c['function']}"
            parts.append(f"{c['column']} ({t})")
        w(prefix + ", ".join(parts) + "\n")


def run_check(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config)
        backend = settings.backend(args.backend)
    except ConfigError as exc:
        sys.stderr.write(f"sqlbastion: {exc}\n")
        return 3
    except KeyError:
        sys.stderr.write(f"sqlbastion: no backend {args.backend!r} in {args.config}\n")
        return 3
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            sys.stderr.write(f"sqlbastion: cannot read {args.file}: {exc.strerror}\n")
            return 3
        statements = _split_file(text, backend.protocol)
    elif args.sql:
        statements = [args.sql]
    else:
        sys.stderr.write("sqlbastion: give a statement or --file\n")
        return 3
    catalogs = CatalogStore([backend])
    try:
        loaded = load_engine(settings, catalogs)
    except ConfigError as exc:
        sys.stderr.write(f"sqlbastion: {exc}\n")
        return 3
    if not getattr(args, "no_catalog", False):
        try:
            catalogs.put(asyncio.run(asyncio.wait_for(load_catalog(backend), CATALOG_TIMEOUT_S)))
            ok = True
        except Exception:  # unreachable backend, bad credentials: check without the catalog, and say so
            ok = False
        if not ok:
            sys.stderr.write(
                f"sqlbastion: warning: the catalog of {backend.name} could not be loaded; "
                "SELECT * and views are checked without it (stricter for masked roles)\n"
            )
    engine = loaded.engine
    ctx = StatementContext(
        person=args.person,
        roles=engine.roles_of(args.person),
        backend=backend.name,
        dialect=backend.protocol,
        database=args.database or backend.database,
        search_path=tuple(s.strip() for s in args.search_path.split(",")) if args.search_path else (),
        client_address=args.client_address,
        now=datetime.now(UTC),
    )
    results = []
    worst = Action.ALLOW
    for sql in statements:
        decision = engine.decide(sql, ctx)
        results.append(_result(loaded, sql, decision, ctx))
        if STRICTNESS[decision.action] > STRICTNESS[worst]:
            worst = decision.action
    if args.json:
        doc: Any = results[0] if len(results) == 1 and not args.file else results
        sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
    else:
        for i, r in enumerate(results):
            if i:
                sys.stdout.write("\n")
            _print_text(r)
    return EXIT[worst]
