"""Authentication plugin arithmetic: scrambles, nonces and the RSA key exchange.

page_protocol_connection_phase_authentication_methods_native_password_authentication:
``SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))``.
page_caching_sha2_authentication_exchanges: the fast path sends
``SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)``; full
authentication sends the password in clear over TLS, or without TLS encrypted
with the server's RSA public key (RSA-OAEP, SHA-1 MGF) after XOR with the nonce.

sqlbastion generates its own RSA key pair when it starts (``ServerKeyPair``);
the private key never leaves the process.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
SHA256_PLUGIN = "sha256_password"
CLEAR_TEXT_PLUGIN = "mysql_clear_password"  # a plugin name, not a password
NONCE_LENGTH = 20

# caching_sha2_password AuthMoreData status bytes (page_caching_sha2_authentication_exchanges).
CACHING_SHA2_REQUEST_PUBLIC_KEY = 0x02
CACHING_SHA2_FAST_AUTH_SUCCESS = 0x03
CACHING_SHA2_PERFORM_FULL_AUTH = 0x04


def new_nonce() -> bytes:
    """20 random bytes without NUL or '$' (clients treat the nonce as a C string)."""
    out = bytearray()
    while len(out) < NONCE_LENGTH:
        for raw in os.urandom(NONCE_LENGTH):
            b = raw & 0x7F
            if b not in (0, ord("$")) and len(out) < NONCE_LENGTH:
                out.append(b)
    return bytes(out)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    """mysql_native_password's response; empty for an empty password."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()  # noqa: S324  # the plugin is defined with SHA1
    stage2 = hashlib.sha1(stage1).digest()  # noqa: S324
    return _xor(stage1, hashlib.sha1(nonce[:NONCE_LENGTH] + stage2).digest())  # noqa: S324


def caching_sha2_scramble(password: bytes, nonce: bytes) -> bytes:
    """caching_sha2_password's fast-path response; empty for an empty password."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + nonce[:NONCE_LENGTH]).digest())


def xor_password(password: bytes, nonce: bytes) -> bytes:
    """The NUL-terminated password XOR-ed with the repeated nonce, as encrypted in full auth."""
    pw = password + b"\x00"
    n = nonce[:NONCE_LENGTH] or b"\x00"
    return bytes(pw[i] ^ n[i % len(n)] for i in range(len(pw)))


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """Encrypt for caching_sha2 / sha256_password full authentication without TLS."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    return key.encrypt(
        xor_password(password, nonce),
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303  # what the plugin specifies
    )


class ServerKeyPair:
    """sqlbastion's own RSA key pair for persons' caching_sha2 full authentication without TLS."""

    def __init__(self, bits: int = 2048) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes | None:
        """The clear password (without NUL), or None if the ciphertext is not valid."""
        try:
            plain = self._key.decrypt(
                ciphertext,
                padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),  # noqa: S303
            )
        except ValueError:
            return None
        n = nonce[:NONCE_LENGTH]
        pw = bytes(plain[i] ^ n[i % len(n)] for i in range(len(plain)))
        return pw.split(b"\x00", 1)[0]


_SHARED_KEYS: ServerKeyPair | None = None


def server_key_pair() -> ServerKeyPair:
    """The process's key pair, generated on first use."""
    global _SHARED_KEYS
    if _SHARED_KEYS is None:
        _SHARED_KEYS = ServerKeyPair()
    return _SHARED_KEYS
