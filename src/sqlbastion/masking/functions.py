"""The masking function catalogue: pure functions from a value to its masked form.

Strategy: every function in ``spec.CATALOGUE`` is built here into a
``MaskFunction`` holding one operation per value kind (text, integer, decimal,
float, date, datetime). ``plan.py`` decodes a wire value into that kind, calls
the operation and encodes the answer in the same wire format. An operation
that returns ``None`` means SQL NULL: that is how a function that cannot keep a
column's type (a partial mask of a number, a pseudonym of a date) keeps the
promise "numbers stay numbers or become NULL, dates stay valid dates".

Invariants every text operation keeps:

* characters, not bytes, are counted, so Chinese text is never cut mid-character;
* a value too short for its partial mask (fewer than a third of its characters
  would be hidden) is masked fully, never returned in clear;
* the output never contains a character of the input that the function does
  not mean to keep (``full`` is a constant, so it does not even leak length).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from sqlbastion.masking.fpe import FF1, min_length
from sqlbastion.masking.sm3 import SM3
from sqlbastion.masking.spec import MaskSpec, parse_spec

__all__ = [
    "COMPOUND_SURNAMES",
    "FULL_TEXT",
    "AsciiOp",
    "MaskFunction",
    "MissingKey",
    "build_function",
    "derive_key",
]

FULL_TEXT = "****"
"""What ``full`` (and every fallback to it) puts in place of a text value."""
FULL_BYTES = FULL_TEXT.encode("ascii")

# Chinese compound (two-character) surnames, from the Hundred Family Surnames and
# current usage; a name starting with one of these keeps both characters.
COMPOUND_SURNAMES = frozenset(
    """
    欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 轩辕 令狐 钟离 独孤 南宫 西门 端木
    申屠 公羊 澹台 公冶 宗政 濮阳 淳于 单于 太叔 仲孙 呼延 赫连 闻人 万俟 百里 东郭 南门 羊舌 微生 梁丘
    左丘 东门 第五 鲜于 司空 司寇 亓官 拓跋 夹谷 宰父 谷梁 段干 漆雕 壤驷 乐正 公西 巫马 公良 子车 颛孙
    """.split()  # noqa: SIM905  # a table of names reads better than a list literal
)

TextOp = Callable[[str], str | None]
IntOp = Callable[[int, int, int], int | None]  # (value, lowest, highest allowed by the wire type)
DecimalOp = Callable[[Decimal], Decimal | None]
FloatOp = Callable[[float], float | None]
DateOp = Callable[[date], date | None]
DatetimeOp = Callable[[datetime], datetime | None]


class MissingKey(LookupError):
    """A keyed function names a key that ``[masking] keys`` does not hold."""


def _null(_value: object, *_args: object) -> None:
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class AsciiOp:
    """A text function's operation on all-ASCII UTF-8 values, described as data.

    One description serves both fast paths, so they cannot disagree:
    ``bytes_op()`` builds the Python closure ``MaskFunction.ascii_bytes`` holds,
    and the compiled row rewriter (``sqlbastion._rowfast``) runs the same
    operation from ``kind``, ``first`` and ``last``:

    * ``full`` — the constant ``FULL_TEXT``;
    * ``keep`` — ``keep(value, first, last)``;
    * ``mobile`` — ``mobile(value)``, done in place for 11 ASCII digits;
    * ``keep_digits`` — ``keep_digits(value, first, last)``, done in place when
      every character is a digit (then it is ``keep``);
    * ``email`` — ``email(value)``;
    * ``name`` — ``chinese_name(value)`` (an ASCII name keeps its first letter).

    Where the compiled rewriter does not do a value in place it calls the
    column's masker, which takes the Python path below.
    """

    kind: Literal["full", "keep", "mobile", "keep_digits", "email", "name"]
    first: int = 0
    last: int = 0

    def bytes_op(self) -> Callable[[bytes], bytes]:
        """The Python implementation (``MaskFunction.ascii_bytes``)."""
        if self.kind == "full":
            return _full_bytes
        if self.kind == "keep":
            return keep_ascii_op(self.first, self.last)
        if self.kind == "mobile":
            return mobile_ascii
        if self.kind == "email":
            return email_ascii
        if self.kind == "name":
            return name_ascii
        return keep_digits_ascii_op(self.first, self.last)


@dataclass(frozen=True, kw_only=True, slots=True)
class MaskFunction:
    """One configured masking function, as operations per value kind."""

    name: str  # canonical spelling, the metric label
    text: TextOp
    integer: IntOp = _null
    decimal: DecimalOp = _null
    floating: FloatOp = _null
    date: DateOp = _null
    datetime: DatetimeOp = _null
    text_is_date: bool = False  # text values are dates/timestamps (the date function)
    # The same text operation on an all-ASCII UTF-8 value given as bytes (one byte per
    # character): the hot path for the common partial masks, with no decode or encode.
    # Given ``ascii_op``, ``ascii_bytes`` is built from it (the two always describe one operation).
    ascii_bytes: Callable[[bytes], bytes | None] | None = None
    ascii_op: AsciiOp | None = None

    def __post_init__(self) -> None:
        if self.ascii_op is not None:
            object.__setattr__(self, "ascii_bytes", self.ascii_op.bytes_op())  # frozen: set once, here


# --- text helpers ---------------------------------------------------------------------


def _full(_value: str) -> str:
    return FULL_TEXT


def _enough_hidden(n: int, hidden: int) -> bool:
    return hidden >= 1 and hidden * 3 >= n


def keep(value: str, first: int, last: int) -> str:
    """Keep the first ``first`` and last ``last`` characters; ``*`` for each one between."""
    n = len(value)
    hidden = n - first - last
    if not _enough_hidden(n, hidden):
        return FULL_TEXT
    return value[:first] + "*" * hidden + (value[n - last :] if last else "")


def keep_ascii(value: bytes, first: int, last: int) -> bytes:
    """``keep`` over an ASCII-only value held as bytes (one byte per character)."""
    n = len(value)
    hidden = n - first - last
    if hidden < 1 or hidden * 3 < n:  # _enough_hidden, inlined: this runs per value
        return FULL_BYTES
    return value[:first] + b"*" * hidden + value[n - last :] if last else value[:first] + b"*" * hidden


def keep_ascii_op(first: int, last: int) -> Callable[[bytes], bytes]:
    """``keep_ascii`` with its parameters bound, as one closure (no extra call per value)."""

    def op(value: bytes) -> bytes:
        n = len(value)
        hidden = n - first - last
        if hidden < 1 or hidden * 3 < n:
            return FULL_BYTES
        return value[:first] + b"*" * hidden + value[n - last :] if last else value[:first] + b"*" * hidden

    return op


def mobile_ascii(value: bytes) -> bytes:
    """``mobile`` over an ASCII-only value held as bytes."""
    if len(value) == 11 and value.isdigit():
        return value[:3] + b"****" + value[7:]
    return mobile(value.decode("ascii")).encode("ascii")


def keep_digits_ascii_op(first: int, last: int) -> Callable[[bytes], bytes]:
    """``keep_digits`` over an ASCII-only value held as bytes; all-digit values take ``keep``'s path."""
    plain = keep_ascii_op(first, last)

    def op(value: bytes) -> bytes:
        if value.isdigit():  # no separators: the same as keeping characters
            return plain(value)
        return keep_digits(value.decode("ascii"), first, last).encode("ascii")

    return op


def _full_bytes(_value: bytes) -> bytes:
    return FULL_BYTES


_SEPARATORS = frozenset(" -+()./")


def keep_digits(value: str, first: int, last: int, *, min_hidden: int = 0) -> str:
    """Like ``keep`` over the digits only; separators stay, any other character is masked.

    ``min_hidden`` replaces the one-third rule where a format fixes how many digits hide.
    """
    positions = [i for i, ch in enumerate(value) if ch.isdigit()]
    n = len(positions)
    hidden = n - first - last
    if not (hidden >= min_hidden > 0 or _enough_hidden(n, hidden)):
        return FULL_TEXT
    shown = set(positions[:first]) | set(positions[n - last :] if last else ())
    return "".join(ch if i in shown or ch in _SEPARATORS else "*" for i, ch in enumerate(value))


def mobile(value: str) -> str:
    """``13812341234`` → ``138****1234`` (the usual Chinese presentation of a mobile number)."""
    if len(value) == 11 and value.isascii() and value.isdigit():
        return value[:3] + "****" + value[7:]
    digits = [ch for ch in value if ch.isdigit()]
    if len(digits) == 13 and digits[0] == "8" and digits[1] == "6":
        return keep_digits(value, 5, 4, min_hidden=4)  # +86 country code, then the usual 3 and 4
    return keep_digits(value, 3, 4)


# The ASCII characters str.strip() removes (str.isspace); bytes.strip() knows only six of them.
_ASCII_SPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"


def name_ascii(value: bytes) -> bytes:
    """``chinese_name`` over an ASCII-only value: the first letter, then ``*`` (spaces kept)."""
    name = value.strip(_ASCII_SPACE)
    if len(name) < 2:
        return FULL_BYTES
    return name[:1] + bytes(0x20 if b == 0x20 else 0x2A for b in name[1:])


def email_ascii(value: bytes) -> bytes:
    """``email`` over an ASCII-only value."""
    local, at, domain = value.rpartition(b"@")
    if not at or not domain or len(local) < 2:
        return FULL_BYTES
    return local[:1] + b"***@" + domain


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2EBEF or 0xF900 <= o <= 0xFAFF


def chinese_name(value: str) -> str:
    """Keep the surname (``张三丰`` → ``张**``, ``欧阳娜娜`` → ``欧阳**``); other names keep their first letter."""
    name = value.strip()
    if not name:
        return FULL_TEXT
    if _is_cjk(name[0]):
        keep_n = 2 if name[:2] in COMPOUND_SURNAMES and len(name) > 2 else 1
        if len(name) <= keep_n:
            return FULL_TEXT
        return name[:keep_n] + "*" * (len(name) - keep_n)
    if len(name) < 2:
        return FULL_TEXT
    return name[0] + "".join(" " if ch == " " else "*" for ch in name[1:])


def email(value: str) -> str:
    """``zhang.san@example.com`` → ``z***@example.com``."""
    local, at, domain = value.rpartition("@")
    if not at or not local or not domain or len(local) < 2:
        return FULL_TEXT
    return local[0] + "***@" + domain


_CITY_MARKERS = ("自治州", "地区", "市", "盟")
_PROVINCE_MARKERS = ("特别行政区", "自治区", "省")
_STREET_CHARS = frozenset("路街道巷弄号村镇乡场园楼室栋")
_PROVINCE_WITHIN = 12  # a province name is at most this long
_CITY_NAME_WITHIN = 8  # a city name follows the province within this many characters


def _earliest_end(text: str, markers: tuple[str, ...]) -> int:
    ends = [i + len(m) for m in markers if (i := text.find(m)) > 0]
    return min(ends) if ends else -1


def address(value: str) -> str:
    """Truncate after the city: ``广东省深圳市南山区科技园路1号`` → ``广东省深圳市``.

    A province (optional) opens the address; a city marker must follow it
    closely, and the kept part must not contain a street-level word, so that a
    ``市`` inside a street or building name is not taken for the city. Without a
    city the province alone is kept; without either, the value is masked fully.
    """
    text = value.strip()
    province = _earliest_end(text[:_PROVINCE_WITHIN], _PROVINCE_MARKERS)
    start = max(province, 0)
    city = _earliest_end(text[start : start + _CITY_NAME_WITHIN], _CITY_MARKERS)
    end = start + city if city > 0 else province
    if end <= 0:
        return FULL_TEXT
    kept = text[:end]
    if any(ch in _STREET_CHARS for ch in kept):
        return FULL_TEXT
    return kept


# --- dates ------------------------------------------------------------------------------


def _generalise_date(d: date, month: bool) -> date:
    return d.replace(month=d.month if month else 1, day=1)


def _date_text(month: bool) -> TextOp:
    """A date or timestamp as text: keep the year (and month); day → 01, time digits → 0."""

    def op(value: str) -> str | None:
        v = value.strip()
        if len(v) < 10 or v[4] != "-" or v[7] != "-" or not (v[:4] + v[5:7] + v[8:10]).isdigit():
            return None
        try:
            date(int(v[:4]), int(v[5:7]), int(v[8:10]))
        except ValueError:
            return None
        rest = "".join("0" if ch.isdigit() else ch for ch in v[10:])
        # a zeroed time zone offset ("+08" → "+00") is still a valid timestamp
        return v[:5] + (v[5:7] if month else "01") + "-01" + rest

    return op


# --- numbers ----------------------------------------------------------------------------


def _band_value(bounds: tuple[float, ...], width: int) -> Callable[[Decimal], Decimal]:
    dec_bounds = tuple(Decimal(repr(b)) for b in bounds)

    def band(v: Decimal) -> Decimal:
        sign = -1 if v < 0 else 1
        mag = abs(v)
        if width:
            low = (mag // width) * width
        else:
            low = Decimal(0)
            for b in dec_bounds:
                if mag >= b:
                    low = b
                else:
                    break
        return low * sign if low else abs(low)

    return band


def _band_ops(spec: MaskSpec) -> tuple[TextOp, IntOp, DecimalOp, FloatOp]:
    band = _band_value(spec.bounds_param("bounds"), spec.int_param("width"))

    def dec(v: Decimal) -> Decimal | None:
        if not v.is_finite():
            return None
        out = band(v)
        exp = v.as_tuple().exponent
        return out.quantize(Decimal(1).scaleb(exp)) if isinstance(exp, int) and exp < 0 else out.to_integral_value()

    def integer(v: int, lo: int, hi: int) -> int | None:
        out = int(band(Decimal(v)))
        return out if lo <= out <= hi else None

    def floating(v: float) -> float | None:
        if not math.isfinite(v):
            return None
        return float(band(Decimal(repr(v))))

    def text(v: str) -> str | None:
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            return FULL_TEXT
        out = dec(d)
        return FULL_TEXT if out is None else str(out)

    return text, integer, dec, floating


# --- keyed functions ----------------------------------------------------------------------


def derive_key(master: bytes, purpose: str, size: int = 32) -> bytes:
    """A purpose-bound subkey, so one configured key never serves two algorithms directly."""
    return hmac.new(master, b"sqlbastion-masking/" + purpose.encode(), hashlib.sha256).digest()[:size]


_PSEUDONYM_CACHE = 65_536


def _pseudonym_ops(spec: MaskSpec, master: bytes) -> tuple[TextOp, IntOp, DecimalOp]:
    algorithm = spec.param("algorithm")
    length = spec.int_param("length")
    key = derive_key(master, f"pseudonym/{algorithm}")
    digestmod: Callable[[], object] = SM3 if algorithm == "hmac-sm3" else hashlib.sha256
    base = hmac.new(key, digestmod=digestmod)  # type: ignore[arg-type]  # SM3 follows the hashlib object protocol
    cache: dict[str, bytes] = {}

    def digest(value: str) -> bytes:
        d = cache.get(value)
        if d is None:
            h = base.copy()
            h.update(value.encode("utf-8"))
            d = h.digest()
            if len(cache) >= _PSEUDONYM_CACHE:
                cache.clear()
            cache[value] = d
        return d

    def text(value: str) -> str:
        return digest(value).hex()[:length]

    def integer(value: int, lo: int, hi: int) -> int | None:
        if hi < 1:
            return None
        return 1 + int.from_bytes(digest(str(value))[:8], "big") % hi

    def dec(value: Decimal) -> Decimal | None:
        if not value.is_finite():
            return None
        _sign, digits, exp = value.as_tuple()
        n = max(len(digits), 1)
        token = int.from_bytes(digest(str(value))[:16], "big") % (10**n)
        return Decimal(token).scaleb(exp) if isinstance(exp, int) else None

    return text, integer, dec


_DIGITS = "0123456789"
_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FPE_PASS = frozenset(" -_.@+/:")  # separators kept in place; any other character outside the alphabet → full mask


def _fpe_ops(spec: MaskSpec, master: bytes) -> tuple[TextOp, IntOp]:
    alphabet_choice = spec.param("alphabet")
    key = derive_key(master, "ff1")
    ff1_digits = FF1(key, 10)
    ff1_alnum = FF1(key, 62)
    digit_index = {c: i for i, c in enumerate(_DIGITS)}
    alnum_index = {c: i for i, c in enumerate(_ALNUM)}

    def text(value: str) -> str:
        alnum_only = all(c in digit_index or c in _FPE_PASS for c in value)
        if alphabet_choice == "digits" or (alphabet_choice == "auto" and alnum_only):
            alphabet, index, cipher = _DIGITS, digit_index, ff1_digits
        else:
            alphabet, index, cipher = _ALNUM, alnum_index, ff1_alnum
        positions = [i for i, c in enumerate(value) if c in index]
        if any(c not in index and c not in _FPE_PASS for c in value):
            return FULL_TEXT  # outside the alphabet: never leave such characters in clear
        if len(positions) < cipher.minlen:
            return FULL_TEXT
        out = list(value)
        token = cipher.encrypt([index[value[i]] for i in positions])
        for i, d in zip(positions, token, strict=True):
            out[i] = alphabet[d]
        return "".join(out)

    def integer(value: int, lo: int, hi: int) -> int | None:
        # Tokenise |value| over as many digits as the type's range needs, cycle-walking
        # (re-encrypting) until the token fits, so it always decodes as the same wire type.
        limit = hi if value >= 0 else -lo
        width = max(len(str(limit)), min_length(10))
        token = value if value >= 0 else -value
        for _ in range(100):
            digits = [int(c) for c in str(token).zfill(width)]
            token = int("".join(str(d) for d in ff1_digits.encrypt(digits)))
            if token <= limit:
                return token if value >= 0 else -token
        return None

    return text, integer


# --- the catalogue ------------------------------------------------------------------------


def build_function(canonical: str, keys: Mapping[str, bytes] | None = None) -> MaskFunction:
    """The masking function for a canonical specification (``Treatment.function``).

    Raises ``spec.SpecError`` for an unknown function and ``MissingKey`` when a
    keyed function names a key that ``keys`` does not hold.
    """
    spec = parse_spec(canonical)
    name = spec.canonical
    kind = spec.name
    if kind == "full":
        return MaskFunction(name=name, text=_full, ascii_op=AsciiOp(kind="full"))
    if kind == "null":
        return MaskFunction(name=name, text=_null)
    if kind in ("keep", "id_card"):
        first, last = spec.int_param("first"), spec.int_param("last")
        return MaskFunction(
            name=name, text=lambda v: keep(v, first, last), ascii_op=AsciiOp(kind="keep", first=first, last=last)
        )
    if kind == "mobile":
        return MaskFunction(name=name, text=mobile, ascii_op=AsciiOp(kind="mobile"))
    if kind == "bank_card":
        first, last = spec.int_param("first"), spec.int_param("last")
        return MaskFunction(
            name=name,
            text=lambda v: keep_digits(v, first, last),
            ascii_op=AsciiOp(kind="keep_digits", first=first, last=last),
        )
    if kind == "chinese_name":
        return MaskFunction(name=name, text=chinese_name, ascii_op=AsciiOp(kind="name"))
    if kind == "email":
        return MaskFunction(name=name, text=email, ascii_op=AsciiOp(kind="email"))
    if kind == "address":
        return MaskFunction(name=name, text=address)
    if kind == "date":
        month = spec.param("precision") == "month"
        return MaskFunction(
            name=name,
            text=_date_text(month),
            date=lambda d: _generalise_date(d, month),
            datetime=lambda d: datetime.combine(_generalise_date(d.date(), month), datetime.min.time(), d.tzinfo),
            text_is_date=True,
        )
    if kind == "band":
        text, integer, dec, floating = _band_ops(spec)
        return MaskFunction(name=name, text=text, integer=integer, decimal=dec, floating=floating)
    key_ref = spec.key_ref or ""
    if keys is None or key_ref not in keys:
        raise MissingKey(f"masking function {name!r} needs key {key_ref!r} in [masking] keys")
    if kind == "pseudonym":
        ptext, pint, pdec = _pseudonym_ops(spec, keys[key_ref])
        return MaskFunction(name=name, text=ptext, integer=pint, decimal=pdec)
    if kind == "fpe":
        ftext, fint = _fpe_ops(spec, keys[key_ref])
        return MaskFunction(name=name, text=ftext, integer=fint)
    raise MissingKey(f"masking function {name!r} is not implemented")  # the catalogue and this module disagree
