"""The ``sqlbastion`` command.

Exit codes (documented in docs/cli.md):

* 0 — success (``check``: the statement is allowed)
* 1 — ``check``: blocked; elsewhere, the operation failed (validation error, no such person …)
* 2 — ``check``: held for review; elsewhere, bad command-line usage (argparse's own code)
* 3 — ``check``: the statement could not be checked (configuration or policy error)
* 4 — ``audit verify``: the audit chain is broken
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlbastion import __version__
from sqlbastion.config import ConfigError, Settings, load
from sqlbastion.settings_schema import describe
from sqlbastion.users import METHODS, UsersFile, UsersFileError, make_credentials

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_CHAIN_BROKEN = 4

DEFAULT_CONFIG = os.environ.get("SQLBASTION_CONFIG", "sqlbastion.toml")

Handler = Callable[[argparse.Namespace], int]
_EXTENSIONS: list[Callable[[Any], None]] = []


def register_commands(add: Callable[[Any], None]) -> None:
    """Let a component add its own subcommands (``audit`` does) without a circular import."""
    _EXTENSIONS.append(add)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"sqlbastion: {text}\n")


def _load_config(path: str) -> Settings:
    return load(path)


# -- version ---------------------------------------------------------------


def cmd_version(_args: argparse.Namespace) -> int:
    from importlib.metadata import version

    _out(f"sqlbastion {__version__} (sqlglot {version('sqlglot')}, Python {sys.version.split()[0]})")
    return EXIT_OK


# -- config validate -------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    try:
        settings = _load_config(args.file)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_FAIL
    from sqlbastion.app import validate_policy

    try:
        warnings = validate_policy(settings)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_FAIL
    for w in warnings:
        sys.stderr.write(f"warning: {w}\n")
    if args.show:
        _out(json.dumps(describe(settings), indent=2, ensure_ascii=False))
    else:
        _out(f"{args.file}: ok ({len(settings.backends)} backend(s), {len(settings.audit.sinks)} audit sink(s))")
    return EXIT_OK


# -- user ------------------------------------------------------------------


def _users_path(args: argparse.Namespace) -> Path:
    if args.users_file:
        return Path(args.users_file)
    settings = _load_config(args.config)
    return settings.resolve_path(settings.users_file)


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            raise ValueError("the passwords do not match")
    if len(pw) < 8:
        raise ValueError("the password must be at least 8 characters long")
    return pw


def cmd_user_add(args: argparse.Namespace, *, replace_existing: bool = False) -> int:
    try:
        path = _users_path(args)
        users = UsersFile.load(path, missing_ok=not replace_existing)
        exists = args.name in users.persons
        if exists and not replace_existing:
            _err(f"person {args.name!r} already exists in {path} (use 'user passwd')")
            return EXIT_FAIL
        if replace_existing and not exists:
            _err(f"no person {args.name!r} in {path} (use 'user add')")
            return EXIT_FAIL
        methods = tuple(args.method) if args.method else METHODS
        users.persons[args.name] = make_credentials(args.name, _read_password(args), methods)
        users.save()
    except (ConfigError, UsersFileError, ValueError) as exc:
        _err(str(exc))
        return EXIT_FAIL
    _out(f"{'updated' if replace_existing else 'added'} {args.name} in {path}")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    try:
        users = UsersFile.load(_users_path(args))
    except (ConfigError, UsersFileError) as exc:
        _err(str(exc))
        return EXIT_FAIL
    persons = sorted(users.persons.values(), key=lambda c: c.name)
    if args.json:
        _out(json.dumps([{"name": c.name, "methods": c.methods(), "disabled": c.disabled} for c in persons]))
    else:
        for c in persons:
            state = " (disabled)" if c.disabled else ""
            _out(f"{c.name}\t{','.join(c.methods())}{state}")
    return EXIT_OK


# -- serve / check ---------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from sqlbastion.proxy.server import run

    try:
        settings = _load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_FAIL
    return run(settings)


def cmd_check(args: argparse.Namespace) -> int:
    from sqlbastion.app import run_check

    return run_check(args)


# -- parser ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlbastion",
        description="A database bastion for MySQL and PostgreSQL.",
        epilog="Exit codes: 0 ok, 1 failed (check: blocked), 2 usage (check: review), 3 check error, "
        "4 audit chain broken. See docs/cli.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("version", help="print the version", description="Print the version.")
    p.set_defaults(func=cmd_version)

    p = sub.add_parser("serve", help="run the proxy", description="Run the proxy with a configuration file.")
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "check",
        help="dry-run statements against the policy",
        description="Dry-run statements against the policy. Exit 0 allow, 1 block, 2 review, 3 error.",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")
    p.add_argument("--person", required=True, help="the person the statement is checked for")
    p.add_argument("--backend", required=True, help="backend name from the configuration")
    p.add_argument("--database", default=None, help="current database (MySQL) or database (PostgreSQL)")
    p.add_argument("--search-path", default=None, help="PostgreSQL search_path, comma separated")
    p.add_argument("--client-address", default="127.0.0.1", help="source address to check (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--file", default=None, help="check every statement of an SQL file")
    p.add_argument("sql", nargs="?", help="the statement (or use --file)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    v = csub.add_parser(
        "validate",
        help="validate a configuration file and its policy",
        description="Validate a configuration file and the policy files it names. Exit 0 valid, 1 invalid.",
    )
    v.add_argument("file", help="the configuration file")
    v.add_argument("--show", action="store_true", help="print the parsed settings (secrets as references)")
    v.set_defaults(func=cmd_config_validate)

    p = sub.add_parser("user", help="manage persons' password verifiers", description="Manage the users file.")
    usub = p.add_subparsers(dest="user_command", required=True, metavar="SUBCOMMAND")
    for name, helptext, func in (
        ("add", "add a person", cmd_user_add),
        ("passwd", "change a person's password", lambda a: cmd_user_add(a, replace_existing=True)),
    ):
        u = usub.add_parser(name, help=helptext, description=f"{helptext.capitalize()}: stores verifiers only.")
        u.add_argument("name", help="the person's login name")
        u.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")
        u.add_argument("--users-file", default=None, help="users file (default: the configuration's users_file)")
        u.add_argument("--method", action="append", choices=METHODS, help="verifier to store (repeatable; default all)")
        u.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
        u.set_defaults(func=func)
    u = usub.add_parser("list", help="list persons", description="List persons and their authentication methods.")
    u.add_argument("--config", "-c", default=DEFAULT_CONFIG, help="configuration file (default: %(default)s)")
    u.add_argument("--users-file", default=None, help="users file (default: the configuration's users_file)")
    u.add_argument("--json", action="store_true", help="print JSON")
    u.set_defaults(func=cmd_user_list)

    _load_extensions()
    for add in _EXTENSIONS:
        add(sub)
    return parser


def _load_extensions() -> None:
    if _EXTENSIONS:
        return
    import importlib

    for module in ("sqlbastion.audit.cli",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    # Run as ``python -m sqlbastion.cli`` this module is ``__main__``, and the extensions
    # registered themselves with the importable ``sqlbastion.cli``: use theirs.
    imported = sys.modules.get("sqlbastion.cli")
    if imported is not None and imported is not sys.modules.get(__name__):
        _EXTENSIONS.extend(add for add in imported._EXTENSIONS if add not in _EXTENSIONS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
