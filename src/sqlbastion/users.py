"""Persons' password verifiers: computed, stored, checked. Never passwords.

The users file is TOML, one table per person::

    [persons.alice]
    mysql_native = "…"      # hex SHA1(SHA1(password)), what MySQL itself keeps
    caching_sha2 = "…"      # hex SHA256(SHA256(password)), the fast-path verifier
    scram_sha_256 = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
    pbkdf2 = "pbkdf2-sha256$600000$<salt>$<hash>"   # for clear-text checks

Why these: each wire protocol's challenge-response needs its own verifier.
``mysql_native_password`` proves knowledge of SHA1(password) against
SHA1(SHA1(password)); ``caching_sha2_password``'s fast path proves knowledge of
SHA256(password) against SHA256(SHA256(password)); SCRAM-SHA-256 needs
StoredKey/ServerKey (RFC 5802, RFC 7677). A person may be limited to a subset
(``user add --method``); a missing verifier means that method is refused.
The clear-text password reaches sqlbastion only during the full
``caching_sha2_password`` exchange (TLS or RSA), where the PBKDF2 verifier checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

__all__ = [
    "METHODS",
    "PersonCredentials",
    "UsersFile",
    "UsersFileError",
    "check_caching_sha2_fast",
    "check_cleartext",
    "check_mysql_native",
    "make_credentials",
    "scram_keys",
]

Method = Literal["mysql_native", "caching_sha2", "scram_sha_256", "pbkdf2"]
METHODS: tuple[Method, ...] = ("mysql_native", "caching_sha2", "scram_sha_256", "pbkdf2")
SCRAM_ITERATIONS = 4096
PBKDF2_ITERATIONS = 600_000


class UsersFileError(Exception):
    """The users file is unreadable or malformed; the message names the file and key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PersonCredentials:
    name: str
    mysql_native: str | None = None
    caching_sha2: str | None = None
    scram_sha_256: str | None = None
    pbkdf2: str | None = None
    disabled: bool = False

    def methods(self) -> list[str]:
        return [m for m in METHODS if getattr(self, m)]


def _sha1(b: bytes) -> bytes:
    return hashlib.sha1(b).digest()  # noqa: S324  # mysql_native_password is defined with SHA1


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) per RFC 5802 §3 with SHA-256 (RFC 7677)."""
    # PostgreSQL applies SASLprep; for the ASCII and common Unicode passwords
    # persons use, NFKC normalisation is what SASLprep amounts to.
    import unicodedata

    normalized = unicodedata.normalize("NFKC", password).encode("utf-8")
    salted = hashlib.pbkdf2_hmac("sha256", normalized, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return _sha256(client_key), server_key


def make_credentials(name: str, password: str, methods: tuple[str, ...] = METHODS) -> PersonCredentials:
    """Compute every requested verifier for a person's new password."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown authentication method(s): {', '.join(sorted(unknown))}")
    if not password:
        raise ValueError("the password must not be empty")
    pw = password.encode("utf-8")
    creds = PersonCredentials(name=name)
    if "mysql_native" in methods:
        creds = replace(creds, mysql_native=_sha1(_sha1(pw)).hex())
    if "caching_sha2" in methods:
        creds = replace(creds, caching_sha2=_sha256(_sha256(pw)).hex())
    if "scram_sha_256" in methods:
        salt = os.urandom(16)
        stored, server = scram_keys(password, salt, SCRAM_ITERATIONS)
        b64 = base64.b64encode
        creds = replace(
            creds,
            scram_sha_256=(
                f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"
            ),
        )
    # The PBKDF2 verifier is always kept: it is what checks a clear-text password.
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", pw, salt, PBKDF2_ITERATIONS)
    return replace(creds, pbkdf2=f"pbkdf2-sha256${PBKDF2_ITERATIONS}${salt.hex()}${digest.hex()}")


def parse_scram_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """``SCRAM-SHA-256$iter:salt$stored:server`` → (iterations, salt, stored_key, server_key)."""
    try:
        mech, rest = verifier.split("$", 1)
        iter_salt, keys = rest.split("$", 1)
        iterations_text, salt_b64 = iter_salt.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        if mech != "SCRAM-SHA-256":
            raise ValueError(mech)
        return (
            int(iterations_text),
            base64.b64decode(salt_b64, validate=True),
            base64.b64decode(stored_b64, validate=True),
            base64.b64decode(server_b64, validate=True),
        )
    except (ValueError, TypeError) as exc:
        raise UsersFileError("malformed SCRAM-SHA-256 verifier") from exc


def check_mysql_native(verifier_hex: str, nonce: bytes, response: bytes) -> bool:
    """Check a mysql_native_password scramble.

    The client sends SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))). XOR-ing with
    SHA1(nonce + verifier) recovers SHA1(pw); its SHA1 must equal the verifier.
    See the MySQL protocol documentation, "Native Authentication".
    """
    verifier = bytes.fromhex(verifier_hex)
    if len(response) != 20:
        return False
    mask = _sha1(nonce + verifier)
    candidate = bytes(a ^ b for a, b in zip(response, mask, strict=True))
    return hmac.compare_digest(_sha1(candidate), verifier)


def check_caching_sha2_fast(verifier_hex: str, nonce: bytes, response: bytes) -> bool:
    """Check a caching_sha2_password fast-path scramble.

    The client sends SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce). With the
    verifier SHA256(SHA256(pw)) we recompute the mask, recover SHA256(pw) and
    compare its hash with the verifier.
    """
    verifier = bytes.fromhex(verifier_hex)
    if len(response) != 32:
        return False
    mask = _sha256(verifier + nonce)
    candidate = bytes(a ^ b for a, b in zip(response, mask, strict=True))
    return hmac.compare_digest(_sha256(candidate), verifier)


def check_cleartext(creds: PersonCredentials, password: str) -> bool:
    """Check a clear-text password (caching_sha2 full authentication)."""
    if not creds.pbkdf2:
        return False
    try:
        scheme, iter_text, salt_hex, digest_hex = creds.pbkdf2.split("$")
        if scheme != "pbkdf2-sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), bytes.fromhex(salt_hex), int(iter_text))
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), digest_hex)


@dataclass(kw_only=True, slots=True)
class UsersFile:
    """The users file, loaded and saved atomically."""

    path: Path
    persons: dict[str, PersonCredentials] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, *, missing_ok: bool = False) -> UsersFile:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if missing_ok:
                return cls(path=p)
            raise UsersFileError(f"{p}: the users file does not exist (create it with 'sqlbastion user add')") from None
        except OSError as exc:
            raise UsersFileError(f"{p}: cannot read the users file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsersFileError(f"{p}: not valid TOML: {exc}") from None
        unknown_top = set(data) - {"persons"}
        if unknown_top:
            raise UsersFileError(f"{p}: {sorted(unknown_top)[0]}: unknown key (expected [persons.NAME] tables)")
        persons: dict[str, PersonCredentials] = {}
        for name, table in data.get("persons", {}).items():
            if not isinstance(table, dict):
                raise UsersFileError(f"{p}: persons.{name}: expected a table")
            allowed = {*METHODS, "disabled"}
            for key, value in table.items():
                if key not in allowed:
                    raise UsersFileError(f"{p}: persons.{name}.{key}: unknown key")
                if key == "disabled":
                    if not isinstance(value, bool):
                        raise UsersFileError(f"{p}: persons.{name}.disabled: expected true or false")
                elif not isinstance(value, str):
                    raise UsersFileError(f"{p}: persons.{name}.{key}: expected a string")
            persons[name] = PersonCredentials(name=name, **table)
        return cls(path=p, persons=persons)

    def get(self, name: str) -> PersonCredentials | None:
        creds = self.persons.get(name)
        if creds is None or creds.disabled:
            return None
        return creds

    def save(self) -> None:
        lines = [
            "# sqlbastion users file: password verifiers only, never passwords.",
            "# Managed with 'sqlbastion user add|passwd|list'.",
            "",
        ]
        for name in sorted(self.persons):
            c = self.persons[name]
            lines.append(f"[persons.{_toml_key(name)}]")
            for m in METHODS:
                v = getattr(c, m)
                if v:
                    lines.append(f'{m} = "{v}"')
            if c.disabled:
                lines.append("disabled = true")
            lines.append("")
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _toml_key(name: str) -> str:
    if name.replace("_", "").replace("-", "").isalnum() and name.isascii():
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
