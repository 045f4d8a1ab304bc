"""Composition: builds the runtime (policy engine, masking, audit) from settings.

This is the one place that knows which implementation backs each hook of
``proxy.session.Runtime``; the CLI, the server and the tests go through it.
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlbastion.config import ConfigError, Settings, load
from sqlbastion.masking.plan import planner_from_settings
from sqlbastion.policies.model import Action, StatementContext
from sqlbastion.proxy.session import PassThroughEngine, Runtime


def validate_policy(settings: Settings) -> list[str]:
    """Validate the policy files a configuration names; returns warnings. Raises ConfigError."""
    for f in settings.policy.files:
        path = settings.resolve_path(f)
        if not path.exists():
            raise ConfigError(settings.source, "policy.files", f"policy file {path} does not exist")
    return []


def build_runtime(settings: Settings) -> Runtime:
    """The runtime for ``serve``: policy engine, masking and audit from the settings."""
    from sqlbastion.audit.pipeline import AuditPipeline

    # The audit pipeline opens nothing until serve() starts it.
    return Runtime(
        engine=PassThroughEngine(),
        masking=planner_from_settings(settings),
        audit=AuditPipeline.from_settings(settings),
    )


def run_check(args: argparse.Namespace) -> int:
    """``sqlbastion check``: dry-run statements for a person (exit 0 allow, 1 block, 2 review, 3 error)."""
    try:
        settings = load(args.config)
        backend = settings.backend(args.backend)
    except ConfigError as exc:
        sys.stderr.write(f"sqlbastion: {exc}\n")
        return 3
    except KeyError:
        sys.stderr.write(f"sqlbastion: no backend {args.backend!r} in {args.config}\n")
        return 3
    runtime = build_runtime(settings)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            sql = f.read()
    elif args.sql:
        sql = args.sql
    else:
        sys.stderr.write("sqlbastion: give a statement or --file\n")
        return 3
    ctx = StatementContext(
        person=args.person,
        roles=runtime.engine.roles_of(args.person),
        backend=backend.name,
        dialect=backend.protocol,
        database=args.database or backend.database,
        search_path=tuple((args.search_path or "").split(",")) if args.search_path else (),
        client_address=args.client_address,
    )
    decision = runtime.engine.decide(sql, ctx)
    result = {
        "decision": decision.action.value,
        "rules": [{"id": h.rule_id, "title": h.title, "why": h.why} for h in decision.rule_hits],
        "reason": decision.reason,
        "objects_read": list(decision.objects_read),
        "objects_written": list(decision.objects_written),
    }
    if args.json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(f"decision: {result['decision']}\n")
        for r in decision.rule_hits:
            sys.stdout.write(f"  rule {r.rule_id} ({r.title}): {r.why}\n")
        if decision.reason:
            sys.stdout.write(f"  reason: {decision.reason}\n")
    return {Action.ALLOW: 0, Action.ALERT: 0, Action.BLOCK: 1, Action.REVIEW: 2}[decision.action]
