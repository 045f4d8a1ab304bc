"""SM3 (GB/T 32905-2016) and FF1 (NIST SP 800-38G) against their published test vectors."""

from __future__ import annotations

import hmac
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.masking.fpe import FF1, min_length
from sqlbastion.masking.sm3 import SM3, hmac_sm3, sm3

# GB/T 32905-2016, Appendix A: example 1 ("abc") and example 2 ("abcd" x 16).
SM3_VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]


@pytest.mark.parametrize(("message", "digest"), SM3_VECTORS)
def test_sm3_standard_vectors(message: bytes, digest: str) -> None:
    assert sm3(message).hex() == digest
    h = SM3()
    for i in range(len(message)):  # byte by byte through the buffer
        h.update(message[i : i + 1])
    assert h.hexdigest() == digest


def test_sm3_incremental_matches_one_shot_across_block_boundaries() -> None:
    data = bytes(range(256)) * 3
    for cut in (0, 1, 55, 56, 63, 64, 65, 119, 128, 500):
        h = SM3(data[:cut])
        c = h.copy()
        h.update(data[cut:])
        c.update(data[cut:])
        assert h.digest() == c.digest() == sm3(data)
    assert len({sm3(b"a" * n) for n in range(0, 130)}) == 130


def test_hmac_sm3_is_rfc2104() -> None:
    key, msg = b"key", b"The quick brown fox jumps over the lazy dog"
    # RFC 2104 by hand: H((K ^ opad) || H((K ^ ipad) || m))
    k = key.ljust(64, b"\0")
    inner = sm3(bytes(b ^ 0x36 for b in k) + msg)
    expected = sm3(bytes(b ^ 0x5C for b in k) + inner)
    assert hmac_sm3(key, msg) == expected
    long_key = b"k" * 100  # longer than the block: hashed first
    assert hmac_sm3(long_key, msg) == hmac_sm3(sm3(long_key), msg)
    assert hmac.compare_digest(hmac_sm3(key, msg), hmac_sm3(key, msg))


ALPHABET = string.digits + string.ascii_lowercase
KEY_128 = "2B7E151628AED2A6ABF7158809CF4F3C"
KEY_192 = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F"
KEY_256 = "2B7E151628AED2A6ABF7158809CF4F3CEF4359D8D580AA4F7F036D6F04FC6A94"
TWEAK_10 = "39383736353433323130"
TWEAK_11 = "3737373770717273373737"

# NIST SP 800-38G, FF1 examples (FF1samples.pdf), samples 1-9.
FF1_VECTORS = [
    (KEY_128, 10, "0123456789", "", "2433477484"),
    (KEY_128, 10, "0123456789", TWEAK_10, "6124200773"),
    (KEY_128, 36, "0123456789abcdefghi", TWEAK_11, "a9tv40mll9kdu509eum"),
    (KEY_192, 10, "0123456789", "", "2830668132"),
    (KEY_192, 10, "0123456789", TWEAK_10, "2496655549"),
    (KEY_192, 36, "0123456789abcdefghi", TWEAK_11, "xbj3kv35jrawxv32ysr"),
    (KEY_256, 10, "0123456789", "", "6657667009"),
    (KEY_256, 10, "0123456789", TWEAK_10, "1001623463"),
    (KEY_256, 36, "0123456789abcdefghi", TWEAK_11, "xs8a0azh2avyalyzuwd"),
]


@pytest.mark.parametrize(("key", "radix", "plain", "tweak", "cipher"), FF1_VECTORS)
def test_ff1_nist_samples(key: str, radix: int, plain: str, tweak: str, cipher: str) -> None:
    ff1 = FF1(bytes.fromhex(key), radix)
    x = [ALPHABET.index(c) for c in plain]
    y = ff1.encrypt(x, bytes.fromhex(tweak))
    assert "".join(ALPHABET[d] for d in y) == cipher
    assert ff1.decrypt(y, bytes.fromhex(tweak)) == x


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=6, max_size=40), st.binary(max_size=20))
def test_ff1_round_trip(digits: list[int], tweak: bytes) -> None:
    ff1 = FF1(bytes(range(16)), 10)
    y = ff1.encrypt(digits, tweak)
    assert len(y) == len(digits)
    assert all(0 <= d < 10 for d in y)
    assert ff1.decrypt(y, tweak) == digits


def test_ff1_domain_limits() -> None:
    assert min_length(10) == 6
    assert min_length(62) == 4
    assert min_length(2) == 20
    ff1 = FF1(bytes(16), 10)
    with pytest.raises(ValueError, match="numerals"):
        ff1.encrypt([1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="range"):
        ff1.encrypt([1, 2, 3, 4, 5, 10])
    with pytest.raises(ValueError, match="key"):
        FF1(b"short", 10)
    with pytest.raises(ValueError, match="radix"):
        FF1(bytes(16), 1)
