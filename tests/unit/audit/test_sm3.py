"""SM3 against GB/T 32905-2016 Appendix A, and HMAC-SM3 against the standard library's HMAC."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.audit import sm3

VECTORS = [
    (b"abc", "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"),
    (b"abcd" * 16, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"),
]


@pytest.mark.parametrize(("data", "digest"), VECTORS)
def test_pure_sm3_matches_the_standard_vectors(data: bytes, digest: str) -> None:
    assert sm3.sm3_pure(data).hex() == digest
    assert sm3.sm3(data).hex() == digest


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_pure_sm3_matches_openssl_on_any_length(data: bytes) -> None:
    if "sm3" not in hashlib.algorithms_available:
        pytest.skip("OpenSSL without SM3: only the vectors can check the pure implementation")
    assert sm3.sm3_pure(data) == hashlib.new("sm3", data).digest()


@pytest.mark.parametrize("key", [b"", b"k", b"k" * 64, b"k" * 65, b"k" * 200])
def test_hmac_sm3_matches_the_hmac_construction(key: bytes) -> None:
    if "sm3" not in hashlib.algorithms_available:
        pytest.skip("OpenSSL without SM3")
    message = b"sqlbastion audit record"
    assert sm3.hmac_sm3(key, message) == hmac.new(key, message, "sm3").digest()
