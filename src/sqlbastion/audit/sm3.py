"""SM3, the Chinese national hash function (GB/T 32905-2016), and HMAC-SM3.

The audit chain can use HMAC-SM3 instead of HMAC-SHA-256 where regulators ask
for the national algorithms. OpenSSL 3 ships SM3 in its default provider, and
``hashlib`` exposes it when it does; this module uses it then, and otherwise
falls back to the pure-Python implementation below, which follows the standard
section by section (it is slower, about 40 µs per 64-byte block, which only
matters for throughput on machines whose OpenSSL lacks SM3).

Test vectors: GB/T 32905-2016 Appendix A (``"abc"`` and ``"abcd" * 16``).
"""

from __future__ import annotations

import hashlib
import struct

__all__ = ["DIGEST_SIZE", "hmac_sm3", "sm3", "sm3_pure"]

DIGEST_SIZE = 32
BLOCK_SIZE = 64

# §4.1 initial value IV.
_IV = (0x7380166F, 0x4914B2B9, 0x172442D7, 0xDA8A0600, 0xA96F30BC, 0x163138AA, 0xE38DEE4D, 0xB0FB0E4E)
_MASK = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    n %= 32
    return ((x << n) | (x >> (32 - n))) & _MASK


# §4.2 constants T_j, pre-rotated by j mod 32 as the compression function uses them.
_T_ROT = tuple(_rotl(0x79CC4519 if j < 16 else 0x7A879D8A, j) for j in range(64))


def _p0(x: int) -> int:  # §4.4 permutation P0
    return x ^ _rotl(x, 9) ^ _rotl(x, 17)


def _p1(x: int) -> int:  # §4.4 permutation P1
    return x ^ _rotl(x, 15) ^ _rotl(x, 23)


def _compress(v: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    # §5.3.2 message expansion: W_0..W_67 and W'_0..W'_63.
    w = list(struct.unpack(">16I", block))
    for j in range(16, 68):
        w.append(_p1(w[j - 16] ^ w[j - 9] ^ _rotl(w[j - 3], 15)) ^ _rotl(w[j - 13], 7) ^ w[j - 6])
    w1 = [w[j] ^ w[j + 4] for j in range(64)]
    # §5.3.3 compression function CF.
    a, b, c, d, e, f, g, h = v
    for j in range(64):
        a12 = _rotl(a, 12)
        ss1 = _rotl((a12 + e + _T_ROT[j]) & _MASK, 7)
        ss2 = ss1 ^ a12
        if j < 16:
            ff = a ^ b ^ c
            gg = e ^ f ^ g
        else:
            ff = (a & b) | (a & c) | (b & c)
            gg = (e & f) | (~e & g)
        tt1 = (ff + d + ss2 + w1[j]) & _MASK
        tt2 = (gg + h + ss1 + w[j]) & _MASK
        d = c
        c = _rotl(b, 9)
        b = a
        a = tt1
        h = g
        g = _rotl(f, 19)
        f = e
        e = _p0(tt2)
    return tuple(x ^ y for x, y in zip((a, b, c, d, e, f, g, h), v, strict=True))


def sm3_pure(data: bytes) -> bytes:
    """SM3 digest computed in Python (§5.2 padding, §5.3 iteration)."""
    bit_len = len(data) * 8
    # §5.2: append bit "1", then k zero bits so that l + 1 + k ≡ 448 (mod 512), then l as 64 bits.
    padded = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack(">Q", bit_len)
    v: tuple[int, ...] = _IV
    for i in range(0, len(padded), BLOCK_SIZE):
        v = _compress(v, padded[i : i + BLOCK_SIZE])
    return struct.pack(">8I", *v)


def _openssl_has_sm3() -> bool:
    try:
        return hashlib.new("sm3", b"abc").hexdigest() == (
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        )
    except ValueError:
        return False


_NATIVE = _openssl_has_sm3()


def sm3(data: bytes) -> bytes:
    """SM3 digest of ``data`` (OpenSSL's when available, else the pure-Python one)."""
    if _NATIVE:
        return hashlib.new("sm3", data).digest()
    return sm3_pure(data)


def hmac_sm3(key: bytes, message: bytes) -> bytes:
    """HMAC (RFC 2104) over SM3, block size 64 bytes."""
    if len(key) > BLOCK_SIZE:
        key = sm3(key)
    key = key.ljust(BLOCK_SIZE, b"\x00")
    inner = bytes(k ^ 0x36 for k in key)
    outer = bytes(k ^ 0x5C for k in key)
    return sm3(outer + sm3(inner + message))
