"""FF1 format-preserving encryption (NIST SP 800-38G, section 5.1, Algorithms 7 and 8).

Strategy: numeral strings are lists of ints in ``[0, radix)``; the ten Feistel
rounds follow Algorithm 7 step by step (the step numbers are in the comments).
The round function PRF is AES-CBC-MAC with a zero IV (Algorithm 6), computed
with one reusable ECB encryptor by chaining blocks by hand, which lets the
encryption of the constant block P be cached per (length, split).

Domain rule (SP 800-38G Rev. 1, 5.1): ``radix ** minlen >= 1_000_000``; shorter
inputs raise ``ValueError`` and the caller masks the value fully instead.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["FF1", "min_length"]

MAX_LEN = 4096  # far below the standard's 2**32; values we tokenise are short


def min_length(radix: int) -> int:
    """The shortest numeral string FF1 accepts for ``radix`` (radix**minlen >= 10**6)."""
    n = 1
    while radix**n < 1_000_000:
        n += 1
    return n


class FF1:
    """FF1 with AES-128/192/256 under ``key`` for one radix (2…65536)."""

    def __init__(self, key: bytes, radix: int) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("FF1 needs a 128, 192 or 256-bit AES key")
        if not 2 <= radix <= 1 << 16:
            raise ValueError("FF1 radix must be between 2 and 65536")
        self.radix = radix
        self.minlen = min_length(radix)
        # ECB over single blocks is the block cipher CIPH_K of the standard; chaining is done in _prf.
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305  # CIPH_K as a primitive
        self._p_cache = lru_cache(maxsize=256)(self._cipher_p)

    def _ciph(self, block: bytes) -> bytes:
        return self._ecb.update(block)

    def _cipher_p(self, u: int, n: int, t: int) -> bytes:
        # Step 5: P = [1]^1 || [2]^1 || [1]^1 || [radix]^3 || [10]^1 || [u mod 256]^1 || [n]^4 || [t]^4
        p = bytes([1, 2, 1]) + self.radix.to_bytes(3, "big") + bytes([10, u % 256]) + n.to_bytes(4, "big")
        p += t.to_bytes(4, "big")
        return self._ciph(p)

    def _prf(self, y: bytes, q: bytes) -> bytes:
        # Algorithm 6 over P || Q, with CIPH_K(P) already in y.
        for i in range(0, len(q), 16):
            y = self._ciph((int.from_bytes(y, "big") ^ int.from_bytes(q[i : i + 16], "big")).to_bytes(16, "big"))
        return y

    def _rounds(self, x: list[int], tweak: bytes, *, decrypt: bool) -> list[int]:
        radix, n, t = self.radix, len(x), len(tweak)
        if not self.minlen <= n <= MAX_LEN:
            raise ValueError(f"FF1 with radix {radix} needs between {self.minlen} and {MAX_LEN} numerals")
        if any(not 0 <= d < radix for d in x):
            raise ValueError("numeral out of range for the radix")
        u = n // 2  # step 1
        v = n - u
        a, b = x[:u], x[u:]  # step 2
        b_len = ((radix**v - 1).bit_length() + 7) // 8  # step 3: b = ceil(ceil(v*log2(radix))/8)
        d = 4 * ((b_len + 3) // 4) + 4  # step 4
        y0 = self._p_cache(u, n, t)
        pad = bytes((-t - b_len - 1) % 16)
        rounds = range(9, -1, -1) if decrypt else range(10)
        for i in rounds:
            # Step 6.i: Q = T || [0]^((-t-b-1) mod 16) || [i]^1 || [NUM_radix(B)]^b (A when decrypting)
            src = a if decrypt else b
            q = tweak + pad + bytes([i]) + _num(src, radix).to_bytes(b_len, "big")
            r = self._prf(y0, q)  # 6.ii
            s = r  # 6.iii: S = R || CIPH(R xor [1]^16) || ... first d bytes
            j = 1
            while len(s) < d:
                s += self._ciph((int.from_bytes(r, "big") ^ j).to_bytes(16, "big"))
                j += 1
            y = int.from_bytes(s[:d], "big")  # 6.iv
            m = u if i % 2 == 0 else v  # 6.v
            if decrypt:
                c = (_num(b, radix) - y) % radix**m  # Algorithm 8, 6.vi
                a, b = _str(c, radix, m), a
            else:
                c = (_num(a, radix) + y) % radix**m  # 6.vi
                a, b = b, _str(c, radix, m)  # 6.vii-6.ix
        return a + b  # step 7

    def encrypt(self, x: list[int], tweak: bytes = b"") -> list[int]:
        return self._rounds(x, tweak, decrypt=False)

    def decrypt(self, x: list[int], tweak: bytes = b"") -> list[int]:
        return self._rounds(x, tweak, decrypt=True)


def _num(x: list[int], radix: int) -> int:
    value = 0
    for d in x:
        value = value * radix + d
    return value


def _str(value: int, radix: int, m: int) -> list[int]:
    out = [0] * m
    for i in range(m - 1, -1, -1):
        value, out[i] = divmod(value, radix)
    return out
