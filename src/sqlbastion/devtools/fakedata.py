"""Realistic fake Chinese personal data, and validators for each kind of value.

Everything here is synthetic: values are drawn from a seeded ``random.Random`` so
a seed always gives the same people, but every value passes the checks a real
system would apply, so the masking and inference tests see data shaped like
production data:

* Resident identity numbers follow GB 11643-1999: a 6-digit administrative
  division code (from a table of real codes below), the birth date as YYYYMMDD,
  a 3-digit sequence code whose last digit is odd for men and even for women,
  and the ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``).
* Bank card numbers start with real issuer identification numbers (BINs) of
  Chinese banks, have the length that bank issues (16, 18 or 19 digits), and end
  in a Luhn (ISO/IEC 7812-1) check digit.
* Mobile numbers are 11 digits starting with a 3-digit prefix allocated to a
  mainland carrier.
* Names use common single surnames and compound surnames (欧阳, 司马, 诸葛, 上官 …)
  and 1-2 character given names chosen by gender; e-mail addresses are built
  from the name's pinyin.
* Addresses name a real province, city and district (the same table as the
  identity numbers), then street, number, building and room.

The validators never raise on odd input (wrong type of characters, wrong
length): they return False, so they can be run over whatever a backend stores.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

__all__ = [
    "BANK_BINS",
    "MOBILE_PREFIXES",
    "REGIONS",
    "BankBin",
    "FakePerson",
    "PersonFaker",
    "Region",
    "bank_of_card",
    "id_card_birth_date",
    "id_card_check_char",
    "id_card_gender",
    "id_card_region",
    "is_valid_address",
    "is_valid_bank_card",
    "is_valid_chinese_name",
    "is_valid_email",
    "is_valid_id_card",
    "is_valid_mobile",
    "luhn_check_digit",
    "luhn_valid",
    "mobile_carrier",
    "split_name",
]

Gender = Literal["M", "F"]


# -- reference tables ---------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@dataclass(frozen=True, kw_only=True, slots=True)
class Region:
    """A district-level administrative division (GB/T 2260 code) and its names."""

    code: str
    province: str
    city: str
    district: str

    @property
    def prefix(self) -> str:
        """How an address starts: municipalities (北京市 …) name the city once."""
        if self.province == self.city:
            return self.city + self.district
        return self.province + self.city + self.district


def _regions(rows: str) -> tuple[Region, ...]:
    out = []
    for line in rows.strip().splitlines():
        code, province, city, district = line.split()
        out.append(Region(code=code, province=province, city=city, district=district))
    return tuple(out)


# Real GB/T 2260 district codes (current as of the 2020s), weighted towards the
# large cities where bank customers concentrate simply by listing more of them.
REGIONS: tuple[Region, ...] = _regions(
    """
110101 北京市 北京市 东城区
110105 北京市 北京市 朝阳区
110108 北京市 北京市 海淀区
310101 上海市 上海市 黄浦区
310104 上海市 上海市 徐汇区
310115 上海市 上海市 浦东新区
120101 天津市 天津市 和平区
500103 重庆市 重庆市 渝中区
440103 广东省 广州市 荔湾区
440106 广东省 广州市 天河区
440304 广东省 深圳市 福田区
440305 广东省 深圳市 南山区
330102 浙江省 杭州市 上城区
330106 浙江省 杭州市 西湖区
330203 浙江省 宁波市 海曙区
320102 江苏省 南京市 玄武区
320505 江苏省 苏州市 虎丘区
510104 四川省 成都市 锦江区
510107 四川省 成都市 武侯区
420102 湖北省 武汉市 江岸区
420106 湖北省 武汉市 武昌区
610103 陕西省 西安市 碑林区
610113 陕西省 西安市 雁塔区
370102 山东省 济南市 历下区
370202 山东省 青岛市 市南区
210102 辽宁省 沈阳市 和平区
210202 辽宁省 大连市 中山区
350102 福建省 福州市 鼓楼区
350203 福建省 厦门市 思明区
430102 湖南省 长沙市 芙蓉区
430103 湖南省 长沙市 天心区
410105 河南省 郑州市 金水区
340104 安徽省 合肥市 蜀山区
530102 云南省 昆明市 五华区
450103 广西壮族自治区 南宁市 青秀区
360102 江西省 南昌市 东湖区
130102 河北省 石家庄市 长安区
140105 山西省 太原市 小店区
220102 吉林省 长春市 南关区
230102 黑龙江省 哈尔滨市 道里区
520102 贵州省 贵阳市 南明区
620102 甘肃省 兰州市 城关区
460105 海南省 海口市 秀英区
150102 内蒙古自治区 呼和浩特市 新城区
"""
)
_REGION_BY_CODE = {r.code: r for r in REGIONS}

# First two digits of GB/T 2260 codes: provinces, autonomous regions, municipalities,
# and 71/81/82 (Taiwan, Hong Kong, Macao residence permits use these).
_PROVINCE_CODES = frozenset(
    _words("11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82")
)


@dataclass(frozen=True, kw_only=True, slots=True)
class BankBin:
    """An issuer identification number and the length of the cards issued under it."""

    prefix: str
    length: int
    bank: str


# Widely published debit-card BINs of Chinese banks (China UnionPay 62xxxx ranges
# and a few older Visa-branded ones), with the card length each issues.
BANK_BINS: tuple[BankBin, ...] = (
    BankBin(prefix="622202", length=19, bank="中国工商银行"),
    BankBin(prefix="621226", length=19, bank="中国工商银行"),
    BankBin(prefix="622848", length=19, bank="中国农业银行"),
    BankBin(prefix="621700", length=19, bank="中国建设银行"),
    BankBin(prefix="436742", length=19, bank="中国建设银行"),
    BankBin(prefix="621661", length=19, bank="中国银行"),
    BankBin(prefix="601382", length=19, bank="中国银行"),
    BankBin(prefix="622262", length=19, bank="交通银行"),
    BankBin(prefix="622588", length=16, bank="招商银行"),
    BankBin(prefix="621483", length=16, bank="招商银行"),
    BankBin(prefix="621799", length=19, bank="中国邮政储蓄银行"),
    BankBin(prefix="622908", length=18, bank="兴业银行"),
)

# Mainland mobile prefixes by carrier (MIIT number plan; 192 is China Broadnet).
MOBILE_PREFIXES: dict[str, str] = {
    **dict.fromkeys(
        _words("134 135 136 137 138 139 147 150 151 152 157 158 159 172 178 182 183 184 187 188 195 197 198"),
        "China Mobile",
    ),
    **dict.fromkeys(_words("130 131 132 145 155 156 166 175 176 185 186 196"), "China Unicom"),
    **dict.fromkeys(_words("133 149 153 173 177 180 181 189 190 191 193 199"), "China Telecom"),
    "192": "China Broadnet",
}
_MOBILE_LIST = tuple(MOBILE_PREFIXES)


def _pinyin_table(rows: str) -> tuple[tuple[str, str, int], ...]:
    """``"王 wang 30"`` lines → (hanzi, pinyin, weight)."""
    out = []
    for item in rows.split(","):
        hanzi, pinyin, weight = item.split()
        out.append((hanzi, pinyin, int(weight)))
    return tuple(out)


# Surnames with pinyin and a rough relative frequency. Compound surnames are rare
# but present, because masking functions must handle them (欧阳娜娜 → 欧阳**).
_SURNAMES = _pinyin_table(
    "王 wang 72, 李 li 71, 张 zhang 68, 刘 liu 54, 陈 chen 45, 杨 yang 31, 黄 huang 24, 赵 zhao 22, 吴 wu 21,"
    " 周 zhou 20, 徐 xu 15, 孙 sun 15, 马 ma 13, 朱 zhu 13, 胡 hu 12, 郭 guo 12, 何 he 10, 高 gao 10, 林 lin 10,"
    " 罗 luo 9, 郑 zheng 9, 梁 liang 8, 谢 xie 7, 宋 song 7, 唐 tang 7, 许 xu 6, 韩 han 6, 冯 feng 6, 邓 deng 6,"
    " 曹 cao 5, 彭 peng 5, 曾 zeng 5, 肖 xiao 5, 田 tian 5, 董 dong 5, 袁 yuan 4, 潘 pan 4, 于 yu 4, 蒋 jiang 4,"
    " 蔡 cai 4, 余 yu 4, 杜 du 4, 叶 ye 4, 程 cheng 4, 苏 su 4, 魏 wei 4, 吕 lv 4, 丁 ding 4, 任 ren 4, 沈 shen 3,"
    " 姚 yao 3, 卢 lu 3, 姜 jiang 3, 崔 cui 3, 钟 zhong 3, 谭 tan 3, 陆 lu 3, 汪 wang 3, 范 fan 3, 金 jin 3,"
    " 石 shi 3, 廖 liao 3, 贾 jia 3, 夏 xia 3, 韦 wei 3, 方 fang 2, 白 bai 2, 邹 zou 2, 孟 meng 2, 熊 xiong 2,"
    " 秦 qin 2, 邱 qiu 2, 江 jiang 2, 尹 yin 2, 薛 xue 2, 段 duan 2, 雷 lei 2, 侯 hou 2, 龙 long 2, 史 shi 2,"
    " 陶 tao 2, 黎 li 2, 贺 he 2, 顾 gu 2, 毛 mao 2, 郝 hao 2, 龚 gong 2, 邵 shao 2, 万 wan 2, 钱 qian 2,"
    " 严 yan 2, 武 wu 2, 戴 dai 2, 孔 kong 2, 汤 tang 2,"
    " 欧阳 ouyang 2, 司马 sima 1, 诸葛 zhuge 1, 上官 shangguan 1, 东方 dongfang 1, 皇甫 huangfu 1, 令狐 linghu 1,"
    " 慕容 murong 1, 尉迟 yuchi 1, 公孙 gongsun 1, 夏侯 xiahou 1, 长孙 zhangsun 1, 宇文 yuwen 1, 司徒 situ 1"
)
_SURNAME_SET = frozenset(s for s, _, _ in _SURNAMES)
_COMPOUND_SURNAMES = frozenset(s for s in _SURNAME_SET if len(s) == 2)
_SURNAME_WEIGHTS = tuple(w for _, _, w in _SURNAMES)

_GIVEN_MALE = _pinyin_table(
    "伟 wei 1, 强 qiang 1, 磊 lei 1, 军 jun 1, 洋 yang 1, 勇 yong 1, 杰 jie 1, 涛 tao 1, 明 ming 1, 超 chao 1,"
    " 刚 gang 1, 平 ping 1, 辉 hui 1, 鹏 peng 1, 华 hua 1, 飞 fei 1, 鑫 xin 1, 波 bo 1, 斌 bin 1, 宇 yu 1,"
    " 浩 hao 1, 凯 kai 1, 健 jian 1, 俊 jun 1, 帆 fan 1, 旭 xu 1, 宁 ning 1, 龙 long 1, 林 lin 1, 博 bo 1,"
    " 文 wen 1, 建 jian 1, 国 guo 1, 志 zhi 1, 峰 feng 1, 亮 liang 1, 晨 chen 1, 轩 xuan 1, 睿 rui 1, 泽 ze 1,"
    " 昊 hao 1, 然 ran 1, 天 tian 1, 子 zi 1, 铭 ming 1, 海 hai 1, 东 dong 1, 成 cheng 1, 毅 yi 1, 远 yuan 1"
)
_GIVEN_FEMALE = _pinyin_table(
    "芳 fang 1, 娜 na 1, 敏 min 1, 静 jing 1, 丽 li 1, 艳 yan 1, 娟 juan 1, 霞 xia 1, 秀 xiu 1, 婷 ting 1,"
    " 雪 xue 1, 玲 ling 1, 琳 lin 1, 慧 hui 1, 颖 ying 1, 倩 qian 1, 洁 jie 1, 燕 yan 1, 萍 ping 1, 红 hong 1,"
    " 梅 mei 1, 莉 li 1, 晶 jing 1, 欣 xin 1, 怡 yi 1, 佳 jia 1, 雯 wen 1, 璐 lu 1, 瑶 yao 1, 琪 qi 1,"
    " 涵 han 1, 悦 yue 1, 诗 shi 1, 梦 meng 1, 思 si 1, 雨 yu 1, 彤 tong 1, 薇 wei 1, 丹 dan 1, 蕾 lei 1,"
    " 月 yue 1, 晓 xiao 1, 嘉 jia 1, 心 xin 1, 可 ke 1, 欢 huan 1, 沁 qin 1, 婉 wan 1, 清 qing 1, 宁 ning 1"
)
# Rare characters people really carry in their names (生僻字): outside the basic CJK
# block, two of them outside the BMP (4 bytes in UTF-8, a surrogate pair in UTF-16).
# Banks must store and mask them whole; about 1% of generated names have one.
_GIVEN_RARE = _pinyin_table("𠮷 ji 1, 𪚥 zhe 1, 䶮 yan 1")
RARE_NAME_SHARE = 0.01

_EMAIL_DOMAINS = ("163.com", "126.com", "qq.com", "sina.com", "foxmail.com", "139.com", "outlook.com", "gmail.com")
_EMAIL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._]{0,62}[a-z0-9])?@(?:[a-z0-9-]+\.)+[a-z]{2,}$")

_STREETS = _words(
    "中山路 人民路 解放路 建设路 和平路 新华路 长江路 黄河路 青年路 友谊路 胜利路 文化路 朝阳路 光明路 幸福路"
    " 科技路 学府路 滨江路 湖滨路 东风路 迎宾大道 世纪大道 金融街 花园街 府前街"
)
_COMMUNITIES = _words("阳光花园 翠湖苑 金色家园 锦绣华庭 世纪城 东方明珠苑 幸福里 桃源居 丽景湾 书香苑 枫林小区 御景园")
_ADDRESS_TAIL_RE = re.compile(
    r"^\S+?(?:路|街|大道)\d{1,4}号(?:\S{2,8}?\d{1,2}栋\d{1,2}单元\d{3,4}室|\d{1,2}栋\d{3,4}室)$"
)


# -- identity numbers (GB 11643-1999) ----------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)  # 2^(17-i) mod 11
_ID_CHECK = "10X98765432"  # check character for (sum mod 11) = 0..10
_ID_MIN_BIRTH = date(1800, 1, 1)  # the standard's own example is born in 1880


def id_card_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits of an identity number."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise ValueError("an identity number's body is 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def _id_birth(value: str) -> date | None:
    try:
        return date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def is_valid_id_card(value: object, *, today: date | None = None, known_regions_only: bool = False) -> bool:
    """True for an 18-character resident identity number that passes every GB 11643 check.

    Checks the province part of the division code (or, with ``known_regions_only``,
    the whole code against ``REGIONS``), the birth date (a real date, not before
    1800, not in the future) and the check character. A lowercase ``x`` is refused:
    the standard and the issuing systems use ``X``.
    """
    if not isinstance(value, str) or len(value) != 18 or not value.isascii():
        return False
    body, check = value[:17], value[17]
    if not body.isdigit() or not (check.isdigit() or check == "X"):
        return False
    if known_regions_only:
        if body[:6] not in _REGION_BY_CODE:
            return False
    elif body[:2] not in _PROVINCE_CODES:
        return False
    birth = _id_birth(value)
    if birth is None or birth < _ID_MIN_BIRTH or birth > (today or date.today()):
        return False
    return id_card_check_char(body) == check


def id_card_birth_date(value: str) -> date:
    """The birth date an identity number encodes. Raises ValueError if it has none."""
    birth = _id_birth(value) if len(value) == 18 else None
    if birth is None:
        raise ValueError("not an identity number with a valid birth date")
    return birth


def id_card_gender(value: str) -> Gender:
    """``"M"`` or ``"F"``: the 17th digit (last of the sequence code) is odd for men."""
    if len(value) != 18 or value[16] not in "0123456789":
        raise ValueError("not an 18-character identity number")
    return "M" if int(value[16]) % 2 else "F"


def id_card_region(value: str) -> Region | None:
    """The division the number was issued under, if it is in ``REGIONS``."""
    return _REGION_BY_CODE.get(value[:6])


# -- bank cards (ISO/IEC 7812-1 Luhn) ----------------------------------------


def luhn_check_digit(body: str) -> str:
    """The Luhn digit to append to ``body`` (digits) so the whole number validates."""
    if not body or not (body.isascii() and body.isdigit()):
        raise ValueError("a card number's body is ASCII digits")
    total = 0
    # Double every second digit counting from the right of the *final* number,
    # which is the rightmost digit of the body and every second one before it.
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(value: str) -> bool:
    """True if ``value`` is at least two ASCII digits and its last digit is its Luhn digit."""
    if len(value) < 2 or not (value.isascii() and value.isdigit()):
        return False
    return luhn_check_digit(value[:-1]) == value[-1]


def bank_of_card(value: str) -> BankBin | None:
    """The BIN entry a card number falls under (prefix and length), if any."""
    for b in BANK_BINS:
        if value.startswith(b.prefix) and len(value) == b.length:
            return b
    return None


def is_valid_bank_card(value: object, *, known_bins_only: bool = True) -> bool:
    """True for a 16-19 digit card number with a valid Luhn digit.

    With ``known_bins_only`` (the default) the number must also start with one
    of ``BANK_BINS`` and have that bank's card length.
    """
    if not isinstance(value, str) or not 16 <= len(value) <= 19 or not luhn_valid(value):
        return False
    return bank_of_card(value) is not None or not known_bins_only


# -- mobile numbers, names, e-mail, addresses ----------------------------------


def mobile_carrier(value: str) -> str | None:
    """The carrier a mainland mobile number's prefix is allocated to."""
    return MOBILE_PREFIXES.get(value[:3]) if len(value) == 11 else None


def is_valid_mobile(value: object) -> bool:
    """True for 11 ASCII digits starting with an allocated mainland prefix."""
    if not isinstance(value, str) or len(value) != 11 or not (value.isascii() and value.isdigit()):
        return False
    return value[:3] in MOBILE_PREFIXES


def split_name(value: str) -> tuple[str, str]:
    """(surname, given name); compound surnames (欧阳 …) are recognised first."""
    if len(value) >= 3 and value[:2] in _COMPOUND_SURNAMES:
        return value[:2], value[2:]
    return value[:1], value[1:]


def _is_cjk(text: str) -> bool:
    # Unified ideographs, extension A, and extensions B-H (U+20000-U+3134F).
    return all(
        "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\U00020000" <= ch <= "\U0003134f" for ch in text
    )


def is_valid_chinese_name(value: object) -> bool:
    """True for 2-4 CJK characters that start with a known surname and have a 1-2 character given name."""
    if not isinstance(value, str) or not 2 <= len(value) <= 4 or not _is_cjk(value):
        return False
    surname, given = split_name(value)
    return surname in _SURNAME_SET and 1 <= len(given) <= 2


def is_valid_email(value: object) -> bool:
    """True for a lowercase ASCII address of the shape this generator (and most mail hosts) use."""
    return isinstance(value, str) and len(value) <= 128 and _EMAIL_RE.match(value) is not None


def is_valid_address(value: object) -> bool:
    """True for an address that starts with a known province/city/district and names street, number and room."""
    if not isinstance(value, str) or len(value) > 255:
        return False
    for r in REGIONS:
        if value.startswith(r.prefix):
            return _ADDRESS_TAIL_RE.match(value[len(r.prefix) :]) is not None
    return False


# -- the generator --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class FakePerson:
    """One synthetic person; ``birth_date`` and ``gender`` agree with ``id_card``."""

    name: str
    pinyin: tuple[str, str]  # (surname, given name) in pinyin, for e-mail addresses
    gender: Gender
    birth_date: date
    id_card: str
    mobile: str
    email: str
    region: Region  # where the identity number was issued
    home: Region  # where the person lives now
    address: str


class PersonFaker:
    """Draws fake people and card numbers from one seeded ``random.Random``.

    Identity numbers, mobile numbers, card numbers and e-mail addresses are unique across
    everything one faker returns, so a test can look a value up and find exactly one
    row; no value (names included) ever equals anything in ``reserved``.
    """

    def __init__(self, rng: random.Random, *, reserved: frozenset[str] = frozenset()) -> None:
        self.rng = rng
        self._reserved = reserved
        self._used: set[str] = set(reserved)

    def _unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            value = make()
            if value not in self._used:
                self._used.add(value)
                return value
        raise RuntimeError("the fake value space is exhausted; lower the scale")

    def birth_date(self, *, oldest: int = 1950, youngest: int = 2006) -> date:
        start = date(oldest, 1, 1)
        span = (date(youngest, 12, 31) - start).days
        return start + timedelta(days=self.rng.randrange(span + 1))

    def id_card(self, region: Region, birth: date, gender: Gender) -> str:
        def make() -> str:
            seq = self.rng.randrange(1, 1000)  # 001-999: offices never issue 000
            if (seq % 2 == 1) != (gender == "M"):
                seq = seq + 1 if seq < 999 else seq - 1  # flip parity: odd = male
            body = f"{region.code}{birth:%Y%m%d}{seq:03d}"
            return body + id_card_check_char(body)

        return self._unique(make)

    def mobile(self) -> str:
        return self._unique(lambda: self.rng.choice(_MOBILE_LIST) + f"{self.rng.randrange(10**8):08d}")

    def bank_card(self, bin_: BankBin | None = None) -> str:
        chosen = bin_ or self.rng.choice(BANK_BINS)
        digits = chosen.length - len(chosen.prefix) - 1

        def make() -> str:
            body = f"{chosen.prefix}{self.rng.randrange(10**digits):0{digits}d}"
            return body + luhn_check_digit(body)

        return self._unique(make)

    def name(self, gender: Gender) -> tuple[str, tuple[str, str]]:
        """A name and its pinyin. Names repeat, as they do in life, but never a reserved one."""
        while True:
            name, pinyin = self._draw_name(gender)
            if name not in self._reserved:
                return name, pinyin

    def _draw_name(self, gender: Gender) -> tuple[str, tuple[str, str]]:
        surname, s_py, _ = self.rng.choices(_SURNAMES, weights=_SURNAME_WEIGHTS)[0]
        table = _GIVEN_MALE if gender == "M" else _GIVEN_FEMALE
        parts = [self.rng.choice(table) for _ in range(1 if self.rng.random() < 0.3 else 2)]
        if self.rng.random() < RARE_NAME_SHARE:
            parts[-1] = self.rng.choice(_GIVEN_RARE)
        given = "".join(h for h, _, _ in parts)
        return surname + given, (s_py, "".join(p for _, p, _ in parts))

    def email(self, pinyin: tuple[str, str], birth: date) -> str:
        surname, given = pinyin
        domain = self.rng.choice(_EMAIL_DOMAINS)
        style = self.rng.randrange(4)
        if domain == "qq.com" and style < 2:
            local = str(self.rng.randrange(10**7, 3 * 10**9))  # QQ numbers
        elif style == 0:
            local = f"{surname}{given}{birth:%y}"
        elif style == 1:
            local = f"{given}.{surname}"
        elif style == 2:
            local = f"{surname[0]}{given}{self.rng.randrange(100, 10000)}"
        else:
            local = f"{surname}_{given}{birth:%m%d}"
        base, n = local, 1
        while f"{local}@{domain}" in self._used:
            n += 1
            local = f"{base}{n}"
        self._used.add(f"{local}@{domain}")
        return f"{local}@{domain}"

    def address(self, region: Region) -> str:
        street = self.rng.choice(_STREETS)
        number = self.rng.randrange(1, 999)
        building = self.rng.randrange(1, 30)
        room = self.rng.randrange(1, 33) * 100 + self.rng.randrange(1, 5)
        if self.rng.random() < 0.5:
            unit = self.rng.randrange(1, 7)
            community = self.rng.choice(_COMMUNITIES)
            return f"{region.prefix}{street}{number}号{community}{building}栋{unit}单元{room}室"
        return f"{region.prefix}{street}{number}号{building}栋{room}室"

    def person(self) -> FakePerson:
        gender: Gender = "M" if self.rng.random() < 0.5 else "F"
        birth = self.birth_date()
        region = self.rng.choice(REGIONS)
        # Most people live where their number was issued; the rest moved.
        home = region if self.rng.random() < 0.7 else self.rng.choice(REGIONS)
        name, pinyin = self.name(gender)
        return FakePerson(
            name=name,
            pinyin=pinyin,
            gender=gender,
            birth_date=birth,
            id_card=self.id_card(region, birth, gender),
            mobile=self.mobile(),
            email=self.email(pinyin, birth),
            region=region,
            home=home,
            address=self.address(home),
        )
