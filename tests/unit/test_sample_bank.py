"""The fake personal data validators and the sample bank generator (no database needed)."""

from __future__ import annotations

import contextlib
import hashlib
import random
from dataclasses import replace
from datetime import date, datetime, timedelta

import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlbastion.devtools.fakedata import (
    BANK_BINS,
    MOBILE_PREFIXES,
    REGIONS,
    PersonFaker,
    bank_of_card,
    id_card_birth_date,
    id_card_check_char,
    id_card_gender,
    id_card_region,
    is_valid_address,
    is_valid_bank_card,
    is_valid_chinese_name,
    is_valid_email,
    is_valid_id_card,
    is_valid_mobile,
    luhn_check_digit,
    luhn_valid,
    mobile_carrier,
    split_name,
)
from sqlbastion.devtools.sample_bank import (
    CANARY,
    COLUMNS,
    DEFAULT_SEED,
    BankData,
    _main,
    generate,
    load_mariadb,
    load_postgres,
    load_servers,
    mysql_literal,
)
from sqlbastion.devtools.servers import ServerInfo, free_port

# -- identity numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "11010519491231002X",  # the example printed in GB 11643-1999 itself
        "440524188001010014",  # the standard's second example
        "440305198707212485",  # the canary
    ],
)
def test_known_good_identity_numbers(number: str) -> None:
    assert is_valid_id_card(number)
    assert id_card_check_char(number[:17]) == number[17]


def test_identity_number_fields() -> None:
    assert id_card_birth_date("11010519491231002X") == date(1949, 12, 31)
    assert id_card_gender("11010519491231002X") == "F"  # sequence 002: even
    assert id_card_gender("440524188001010014") == "M"  # sequence 001: odd
    region = id_card_region("11010519491231002X")
    assert region is not None
    assert (region.province, region.district) == ("北京市", "朝阳区")
    assert id_card_region("99999919491231002X") is None
    with pytest.raises(ValueError):
        id_card_birth_date("110105194902300021")
    with pytest.raises(ValueError):
        id_card_gender("1101051949")


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("110105194912310021", "wrong check digit"),
        ("11010519491231002x", "lowercase x"),
        ("11010519491231002", "17 characters"),
        ("11010519491231002X0", "19 characters"),
        ("110105194902300028", "30 February"),
        ("110105179912310025", "born before 1800"),
        ("110105290001010015", "born in the future"),
        ("990105194912310020", "no such province"),
        ("1101051949123100２X", "full-width digit"),
        ("11010519491231X02X", "X inside the body"),
        ("", "empty"),
    ],
)
def test_known_bad_identity_numbers(number: str, why: str) -> None:
    assert not is_valid_id_card(number), why


def test_identity_number_rejects_non_strings_and_unknown_regions() -> None:
    assert not is_valid_id_card(11010519491231002)
    assert not is_valid_id_card(None)
    assert not is_valid_id_card(b"11010519491231002X")
    # 110100 is a valid province but not a district in the table.
    body = "11010019800101001"
    assert is_valid_id_card(body + id_card_check_char(body))
    assert not is_valid_id_card(body + id_card_check_char(body), known_regions_only=True)


def test_identity_number_today_is_honoured() -> None:
    body = "11010520200101001"
    number = body + id_card_check_char(body)
    assert is_valid_id_card(number, today=date(2020, 1, 1))
    assert not is_valid_id_card(number, today=date(2019, 12, 31))


def test_check_char_rejects_bad_bodies() -> None:
    for body in ("1234", "1101051949123100A", "1101051949123100２"):
        with pytest.raises(ValueError):
            id_card_check_char(body)


@given(
    st.sampled_from([r.code for r in REGIONS]),
    st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)),
    st.integers(min_value=0, max_value=999),
)
def test_any_body_with_its_check_char_validates_and_one_changed_digit_does_not(
    region: str, birth: date, sequence: int
) -> None:
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    number = body + id_card_check_char(body)
    assert is_valid_id_card(number, known_regions_only=True)
    assert id_card_birth_date(number) == birth
    assert id_card_gender(number) == ("M" if sequence % 2 else "F")
    # MOD 11-2 catches every single-digit substitution (no weight is 0 mod 11).
    for i in range(17):
        for d in "0123456789":
            if d != body[i]:
                changed = body[:i] + d + body[i + 1 :]
                assert id_card_check_char(changed) != number[17]


# -- bank cards ---------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["79927398713", "4111111111111111", "6222020755202605217", "0000000000000000"])
def test_luhn_known_good(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["79927398710", "4111111111111112", "6222020755202605218", "7", "", "4111-1111"])
def test_luhn_known_bad(number: str) -> None:
    assert not luhn_valid(number)


@given(st.text(alphabet="0123456789", min_size=15, max_size=18))
def test_luhn_digit_makes_any_body_valid_and_catches_single_digit_errors(body: str) -> None:
    number = body + luhn_check_digit(body)
    assert luhn_valid(number)
    for i in range(len(number)):
        for d in "0123456789":
            if d != number[i]:
                assert not luhn_valid(number[:i] + d + number[i + 1 :])


def test_bank_cards_need_a_known_bin_and_its_length() -> None:
    assert is_valid_bank_card(CANARY.card_no)
    bin_ = bank_of_card(CANARY.card_no)
    assert bin_ is not None
    assert bin_.bank == "中国工商银行"
    # The right Luhn digit but a 16-digit number under a 19-digit BIN.
    body = "622202123456789"
    short = body + luhn_check_digit(body)
    assert not is_valid_bank_card(short)
    assert is_valid_bank_card(short, known_bins_only=False)
    body = "411111111111111"
    visa = body + luhn_check_digit(body)
    assert not is_valid_bank_card(visa)
    assert is_valid_bank_card(visa, known_bins_only=False)
    assert not is_valid_bank_card("41111111111111", known_bins_only=False)  # 14 digits
    assert not is_valid_bank_card(None)
    assert all(16 <= b.length <= 19 and len(b.prefix) == 6 for b in BANK_BINS)


def test_generated_cards_cover_every_bin_and_validate() -> None:
    faker = PersonFaker(random.Random(5))
    for b in BANK_BINS:
        for _ in range(20):
            card = faker.bank_card(b)
            assert len(card) == b.length
            assert is_valid_bank_card(card)
            assert bank_of_card(card) == b


# -- mobile numbers, names, e-mail, addresses ---------------------------------------------


def test_mobile_numbers() -> None:
    assert is_valid_mobile("13800138000")
    assert mobile_carrier("13800138000") == "China Mobile"
    assert mobile_carrier("18912345678") == "China Telecom"
    assert mobile_carrier("19212345678") == "China Broadnet"
    for bad in ("12345678901", "1380013800", "138001380001", "+8613800138000", "1380013800A", "１3800138000", None):
        assert not is_valid_mobile(bad), bad
    assert all(len(p) == 3 and p.startswith("1") for p in MOBILE_PREFIXES)


def test_names_and_compound_surnames() -> None:
    assert split_name("欧阳娜娜") == ("欧阳", "娜娜")
    assert split_name("诸葛亮") == ("诸葛", "亮")
    assert split_name("王伟") == ("王", "伟")
    assert split_name("欧阳") == ("欧", "阳")  # two characters: a single surname and a given name
    for good in ("王伟", "欧阳娜娜", "司马光明", "上官婉清", "张子涵", "王𠮷", "刘䶮", "诸葛𪚥"):
        assert is_valid_chinese_name(good), good
    for bad in ("张", "阿三", "王小明明", "Zhang Wei", "王 伟", "诸葛", None):
        assert not is_valid_chinese_name(bad), bad


def test_email_addresses() -> None:
    for good in ("zhangwei88@163.com", "wei.zhang@qq.com", "123456789@qq.com", "li_na0101@sina.com"):
        assert is_valid_email(good), good
    for bad in ("Zhang@163.com", "zhang@163", ".zhang@163.com", "张伟@163.com", "a" * 130 + "@163.com", None):
        assert not is_valid_email(bad), bad


def test_addresses() -> None:
    assert is_valid_address(CANARY.address)
    assert is_valid_address("北京市东城区中山路1号2栋301室")
    assert is_valid_address("广西壮族自治区南宁市青秀区世纪大道99号阳光花园3栋1单元1203室")
    for bad in (
        "北京市东城区",  # no street
        "火星市东城区中山路1号2栋301室",  # no such city
        "北京市东城区中山路1号",  # no building or room
        "北京市东城区中山路1号2栋301室; DROP TABLE x",
        None,
    ):
        assert not is_valid_address(bad), bad


def test_region_table_is_consistent() -> None:
    codes = [r.code for r in REGIONS]
    assert len(codes) == len(set(codes))
    for r in REGIONS:
        assert len(r.code) == 6
        assert r.code.isdigit()
        assert r.province.endswith(("省", "市", "自治区"))
        assert r.city.endswith("市")
        assert r.district.endswith(("区", "新区"))


def test_people_are_consistent_and_unique() -> None:
    faker = PersonFaker(random.Random(11))
    people = [faker.person() for _ in range(3000)]
    for p in people:
        assert is_valid_id_card(p.id_card, known_regions_only=True)
        assert id_card_birth_date(p.id_card) == p.birth_date
        assert id_card_gender(p.id_card) == p.gender
        assert id_card_region(p.id_card) == p.region
        assert p.address.startswith(p.home.prefix)
        assert is_valid_chinese_name(p.name)
        assert is_valid_mobile(p.mobile)
        assert is_valid_email(p.email)
        assert is_valid_address(p.address)
    for attr in ("id_card", "mobile", "email"):
        assert len({getattr(p, attr) for p in people}) == len(people), attr
    # Realistic spread: both genders, compound surnames present, several regions.
    assert {p.gender for p in people} == {"M", "F"}
    assert any(len(split_name(p.name)[0]) == 2 for p in people)
    assert len({p.region.code for p in people}) > 30


def test_reserved_names_are_never_generated() -> None:
    # 王伟 is about one male name in 2,400 here, so 20,000 draws would hold several.
    plain = PersonFaker(random.Random(9))
    assert sum(plain.name("M")[0] == "王伟" for _ in range(20_000)) > 0
    guarded = PersonFaker(random.Random(9), reserved=frozenset({"王伟"}))
    names = [guarded.name("M")[0] for _ in range(20_000)]
    assert "王伟" not in names
    assert sum(n.startswith("王") for n in names) > 500


def test_reserved_values_are_never_generated() -> None:
    faker = PersonFaker(random.Random(3), reserved=frozenset({"zhangwei88@163.com"}))
    emails = {faker.email(("zhang", "wei"), date(1988, 1, 1)) for _ in range(200)}
    assert "zhangwei88@163.com" not in emails


# -- any input --------------------------------------------------------------------------------

_VALIDATORS = (
    is_valid_id_card,
    is_valid_bank_card,
    is_valid_mobile,
    is_valid_chinese_name,
    is_valid_email,
    is_valid_address,
)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=40), st.integers(), st.none()))
def test_validators_never_raise_on_any_input(value: object) -> None:
    for check in _VALIDATORS:
        assert check(value) in (True, False)


@given(st.text(alphabet="0123456789Xx²٣０ -", max_size=20))
def test_digit_lookalikes_never_validate_or_crash(value: str) -> None:
    if not value.isascii():
        assert not is_valid_id_card(value)
        assert not is_valid_bank_card(value, known_bins_only=False)
        assert not is_valid_mobile(value)
        assert not luhn_valid(value)
    for parse in (id_card_birth_date, id_card_gender):
        with contextlib.suppress(ValueError):
            parse(value)


# -- the dataset --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> BankData:
    return generate(seed=DEFAULT_SEED, scale=0.2)


def test_sizes_follow_the_scale(small: BankData) -> None:
    assert (len(small.customers), len(small.accounts), len(small.transactions)) == (2000, 4000, 14000)
    for table, cols in COLUMNS.items():
        assert all(len(r) == len(cols) for r in small.rows(table))
    with pytest.raises(ValueError):
        generate(scale=0)
    with pytest.raises(ValueError):
        generate(scale=21)


def test_same_seed_same_rows_other_seed_other_rows(small: BankData) -> None:
    again = generate(seed=DEFAULT_SEED, scale=0.2)
    assert again == small
    other = generate(seed=DEFAULT_SEED + 1, scale=0.2)
    assert other.customers[1:] != small.customers[1:]
    assert other.customers[0] == small.customers[0]  # the canary is fixed


def test_a_smaller_scale_is_a_prefix_of_customers(small: BankData) -> None:
    smaller = generate(seed=DEFAULT_SEED, scale=0.1)
    assert smaller.customers == small.customers[:1000]


def test_dataset_fingerprint_is_stable() -> None:
    """Tests across the project name values from the default seed; a change here must be deliberate."""
    data = generate(seed=DEFAULT_SEED, scale=0.01)
    digest = hashlib.sha256()
    for table in COLUMNS:
        for row in data.rows(table):
            digest.update(repr(row).encode())
    assert digest.hexdigest()[:16] == FINGERPRINT


FINGERPRINT = "9fb11d002e7637f2"


def test_canary_is_customer_one_and_valid(small: BankData) -> None:
    c = small.canary
    assert c == CANARY
    assert small.customers[0][:6] == (1, c.name, c.id_card, c.mobile, c.email, c.address)
    assert small.accounts[0][:3] == (1, 1, c.card_no)
    assert is_valid_id_card(c.id_card, known_regions_only=True)
    assert id_card_birth_date(c.id_card) == c.birth_date
    assert id_card_gender(c.id_card) == c.gender
    assert is_valid_bank_card(c.card_no)
    assert is_valid_mobile(c.mobile)
    assert is_valid_email(c.email)
    assert is_valid_address(c.address)
    assert len(split_name(c.name)[0]) == 2
    canary_values = set(c.sensitive_values())
    assert len(canary_values) == 6
    for row in small.customers[1:]:
        assert not canary_values & set(row)
    for row in small.accounts[1:]:
        assert row[2] != c.card_no
    for row in small.transactions:
        assert row[7] != c.card_no or row[6] == c.name  # only as a transfer to the canary herself


def test_customers_are_consistent(small: BankData) -> None:
    for _cid, name, id_card, mobile, email, address, birth, gender, city, created in small.customers:
        assert is_valid_id_card(id_card, known_regions_only=True)
        assert id_card_birth_date(id_card) == birth
        assert id_card_gender(id_card) == gender
        assert is_valid_chinese_name(name)
        assert is_valid_mobile(mobile)
        assert email is None or is_valid_email(email)
        assert is_valid_address(address)
        assert city in address
        assert isinstance(created, datetime)
        assert created.date() >= birth.replace(year=birth.year + 18, day=min(birth.day, 28))


def test_some_customers_have_no_email(small: BankData) -> None:
    emails = [r[4] for r in small.customers]
    missing = emails.count(None)
    assert 0.02 * len(emails) < missing < 0.06 * len(emails)
    assert small.customers[0][4] == CANARY.email
    present = [e for e in emails if e is not None]
    assert len(set(present)) == len(present)


def test_loaded_bank_names_a_customer_without_email(small: BankData) -> None:
    from sqlbastion.devtools.sample_bank import _loaded

    loaded = _loaded(small, "bank")
    assert loaded.customer_without_email > 1
    assert small.customers[loaded.customer_without_email - 1][4] is None
    assert all(r[4] is not None for r in small.customers[: loaded.customer_without_email - 1])
    rare = small.customers[loaded.customer_with_rare_name - 1][1]
    assert is_valid_chinese_name(rare)
    assert len(rare.encode("utf-8")) > 3 * len(rare)  # a 4-byte character
    assert len(rare.encode("utf-16-le")) > 2 * len(rare)  # a surrogate pair


def test_awkward_values_are_present(small: BankData) -> None:
    memos = [r[8] for r in small.transactions]
    assert any("🎂" in m for m in memos)
    assert any("\\" in m for m in memos)
    assert any("'" in m for m in memos)
    assert any("\n" in m for m in memos)
    rare = [r[1] for r in small.customers if set(r[1]) & set("𠮷𪚥䶮")]
    assert 0 < len(rare) < 0.03 * len(small.customers)


def test_accounts_and_transactions_are_consistent(small: BankData) -> None:
    created = {r[0]: r[9] for r in small.customers}
    opened = {}
    owners = set()
    for aid, cid, card, kind, balance, opened_at, status, branch in small.accounts:
        assert cid in created
        owners.add(cid)
        assert is_valid_bank_card(card)
        assert kind in {"debit", "credit", "savings", "fixed"}
        assert status in {"active", "dormant", "frozen", "closed"}
        assert opened_at >= created[cid].date()
        assert balance.as_tuple().exponent == -2
        assert abs(balance) < 10**16
        assert branch.endswith("支行")
        opened[aid] = opened_at
    assert owners == set(created)  # every customer has an account
    assert len({r[2] for r in small.accounts}) == len(small.accounts)
    for _tid, aid, amount, currency, when, channel, cp_name, cp_card, memo in small.transactions:
        assert aid in opened
        assert when >= datetime.combine(opened[aid], datetime.min.time())
        assert when <= datetime(2025, 10, 31, 23, 59, 59)
        assert amount != 0
        assert amount.as_tuple().exponent == -2
        assert currency in {"CNY", "USD", "HKD", "EUR"}
        assert channel
        assert cp_name
        assert memo
        assert cp_card is None or is_valid_bank_card(cp_card)


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 - 1, 20240602])
def test_invariants_hold_for_other_seeds(seed: int) -> None:
    data = generate(seed=seed, scale=0.03)
    test_customers_are_consistent(data)
    test_accounts_and_transactions_are_consistent(data)
    test_values_fit_the_declared_column_widths(data)
    test_dates_stay_in_range(data)
    assert data.customers[0][:6] == (1, CANARY.name, CANARY.id_card, CANARY.mobile, CANARY.email, CANARY.address)


def test_values_fit_the_declared_column_widths(small: BankData) -> None:
    widths = {
        "customers": {1: 64, 2: 18, 3: 11, 4: 128, 5: 255, 7: 1, 8: 32},
        "accounts": {2: 19, 3: 16, 6: 8, 7: 64},
        "transactions": {3: 3, 5: 16, 6: 64, 7: 19, 8: 128},
    }
    for table, limits in widths.items():
        for row in small.rows(table):
            for i, limit in limits.items():
                assert row[i] is None or len(row[i]) <= limit, (table, COLUMNS[table][i], row[i])


def test_dates_stay_in_range(small: BankData) -> None:
    births = [r[6] for r in small.customers]
    assert min(births) >= date(1950, 1, 1)
    assert max(births) <= date(2006, 12, 31)
    assert max(r[5] for r in small.accounts) <= date(2025, 6, 30)
    assert min(r[4] for r in small.transactions) >= datetime(2024, 1, 1) - timedelta(seconds=0)


def test_cli_needs_servers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _main([])
    assert exc.value.code == 2
    assert "--servers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _main(["--mariadb", "127.0.0.1:1"])
    assert "--user" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _main(["--mariadb", "nohostport"])
    with pytest.raises(SystemExit):
        _main(["--mariadb", "127.0.0.1:1", "--user", "u", "--password-env", "SQLBASTION_SURELY_UNSET_VAR"])
    assert "not set" in capsys.readouterr().err


def test_database_names_are_plain_identifiers(small: BankData) -> None:
    for bad in ("bank; DROP DATABASE mysql", "bank`", 'bank"', "银行", "", "b" * 64):
        with pytest.raises(ValueError):
            load_mariadb(small, host="127.0.0.1", port=1, user="u", password="p", database=bad)
        with pytest.raises(ValueError):
            load_postgres(small, host="127.0.0.1", port=1, user="u", password="p", database=bad)


def test_unreachable_server_is_reported(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    closed = free_port()  # nothing listens there
    info = ServerInfo(
        kind="mariadb",
        host="127.0.0.1",
        port=closed,
        directory="",
        pid=0,
        admin_user="u",
        admin_password="p",
        service_user="",
        service_password="",
        socket="",
    )
    tiny = generate(scale=0.001)
    with pytest.raises(pymysql.err.OperationalError):
        load_servers(mariadb=info, postgres=None, data=tiny)
    with pytest.raises(OSError):
        load_servers(mariadb=None, postgres=replace(info, kind="postgres"), data=tiny)
    monkeypatch.setenv("SQLBASTION_TEST_LOADER_PW", "p")
    argv = ["--mariadb", f"127.0.0.1:{closed}", "--user", "u", "--password-env", "SQLBASTION_TEST_LOADER_PW"]
    assert _main([*argv, "--scale", "0.001"]) == 1
    assert "sample_bank:" in capsys.readouterr().err


# -- independent oracles ------------------------------------------------------------------


def _oracle_id_check(body: str) -> str:
    """GB 11643's formula as the standard states it: W_i = 2^(i-1) mod 11, a_1 = (12 - S mod 11) mod 11."""
    weights = [pow(2, 17 - i, 11) for i in range(17)]
    a1 = (12 - sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11) % 11
    return "X" if a1 == 10 else str(a1)


def _oracle_luhn(number: str) -> bool:
    """ISO/IEC 7812-1 Annex B: from the right, double every second digit and add the digits of the products."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        total += sum(divmod(d * 2, 10)) if i % 2 else d
    return total % 10 == 0


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_id_check_char_matches_the_standards_formula(body: str) -> None:
    assert id_card_check_char(body) == _oracle_id_check(body)


@given(st.text(alphabet="0123456789", min_size=2, max_size=19))
def test_luhn_matches_the_standards_formula(number: str) -> None:
    assert luhn_valid(number) == _oracle_luhn(number)


# -- MySQL literals -------------------------------------------------------------------------


def test_mysql_literals() -> None:
    from decimal import Decimal

    assert mysql_literal(None) == "NULL"
    assert mysql_literal(42) == "42"
    assert mysql_literal(-7) == "-7"
    assert mysql_literal(Decimal("-45.40")) == "-45.40"
    assert mysql_literal(Decimal("1E+3")) == "1000"  # never exponent notation
    assert mysql_literal(date(2024, 2, 29)) == "'2024-02-29'"
    assert mysql_literal(datetime(2025, 1, 2, 3, 4, 5)) == "'2025-01-02 03:04:05'"
    assert mysql_literal("上官婉清") == "'上官婉清'"
    assert mysql_literal("a'b\"c\\d\ne\rf\x00g\x1ah") == "'a\\'b\\\"c\\\\d\\ne\\rf\\0g\\Zh'"
    assert mysql_literal("𠮷野家🎂") == "'𠮷野家🎂'"
    for bad in (True, 1.5, b"x", [1]):
        with pytest.raises(TypeError):
            mysql_literal(bad)
    with pytest.raises(ValueError):
        mysql_literal(Decimal("NaN"))


@given(st.text(max_size=40))
def test_mysql_string_literals_have_no_unescaped_quote_or_backslash(text: str) -> None:
    literal = mysql_literal(text)
    assert literal[0] == literal[-1] == "'"
    body = literal[1:-1]
    i = 0
    while i < len(body):
        if body[i] == "\\":
            assert body[i + 1] in "0nrZ'\"\\"
            i += 2
            continue
        assert body[i] not in "'\"\x00\n\r\x1a"
        i += 1


def test_insert_statements_stay_under_the_limit_and_keep_every_row(small: BankData) -> None:
    from sqlbastion.devtools import sample_bank

    statements = list(sample_bank._insert_statements("transactions", small.transactions))
    assert len(statements) > 1
    assert all(len(s) <= sample_bank._INSERT_STATEMENT_CHARS for s in statements)
    assert all(s.startswith("INSERT INTO `transactions` (id, account_id,") for s in statements)
    rendered = sum(s.count("),(") + 1 for s in statements)
    assert rendered >= len(small.transactions)  # memos may hold "),(" too, never fewer rows
    assert list(sample_bank._insert_statements("customers", [])) == []
