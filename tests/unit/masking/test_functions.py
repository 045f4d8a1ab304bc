"""The masking function catalogue: each function, short values, Unicode, NULL, type preservation."""

from __future__ import annotations

import string
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.masking.functions import (
    COMPOUND_SURNAMES,
    FULL_TEXT,
    MissingKey,
    address,
    build_function,
    chinese_name,
    email,
    email_ascii,
    keep,
    keep_ascii,
    keep_digits,
    keep_digits_ascii_op,
    mobile,
    mobile_ascii,
    name_ascii,
)
from sqlbastion.masking.spec import CATALOGUE, DISCLOSURE, SpecError

KEYS = {"pii": b"a-test-key-that-is-long-enough-32b", "other": b"another-key"}
I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)


def fn(spec: str):  # type: ignore[no-untyped-def]  # returns MaskFunction; kept short for the tables below
    return build_function(spec, KEYS)


def test_catalogue_and_disclosure_agree() -> None:
    assert set(CATALOGUE) == set(DISCLOSURE)
    for name in CATALOGUE:
        spec = name if "key" not in CATALOGUE[name] else f"{name}(key=pii)"
        f = build_function(spec, KEYS)
        assert f.name == spec


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("full", "13812341234", FULL_TEXT),
        ("full", "张三", FULL_TEXT),
        ("full", "", FULL_TEXT),
        ("null", "anything", None),
        ("keep(first=2,last=2)", "abcdefgh", "ab****gh"),
        ("keep(first=1,last=1)", "张三丰来了", "张***了"),
        ("keep(first=3,last=4)", "12345678", FULL_TEXT),  # only 1 of 8 hidden: too short
        ("keep(first=3,last=4)", "1234567", FULL_TEXT),
        ("keep(first=3,last=4)", "", FULL_TEXT),
        ("keep", "abc", "***"),
        ("mobile", "13812341234", "138****1234"),
        ("mobile", "138-1234-1234", "138-****-1234"),
        ("mobile", "+86 13812341234", "+86 138****1234"),
        ("mobile", "1381234", FULL_TEXT),
        ("mobile", "", FULL_TEXT),
        ("id_card", "11010119900307123X", "110101********123X"),
        ("id_card", "110101900307123", "110101*****7123"),
        ("id_card(first=3,last=2)", "11010119900307123X", "110*************3X"),
        ("id_card", "1234567890", FULL_TEXT),
        ("bank_card", "6222021234567890123", "622202*********0123"),
        ("bank_card", "6222 0212 3456 7890", "6222 02** **** 7890"),
        ("bank_card", "62220212", FULL_TEXT),
        ("chinese_name", "张三丰", "张**"),
        ("chinese_name", "张三", "张*"),
        ("chinese_name", "欧阳娜娜", "欧阳**"),
        ("chinese_name", "司马懿", "司马*"),
        ("chinese_name", "诸葛亮", "诸葛*"),
        ("chinese_name", "欧阳", "欧*"),  # a two-character name that happens to be a compound surname
        ("chinese_name", "张", FULL_TEXT),
        ("chinese_name", "买买提·艾力", "买*****"),
        ("chinese_name", "John Smith", "J*** *****"),
        ("chinese_name", "J", FULL_TEXT),
        ("chinese_name", "   ", FULL_TEXT),
        ("email", "zhang.san@example.com", "z***@example.com"),
        ("email", "a@example.com", FULL_TEXT),
        ("email", "not-an-email", FULL_TEXT),
        ("email", "@example.com", FULL_TEXT),
        ("email", "x@y@evil.example", "x***@evil.example"),
        ("address", "广东省深圳市南山区科技园路1号", "广东省深圳市"),
        ("address", "北京市朝阳区建国路88号", "北京市"),
        ("address", "新疆维吾尔自治区乌鲁木齐市天山区", "新疆维吾尔自治区乌鲁木齐市"),
        ("address", "延边朝鲜族自治州延吉市河南街", "延边朝鲜族自治州"),
        ("address", "浙江省某县某镇某村", "浙江省"),
        ("address", "香港特别行政区中西区", "香港特别行政区"),
        ("address", "12 Main Street, Springfield", FULL_TEXT),
        ("address", "某某路菜市场旁边的一个很长很长的小区名称5号", FULL_TEXT),
        ("address", "", FULL_TEXT),
        ("date", "1990-03-07", "1990-01-01"),
        ("date(precision=month)", "1990-03-07", "1990-03-01"),
        ("date", "1990-03-07 12:34:56", "1990-01-01 00:00:00"),
        ("date(precision=month)", "1990-03-07 12:34:56.123456+08", "1990-03-01 00:00:00.000000+00"),
        ("date", "1990-02-30", None),
        ("date", "not a date", None),
        ("date", "0000-00-00", None),
        ("band", "12345.67", "10000.00"),
        ("band", "-999.5", "0.0"),
        ("band", "7", "0"),
        ("band", "1000", "1000"),
        ("band", "20000000", "10000000"),
        ("band", "abc", FULL_TEXT),
        ("band(width=100)", "1234", "1200"),
        ("band(bounds=[0;100;1000])", "555.5", "100.0"),
    ],
)
def test_text_functions(spec: str, value: str, expected: str | None) -> None:
    assert fn(spec).text(value) == expected


@pytest.mark.parametrize("name", [n for n in CATALOGUE if n not in ("null",)])
@given(value=st.text(max_size=40))
@settings(max_examples=40, deadline=None)
def test_never_returns_a_long_value_in_clear(name: str, value: str) -> None:
    spec = name if "key" not in CATALOGUE[name] else f"{name}(key=pii)"
    out = fn(spec).text(value)
    if out is None:
        return
    stripped = value.strip()
    if name == "address":
        assert out == FULL_TEXT or stripped.startswith(out)
        return
    # a band's lower bound or an all-asterisk value can legitimately mask to itself
    if len(stripped) >= 3 and name not in ("date", "band") and set(value) != {"*"}:
        assert out != value, (name, value)


@given(value=st.text(min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_partial_masks_hide_at_least_a_third(value: str) -> None:
    for out in (keep(value, 3, 4), keep_digits(value, 3, 4), mobile(value)):
        if out == FULL_TEXT:
            continue
        assert len(out) == len(value)
        same = sum(1 for a, b in zip(out, value, strict=True) if a == b and a != "*")
        assert (len(value) - same) * 3 >= len(value) or all(c in " -+()./*" for c in value)


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=2, max_size=6))
@settings(max_examples=100, deadline=None)
def test_chinese_names_keep_only_the_surname(name: str) -> None:
    out = chinese_name(name)
    kept = 2 if name[:2] in COMPOUND_SURNAMES and len(name) > 2 else 1
    assert out == name[:kept] + "*" * (len(name) - kept)


def test_email_and_address_helpers() -> None:
    assert email("张三@例子.中国") == "张***@例子.中国" or email("张三@例子.中国") == FULL_TEXT
    assert address("  上海市浦东新区  ") == "上海市"


def test_numbers_stay_numbers_or_null() -> None:
    band = fn("band")
    assert band.integer(12345, *I32) == 10000
    assert band.integer(-12345, *I32) == -10000
    assert band.decimal(Decimal("12345.67")) == Decimal("10000.00")
    assert str(band.decimal(Decimal("12345.67"))) == "10000.00"
    assert band.decimal(Decimal("NaN")) is None
    assert band.floating(1234.5) == 1000.0
    assert band.floating(float("inf")) is None
    # functions that cannot keep a number a number give NULL
    for spec in ("full", "null", "mobile", "keep(first=1,last=1)", "chinese_name", "email", "date"):
        f = fn(spec)
        assert f.integer(13812341234, *I64) is None
        assert f.decimal(Decimal("1.5")) is None
        assert f.floating(1.5) is None


def test_dates_stay_valid_dates() -> None:
    f = fn("date")
    assert f.date(date(1990, 3, 7)) == date(1990, 1, 1)
    assert fn("date(precision=month)").date(date(2000, 2, 29)) == date(2000, 2, 1)
    tz = timezone(timedelta(hours=8))
    assert f.datetime(datetime(1990, 3, 7, 12, 1, 2, tzinfo=tz)) == datetime(1990, 1, 1, tzinfo=tz)
    for spec in ("full", "mobile", "band", "pseudonym(key=pii)", "fpe(key=pii)"):
        g = fn(spec)
        assert g.date(date(1990, 3, 7)) is None
        assert g.datetime(datetime(1990, 3, 7, tzinfo=UTC)) is None


def test_pseudonym_is_keyed_deterministic_and_distinct() -> None:
    a, b = fn("pseudonym(key=pii)"), fn("pseudonym(key=pii)")
    assert a.text("13812341234") == b.text("13812341234")  # across sessions (new objects)
    assert len(a.text("13812341234") or "") == 16
    assert a.text("13812341234") != a.text("13812341235")
    assert fn("pseudonym(key=other)").text("13812341234") != a.text("13812341234")
    sm = fn("pseudonym(key=pii,algorithm=hmac-sm3,length=20)")
    assert len(sm.text("x") or "") == 20
    assert sm.text("x") != fn("pseudonym(key=pii,length=20)").text("x")
    assert set(a.text("张三") or "") <= set(string.hexdigits)
    n = a.integer(42, *I32)
    assert n is not None
    assert 1 <= n <= I32[1]
    assert a.integer(42, *I32) == b.integer(42, *I32)
    assert a.integer(42, 0, 0) is None
    d = a.decimal(Decimal("123.45"))
    assert d is not None
    assert d.as_tuple().exponent == -2


def test_fpe_preserves_format_and_is_deterministic() -> None:
    f = fn("fpe(key=pii)")
    card = "6222021234567890123"
    t = f.text(card)
    assert t is not None
    assert t != card
    assert len(t) == len(card)
    assert t.isdigit()
    assert t == fn("fpe(key=pii)").text(card)
    dashed = f.text("6222-0212-3456-7890")
    assert dashed is not None
    assert dashed[4] == "-"
    assert dashed.replace("-", "").isdigit()
    mixed = f.text("AB12cd34")
    assert mixed is not None
    assert mixed != "AB12cd34"
    assert mixed.isalnum()
    assert len(mixed) == 8
    assert f.text("12345") == FULL_TEXT  # below FF1's minimum domain
    assert f.text("张三丰") == FULL_TEXT  # outside the alphabet: never partly clear
    assert fn("fpe(key=pii,alphabet=digits)").text("12a45678") == FULL_TEXT
    for v in (0, 7, 123456, 2**31 - 1, -(2**31)):
        tok = f.integer(v, *I32)
        assert tok is not None
        assert I32[0] <= tok <= I32[1]
        assert (tok < 0) == (v < 0)
    assert f.integer(5, -128, 127) is None or -128 <= (f.integer(5, -128, 127) or 0) <= 127


def test_keys_and_specs_are_checked() -> None:
    with pytest.raises(MissingKey):
        build_function("pseudonym(key=absent)", KEYS)
    with pytest.raises(MissingKey):
        build_function("fpe(key=pii)", None)
    with pytest.raises(SpecError):
        build_function("nonsense", KEYS)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
@settings(max_examples=300, deadline=None)
def test_ascii_fast_paths_agree_with_the_text_functions(value: str) -> None:
    raw = value.encode("ascii")
    assert mobile_ascii(raw) == mobile(value).encode("ascii")
    for first, last in ((6, 4), (3, 4), (1, 1), (0, 0)):
        assert keep_ascii(raw, first, last) == keep(value, first, last).encode("ascii")
    for first, last in ((6, 4), (3, 4)):
        assert keep_digits_ascii_op(first, last)(raw) == keep_digits(value, first, last).encode("ascii")
    for spec in ("full", "mobile", "id_card", "bank_card", "keep(first=2,last=3)"):
        f = fn(spec)
        assert f.ascii_bytes is not None
        out = f.text(value)
        assert f.ascii_bytes(raw) == (None if out is None else out.encode("ascii"))


@given(st.text(alphabet="0123456789- ", max_size=25))
@settings(max_examples=200, deadline=None)
def test_digit_fast_paths_agree(value: str) -> None:
    raw = value.encode("ascii")
    for first, last in ((6, 4), (3, 4), (0, 4)):
        assert keep_digits_ascii_op(first, last)(raw) == keep_digits(value, first, last).encode("ascii")
    assert mobile_ascii(raw) == mobile(value).encode("ascii")


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=24))
@settings(max_examples=500, deadline=None)
def test_email_and_name_fast_paths_agree_with_the_text_functions(value: str) -> None:
    """Every ASCII character, whitespace and control characters included (str.strip and bytes.strip differ)."""
    raw = value.encode("ascii")
    assert email_ascii(raw) == email(value).encode("ascii")
    assert name_ascii(raw) == chinese_name(value).encode("ascii")
    for spec in ("email", "chinese_name"):
        f = fn(spec)
        assert f.ascii_op is not None
        assert f.ascii_bytes is not None
        out = f.text(value)
        assert out is not None
        assert f.ascii_bytes(raw) == out.encode("ascii")


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (b"zhang.san@example.com", b"z***@example.com"),
        (b"a@b.c", b"****"),
        (b"ab@", b"****"),
        (b"ab@c", b"a***@c"),
        (b"x@y@z", b"x***@z"),
        (b"@", b"****"),
    ],
)
def test_email_ascii(value: bytes, masked: bytes) -> None:
    assert email_ascii(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [(b"John Smith", b"J*** *****"), (b"\x1c Li \x1f", b"L*"), (b"J", b"****"), (b" \t ", b"****"), (b"A\tB", b"A**")],
)
def test_name_ascii(value: bytes, masked: bytes) -> None:
    assert name_ascii(value) == masked
