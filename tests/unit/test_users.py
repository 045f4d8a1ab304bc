"""Persons' verifiers: computed per method, checked per protocol, never the password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from sqlbastion.users import (
    PersonCredentials,
    UsersFile,
    UsersFileError,
    check_caching_sha2_fast,
    check_cleartext,
    check_mysql_native,
    make_credentials,
    parse_scram_verifier,
    scram_keys,
)

PASSWORD = "correct horse battery"


def _native_scramble(password: str, nonce: bytes) -> bytes:
    """What a MySQL client sends for mysql_native_password (protocol documentation)."""
    s1 = hashlib.sha1(password.encode()).digest()
    s2 = hashlib.sha1(s1).digest()
    mask = hashlib.sha1(nonce + s2).digest()
    return bytes(a ^ b for a, b in zip(s1, mask, strict=True))


def _sha2_scramble(password: str, nonce: bytes) -> bytes:
    """What a MySQL client sends on caching_sha2_password's fast path."""
    p1 = hashlib.sha256(password.encode()).digest()
    p2 = hashlib.sha256(p1).digest()
    # XOR(SHA256(pw), SHA256(SHA256(SHA256(pw)) || nonce)), as PyMySQL's scramble_caching_sha2 computes it.
    mask = hashlib.sha256(p2 + nonce).digest()
    return bytes(a ^ b for a, b in zip(p1, mask, strict=True))


@pytest.fixture(scope="module")
def creds() -> PersonCredentials:
    return make_credentials("alice", PASSWORD)


def test_no_method_stores_the_password(creds: PersonCredentials) -> None:
    for value in (creds.mysql_native, creds.caching_sha2, creds.scram_sha_256, creds.pbkdf2):
        assert value
        assert PASSWORD not in value
        assert base64.b64encode(PASSWORD.encode()).decode() not in value


def test_mysql_native_scramble(creds: PersonCredentials) -> None:
    nonce = os.urandom(20)
    assert creds.mysql_native
    assert check_mysql_native(creds.mysql_native, nonce, _native_scramble(PASSWORD, nonce))
    assert not check_mysql_native(creds.mysql_native, nonce, _native_scramble("wrong", nonce))
    assert not check_mysql_native(creds.mysql_native, nonce, b"")


def test_caching_sha2_fast_path(creds: PersonCredentials) -> None:
    nonce = os.urandom(20)
    assert creds.caching_sha2
    assert check_caching_sha2_fast(creds.caching_sha2, nonce, _sha2_scramble(PASSWORD, nonce))
    assert not check_caching_sha2_fast(creds.caching_sha2, nonce, _sha2_scramble("nope", nonce))
    assert not check_caching_sha2_fast(creds.caching_sha2, nonce, b"\x00" * 31)


def test_cleartext(creds: PersonCredentials) -> None:
    assert check_cleartext(creds, PASSWORD)
    assert not check_cleartext(creds, PASSWORD + " ")


def test_scram_verifier_matches_rfc_5802(creds: PersonCredentials) -> None:
    assert creds.scram_sha_256
    iterations, salt, stored, server = parse_scram_verifier(creds.scram_sha_256)
    salted = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert stored == hashlib.sha256(client_key).digest()
    assert server == hmac.new(salted, b"Server Key", "sha256").digest()
    assert scram_keys(PASSWORD, salt, iterations) == (stored, server)


def test_methods_subset() -> None:
    c = make_credentials("bob", PASSWORD, ("scram_sha_256",))
    assert c.mysql_native is None
    assert c.caching_sha2 is None
    assert c.methods() == ["scram_sha_256", "pbkdf2"]
    with pytest.raises(ValueError, match="unknown authentication method"):
        make_credentials("bob", PASSWORD, ("md5",))


def test_users_file_round_trip(tmp_path: Path, creds: PersonCredentials) -> None:
    path = tmp_path / "users.toml"
    users = UsersFile.load(path, missing_ok=True)
    users.persons["alice"] = creds
    users.persons["王 五"] = make_credentials("王 五", PASSWORD, ("pbkdf2",))
    users.save()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again = UsersFile.load(path)
    assert again.persons["alice"] == creds
    assert again.get("王 五") is not None
    assert PASSWORD not in path.read_text()


def test_users_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="does not exist"):
        UsersFile.load(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[persons.x]\npasword = "y"\n')
    with pytest.raises(UsersFileError, match=r"persons\.x\.pasword: unknown key"):
        UsersFile.load(bad)


def test_disabled_person_is_not_returned(tmp_path: Path) -> None:
    path = tmp_path / "u.toml"
    path.write_text('[persons.x]\npbkdf2 = "pbkdf2-sha256$1$00$00"\ndisabled = true\n')
    assert UsersFile.load(path).get("x") is None
