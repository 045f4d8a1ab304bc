"""SCRAM-SHA-256 (RFC 5802, RFC 7677) for both ends, plus the md5 password hash.

Sans-IO: each exchange object takes the peer's message bytes and returns the
next message to send. PostgreSQL carries SCRAM inside SASLInitialResponse /
SASLResponse and AuthenticationSASLContinue / AuthenticationSASLFinal
(PostgreSQL 15 documentation §55.3.1 "SCRAM-SHA-256 Authentication").

* ``ScramServer`` checks a person against a stored verifier (StoredKey,
  ServerKey) — it never sees the password.
* ``ScramClient`` logs in to the backend with the vaulted password.

Channel binding (SCRAM-SHA-256-PLUS) is not offered: sqlbastion terminates the
client's TLS itself, so binding to it would prove nothing about the backend
hop. A client that announces it supports binding but sees the server does not
("y,,") is accepted, as PostgreSQL does; "p=…" is refused.

Unknown persons go through the same exchange with a salt derived from the
name and a per-process secret, and fail at the same step with the same text,
so the exchange does not reveal which person names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata

from sqlbastion.proxy.postgres.protocol import ProtocolViolation

__all__ = ["ScramClient", "ScramFailed", "ScramServer", "fake_key_for", "md5_password"]

MECHANISM = "SCRAM-SHA-256"
_FAKE_SECRET = os.urandom(32)
_MAX_SCRAM_MESSAGE = 1024


class ScramFailed(Exception):
    """The peer's proof did not verify (wrong password or unknown person)."""


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, "sha256").digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolViolation("malformed SCRAM message: bad base64", sqlstate="08P01") from None


def _attributes(message: str) -> dict[str, str]:
    """``a=1,b=2`` → {"a": "1", "b": "2"}; RFC 5802 §5.1 attribute names are one letter."""
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ProtocolViolation("malformed SCRAM message", sqlstate="08P01")
        out.setdefault(part[0], part[2:])
    return out


def _decode(message: bytes) -> str:
    if len(message) > _MAX_SCRAM_MESSAGE:
        raise ProtocolViolation("SCRAM message too long", sqlstate="08P01")
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("SCRAM message is not valid UTF-8", sqlstate="08P01") from None


def _saslprep(password: str) -> bytes:
    # The same normalisation users.scram_keys applies when it builds verifiers.
    return unicodedata.normalize("NFKC", password).encode("utf-8")


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange.

    Args:
        verifier: (iterations, salt, StoredKey, ServerKey), or None for an
            unknown person (the exchange then runs with fake keys and fails).
        person: the person name, used only to derive the fake salt.
        fake_key: the key the fake salt is derived with. It should stay the
            same across restarts (see ``fake_key_for``), so that comparing salts
            over time does not tell unknown persons from known ones.
    """

    def __init__(
        self,
        verifier: tuple[int, bytes, bytes, bytes] | None,
        *,
        person: str,
        nonce: str | None = None,
        fake_key: bytes | None = None,
    ):
        if verifier is None:
            fake = _hmac(fake_key or _FAKE_SECRET, person.encode("utf-8"))
            self._known = False
            self._iterations, self._salt = 4096, fake[:16]
            self._stored_key, self._server_key = _h(fake), fake
        else:
            self._known = True
            self._iterations, self._salt, self._stored_key, self._server_key = verifier
        self._nonce = nonce if nonce is not None else _b64(os.urandom(18))
        self._client_first_bare = ""
        self._server_first = ""
        self._combined_nonce = ""
        self._gs2_header = ""

    def first(self, client_first: bytes) -> bytes:
        """client-first-message → server-first-message (RFC 5802 §5.1)."""
        text = _decode(client_first)
        gs2_flag, sep, rest = text.partition(",")
        if not sep or gs2_flag not in ("n", "y"):
            # "p=…" asks for channel binding, which was not offered.
            raise ProtocolViolation("SCRAM channel binding is not supported", sqlstate="28000")
        authzid, sep, bare = rest.partition(",")
        if not sep or authzid:
            raise ProtocolViolation("SCRAM authorization identities are not supported", sqlstate="28000")
        attrs = _attributes(bare)
        if "m" in attrs or "r" not in attrs or not attrs["r"] or "," in attrs["r"]:
            raise ProtocolViolation("malformed SCRAM client-first-message", sqlstate="08P01")
        self._gs2_header = f"{gs2_flag},,"
        self._client_first_bare = bare
        self._combined_nonce = attrs["r"] + self._nonce
        self._server_first = f"r={self._combined_nonce},s={_b64(self._salt)},i={self._iterations}"
        return self._server_first.encode("ascii")

    def final(self, client_final: bytes) -> bytes:
        """client-final-message → server-final-message; raises ScramFailed on a bad proof."""
        text = _decode(client_final)
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ProtocolViolation("malformed SCRAM client-final-message", sqlstate="08P01")
        attrs = _attributes(without_proof)
        if attrs.get("c") != _b64(self._gs2_header.encode("ascii")):
            raise ProtocolViolation("SCRAM channel binding does not match", sqlstate="08P01")
        if attrs.get("r") != self._combined_nonce:
            raise ProtocolViolation("SCRAM nonce does not match", sqlstate="08P01")
        proof = _unb64(proof_part)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(self._stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise ScramFailed("bad proof length")
        client_key = _xor(proof, client_signature)
        if not hmac.compare_digest(_h(client_key), self._stored_key) or not self._known:
            raise ScramFailed("bad proof")
        return f"v={_b64(_hmac(self._server_key, auth_message))}".encode("ascii")


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange (sqlbastion logging in to a backend)."""

    def __init__(self, password: str, *, user: str = "", nonce: str | None = None) -> None:
        self._password = _saslprep(password)
        self._nonce = nonce if nonce is not None else _b64(os.urandom(18))
        # RFC 5802 §5.1 saslname escaping; PostgreSQL ignores the name (it uses the startup user).
        name = user.replace("=", "=3D").replace(",", "=2C")
        self._client_first_bare = f"n={name},r={self._nonce}"
        self._expected_server_signature = b""

    def first(self) -> bytes:
        """The client-first-message (libpq sends an empty user name)."""
        return f"n,,{self._client_first_bare}".encode("ascii")

    def final(self, server_first: bytes) -> bytes:
        """server-first-message → client-final-message."""
        text = _decode(server_first)
        attrs = _attributes(text)
        nonce, salt_b64, iter_text = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise ProtocolViolation("the backend's SCRAM nonce does not extend ours", sqlstate="08P01")
        if not iter_text.isdigit() or not 1 <= int(iter_text) <= 10_000_000:
            raise ProtocolViolation("the backend's SCRAM iteration count is invalid", sqlstate="08P01")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, _unb64(salt_b64), int(iter_text))
        client_key = _hmac(salted, b"Client Key")
        server_key = _hmac(salted, b"Server Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth_message))
        self._expected_server_signature = _hmac(server_key, auth_message)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        """Check the backend's signature: a backend that does not know the password is refused."""
        attrs = _attributes(_decode(server_final))
        if "e" in attrs:
            raise ScramFailed(f"the backend refused the SCRAM exchange: {attrs['e']}")
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self._expected_server_signature):
            raise ScramFailed("the backend's SCRAM server signature does not verify")


def fake_key_for(verifiers: list[str]) -> bytes:
    """A stable secret key for fake salts: a hash of every stored verifier.

    It changes only when the users file does, and reveals nothing about the
    verifiers (they are only ever an HMAC key's input).
    """
    return hashlib.sha256(b"sqlbastion fake SCRAM salt\x00" + "\x00".join(sorted(verifiers)).encode()).digest()


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The AuthenticationMD5Password answer: "md5" + md5(md5(password + user) + salt) (§55.3)."""
    inner = hashlib.md5(password.encode("utf-8") + user.encode("utf-8")).hexdigest()  # noqa: S324  # protocol-defined
    return b"md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest().encode("ascii")  # noqa: S324  # protocol-defined
