"""``make demo``: throwaway servers, the sample bank, the demo persons and a running sqlbastion.

Everything lives under ``var/demo`` (servers, users file, rendered configuration,
self-signed TLS certificate, audit spool, log, pid file) and listens on 127.0.0.1
only; the listeners require TLS. Run twice, it reuses
the running servers, reloads the sample bank and restarts sqlbastion with a
freshly rendered configuration. ``stop`` ends the proxy, then the servers.

The configuration comes from ``examples/sqlbastion.demo.toml``: the real ports
are filled in, the policy file points at ``examples/policy.toml`` (or at nothing
while that file does not exist), and the backends whose protocol listener is
not part of this checkout yet are left out, so the demo works at every stage.

Command line (what scripts/demo.sh runs)::

    python -m sqlbastion.devtools.demo start|stop|status [--dir var/demo]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlbastion.config import ConfigError, load
from sqlbastion.devtools.servers import free_port

__all__ = ["PERSONS", "DemoPerson", "DemoPorts", "DemoTry", "available_protocols", "connection_lines", "render_config"]

ROOT = Path(__file__).resolve().parents[3]  # the repository checkout (src/sqlbastion/devtools/demo.py)
TEMPLATE = ROOT / "examples" / "sqlbastion.demo.toml"
POLICY = ROOT / "examples" / "policy.toml"


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoTry:
    """A statement worth trying, and what examples/policy.toml makes of it."""

    sql: str
    outcome: str
    blocked_by: str | None = None  # the rule id that blocks it under examples/policy.toml


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoPerson:
    name: str
    role: str
    password: str  # a demo password, printed on purpose; the users file keeps verifiers only
    tries: tuple[DemoTry, ...]


_CUSTOMERS_SAMPLE = "SELECT id, name, id_card, mobile FROM customers LIMIT 3;"

# Nothing here is destructive even without a policy: the DELETE names a row id
# that does not exist, so the demo bank stays whole whatever happens.
PERSONS: tuple[DemoPerson, ...] = (
    DemoPerson(
        name="dba",
        role="dba",
        password="dba-demo-pass",
        tries=(DemoTry(sql=_CUSTOMERS_SAMPLE, outcome="personal data in clear"),),
    ),
    DemoPerson(
        name="dev",
        role="developer",
        password="dev-demo-pass",
        tries=(
            DemoTry(sql=_CUSTOMERS_SAMPLE, outcome="name, ID number and mobile masked"),
            DemoTry(
                sql="DELETE FROM transactions WHERE id = -1;",
                outcome="blocked by rule CUST-TX-DELETE",
                blocked_by="CUST-TX-DELETE",
            ),
        ),
    ),
    DemoPerson(
        name="analyst",
        role="analyst",
        password="analyst-demo-pass",
        tries=(
            DemoTry(
                sql="SELECT city, COUNT(*), SUM(balance) FROM customers c JOIN accounts a ON a.customer_id = c.id "
                "GROUP BY city;",
                outcome="aggregates are fine",
            ),
            DemoTry(
                sql="SELECT id_card FROM customers LIMIT 1;",
                outcome="blocked: column not granted",
                blocked_by="SB-GRANT-DENIED",
            ),
        ),
    ),
    DemoPerson(
        name="auditor",
        role="auditor",
        password="auditor-demo-pass",
        tries=(
            DemoTry(
                sql="SELECT COUNT(*) FROM customers;",
                outcome="blocked: auditors read the audit trail",
                blocked_by="SB-DUTY",
            ),
        ),
    ),
)

_PROTOCOLS = {"mysql": "MySQL", "postgres": "PostgreSQL"}


@dataclass(frozen=True, kw_only=True, slots=True)
class DemoPorts:
    """Where everything listens; the template's values are the preferred ones."""

    mariadb: int
    postgres: int
    mysql_listen: int = 3307
    postgres_listen: int = 6433
    admin: int = 9187


def available_protocols() -> tuple[str, ...]:
    """The protocols whose listener module (``sqlbastion.proxy.<protocol>.listener``) exists in this checkout."""
    found = []
    for protocol in _PROTOCOLS:
        with contextlib.suppress(ModuleNotFoundError):
            if importlib.util.find_spec(f"sqlbastion.proxy.{protocol}.listener") is not None:
                found.append(protocol)
    return tuple(found)


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise ValueError(f"the demo template must contain {old!r} exactly once")
    return text.replace(old, new)


def render_config(
    template: str,
    *,
    ports: DemoPorts,
    policy_file: Path | None,
    protocols: tuple[str, ...] = ("mysql", "postgres"),
    directory: Path | None = None,
) -> str:
    """The demo configuration: ``template`` with real ports, the policy file and only the listed protocols.

    With ``directory``, the TLS key reference points at the key in that directory
    (``file:`` references are read relative to the working directory, not the file).
    """
    text = template
    if directory is not None:
        key = directory / "certs" / "sqlbastion.key"
        text = _replace_once(text, 'key_file = "file:certs/sqlbastion.key"', f"key_file = {json.dumps(f'file:{key}')}")
    text = _replace_once(text, 'listen = "127.0.0.1:9187"', f'listen = "127.0.0.1:{ports.admin}"')
    text = _replace_once(text, 'listen = "127.0.0.1:3307"', f'listen = "127.0.0.1:{ports.mysql_listen}"')
    text = _replace_once(text, 'listen = "127.0.0.1:6433"', f'listen = "127.0.0.1:{ports.postgres_listen}"')
    text = _replace_once(text, "port = 3306\n", f"port = {ports.mariadb}\n")
    text = _replace_once(text, "port = 5432\n", f"port = {ports.postgres}\n")
    # Without a policy file sqlbastion would refuse to start (fail closed); the demo says it runs unchecked.
    files = "[]\nallow_unchecked = true" if policy_file is None else json.dumps([str(policy_file)])
    text = _replace_once(text, 'files = ["policy.toml"]', f"files = {files}")
    # Drop the [[backends]] blocks (always last in the template) of protocols without a listener,
    # together with the comment lines just above each block.
    head, *blocks = _backend_blocks(text)
    return head + "".join(b for b in blocks if _protocol_of(b) in protocols)


def _backend_blocks(text: str) -> list[str]:
    """``text`` cut before each ``[[backends]]`` table, each cut moved up over the comments that lead into it."""
    chunks = re.split(r"(?m)^(?=\[\[backends\]\]\n)", text)
    for i in range(1, len(chunks)):
        lines = chunks[i - 1].splitlines(keepends=True)
        lead = 0
        while lead < len(lines) and lines[len(lines) - 1 - lead].startswith("#"):
            lead += 1
        if lead:
            chunks[i - 1] = "".join(lines[: len(lines) - lead])
            chunks[i] = "".join(lines[len(lines) - lead :]) + chunks[i]
    return chunks


def _protocol_of(block: str) -> str:
    m = re.search(r'(?m)^protocol = "(\w+)"', block)
    return m.group(1) if m else ""


def connection_lines(person: DemoPerson, *, mysql_port: int | None, postgres_port: int | None) -> list[str]:
    """The exact shell commands that connect ``person`` through sqlbastion."""
    lines = []
    pw = shlex.quote(person.password)
    # TLS is required by the demo configuration: --ssl for the MariaDB client (which
    # does not verify the self-signed certificate by default), sslmode=require for psql.
    if mysql_port is not None:
        lines.append(f"mysql --ssl --protocol=TCP -h 127.0.0.1 -P {mysql_port} -u {person.name} -p{pw} bank")
    if postgres_port is not None:
        lines.append(f"PGPASSWORD={pw} PGSSLMODE=require psql -h 127.0.0.1 -p {postgres_port} -U {person.name} bank")
    return lines


# -- processes -------------------------------------------------------------------------


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick(env: str, preferred: int) -> int:
    text = os.environ.get(env, str(preferred))
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise RuntimeError(f"{env}={text!r} is not a TCP port")
    wanted = int(text)
    return wanted if _port_free(wanted) else free_port()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _our_proxy(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still a ``sqlbastion serve`` (never some reused pid)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"serve" in cmdline and any(b"sqlbastion" in part for part in cmdline) else None


def _stop_proxy(directory: Path) -> None:
    pid_file = directory / "sqlbastion.pid"
    pid = _our_proxy(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 35  # serve drains sessions for up to drain_timeout_s
        while _pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        _say(f"demo: stopped sqlbastion (pid {pid})")
    pid_file.unlink(missing_ok=True)


def _run(args: list[str], *, input_text: str | None = None) -> str:
    r = subprocess.run(args, input=input_text, capture_output=True, text=True, check=False, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:5])} … failed ({r.returncode}):\n{r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def _servers(directory: Path) -> dict[str, dict[str, object]]:
    _run([sys.executable, "-m", "sqlbastion.devtools.servers", "start", "--dir", str(directory / "servers")])
    servers: dict[str, dict[str, object]] = json.loads((directory / "servers" / "servers.json").read_text())
    return servers


def _secrets(directory: Path) -> dict[str, str]:
    """Demo-only secrets kept in var/demo/secrets.env (mode 0600) so restarts keep pseudonyms stable."""
    path = directory / "secrets.env"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"SQLBASTION_DEMO_MASKING_KEY={secrets.token_hex(32)}\n")
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _certificate(directory: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost, made once (demo only: clients cannot verify it)."""
    cert_file, key_file = directory / "certs" / "sqlbastion.crt", directory / "certs" / "sqlbastion.key"
    if cert_file.exists() and key_file.exists():
        return
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sqlbastion demo")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _users(users_file: Path) -> None:
    known: set[str] = set()
    if users_file.exists():
        cmd = [sys.executable, "-m", "sqlbastion.cli", "user", "list", "--users-file", str(users_file), "--json"]
        known = {p["name"] for p in json.loads(_run(cmd) or "[]")}
    for person in PERSONS:
        # `passwd` for a person already there, so the printed password always works,
        # even with a users file left by an older demo; other persons are kept.
        verb = "passwd" if person.name in known else "add"
        cmd = [sys.executable, "-m", "sqlbastion.cli", "user", verb, person.name]
        _run([*cmd, "--users-file", str(users_file), "--password-stdin"], input_text=person.password + "\n")


def _wait_listening(ports: list[int], proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"sqlbastion exited with code {proc.returncode}; end of {log}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"sqlbastion did not listen on {pending} within {timeout:.0f}s (see {log})")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=0.5):
                pending.pop(0)
        except OSError:
            time.sleep(0.2)


def start(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    _stop_proxy(directory)  # a rerun restarts the proxy with a fresh configuration
    _say("demo: starting MariaDB and PostgreSQL (throwaway, loopback only) …")
    servers = _servers(directory)
    m, p = servers["mariadb"], servers["postgres"]
    _say(f"demo: MariaDB on 127.0.0.1:{m['port']}, PostgreSQL on 127.0.0.1:{p['port']}; loading the sample bank …")
    loader = [sys.executable, "-m", "sqlbastion.devtools.sample_bank", "--servers"]
    loader += [str(directory / "servers" / "servers.json"), "--scale", os.environ.get("SQLBASTION_DEMO_SCALE", "1")]
    _say("demo: " + _run(loader).strip())

    protocols = available_protocols()
    policy = POLICY if POLICY.exists() else None
    ports = DemoPorts(
        mariadb=int(str(m["port"])),
        postgres=int(str(p["port"])),
        mysql_listen=_pick("SQLBASTION_DEMO_MYSQL_PORT", 3307),
        postgres_listen=_pick("SQLBASTION_DEMO_POSTGRES_PORT", 6433),
        admin=_pick("SQLBASTION_DEMO_ADMIN_PORT", 9187),
    )
    _certificate(directory)
    config = directory / "sqlbastion.toml"
    template = TEMPLATE.read_text(encoding="utf-8")
    config.write_text(
        render_config(template, ports=ports, policy_file=policy, protocols=protocols, directory=directory)
    )
    try:
        load(config)
    except ConfigError as exc:
        _say(f"demo: the rendered configuration is invalid: {exc}")
        return 1
    _users(directory / "users.toml")
    _say(f"demo: persons {', '.join(x.name for x in PERSONS)} are in {directory / 'users.toml'} (verifiers only)")
    if policy is None:
        _say(f"demo: no policy file yet ({POLICY.relative_to(ROOT)} is missing): sqlbastion runs without one")
    for protocol, label in _PROTOCOLS.items():
        if protocol not in protocols:
            _say(
                f"demo: the {label} listener is not in this checkout yet "
                f"(src/sqlbastion/proxy/{protocol}/listener.py): that backend is not proxied"
            )
    mysql_port = ports.mysql_listen if "mysql" in protocols else None
    postgres_port = ports.postgres_listen if "postgres" in protocols else None
    if not protocols:
        _say("demo: no protocol listener exists yet, so sqlbastion is not started.")
        _say("demo: the servers and the sample bank are up; 'scripts/demo.sh stop' stops them.")
        return 0

    env = dict(os.environ)
    env.update(_secrets(directory))
    env["SQLBASTION_DEMO_MARIADB_PASSWORD"] = str(m["service_password"])
    env["SQLBASTION_DEMO_POSTGRES_PASSWORD"] = str(p["service_password"])
    log = directory / "sqlbastion.log"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sqlbastion.cli", "serve", "--config", "sqlbastion.toml"],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,  # survives the shell that ran `make demo`
        )
    (directory / "sqlbastion.pid").write_text(f"{proc.pid}\n")
    listening = [x for x in (mysql_port, postgres_port) if x is not None]
    try:
        _wait_listening(listening, proc, log)
    except RuntimeError as exc:
        _say(f"demo: {exc}")
        _stop_proxy(directory)
        return 1
    _print_guide(directory, proc.pid, ports, mysql_port=mysql_port, postgres_port=postgres_port, policy=policy)
    return 0


def _print_guide(
    directory: Path,
    pid: int,
    ports: DemoPorts,
    *,
    mysql_port: int | None,
    postgres_port: int | None,
    policy: Path | None,
) -> None:
    cli = _shown(Path(sys.executable).parent / "sqlbastion")
    config = _shown(directory / "sqlbastion.toml")
    _say()
    _say(f"sqlbastion is running (pid {pid}); log: {_shown(directory / 'sqlbastion.log')}")
    if mysql_port:
        _say(f"  MySQL protocol      127.0.0.1:{mysql_port} -> MariaDB 127.0.0.1:{ports.mariadb} (backend 'core')")
    if postgres_port:
        backend = f"PostgreSQL 127.0.0.1:{ports.postgres} (backend 'ledger')"
        _say(f"  PostgreSQL protocol 127.0.0.1:{postgres_port} -> {backend}")
    _say()
    _say("Connect as each demo person (demo passwords, loopback only):")
    for person in PERSONS:
        _say(f"  {person.name} (role {person.role}):")
        for line in connection_lines(person, mysql_port=mysql_port, postgres_port=postgres_port):
            _say(f"    {line}")
        for t in person.tries:
            # The outcomes are what examples/policy.toml decides; without it they would mislead.
            _say(f"    try: {t.sql}" + (f"   -- {t.outcome}" if policy is not None else ""))
    _say()
    if policy is not None:
        _say(f"Policy:  {_shown(policy)}")
        dry_run = "--person dev --backend core 'DELETE FROM transactions'"
        _say(f"Dry-run: {cli} check -c {config} {dry_run}")
    _say(f"Metrics: curl -s http://127.0.0.1:{ports.admin}/metrics | grep ^sqlbastion_")
    _say(f"Audit:   {cli} audit tail -c {config} -f")
    _say(f"         {cli} audit verify -c {config}")
    _say("Stop:    scripts/demo.sh stop")


def _shown(path: Path) -> str:
    """``path`` as short as a copy-paste from the current directory allows."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def stop_all(directory: Path) -> int:
    _stop_proxy(directory)
    if (directory / "servers" / "servers.json").exists():
        _run([sys.executable, "-m", "sqlbastion.devtools.servers", "stop", "--dir", str(directory / "servers")])
        _say("demo: stopped MariaDB and PostgreSQL")
    return 0


def status(directory: Path) -> int:
    pid = _our_proxy(directory / "sqlbastion.pid")
    _say(f"sqlbastion: {'running, pid ' + str(pid) if pid else 'not running'}")
    config = directory / "sqlbastion.toml"
    if pid and config.exists():
        with contextlib.suppress(ConfigError):
            for b in load(config).backends:
                _say(f"  {b.protocol} listener {b.listen} -> backend {b.name!r} at {b.host}:{b.port}")
    state = directory / "servers" / "servers.json"
    if state.exists():
        for kind, info in json.loads(state.read_text()).items():
            alive = _pid_alive(int(info["pid"]))
            _say(f"{kind}: 127.0.0.1:{info['port']} {'running' if alive else 'not running'}")
    else:
        _say("servers: not started")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlbastion.devtools.demo", description="Run the sqlbastion demo.")
    parser.add_argument("action", nargs="?", choices=["start", "stop", "status"], default="start")
    parser.add_argument("--dir", default=str(ROOT / "var" / "demo"), help="where the demo lives (default: var/demo)")
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()
    try:
        return {"start": start, "stop": stop_all, "status": status}[args.action](directory)
    except RuntimeError as exc:
        _say(f"demo: {exc}")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
