"""Classification and per-role treatment, parsed from policy TOML."""

from __future__ import annotations

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import ConfigError
from sqlbastion.masking.policy import (
    Classification,
    MaskingPolicy,
    Treatment,
    column_path,
    merge_masking_policies,
    parse_masking_policy,
)
from sqlbastion.masking.spec import SpecError, parse_spec, spec_from_value
from sqlbastion.policies.model import ColumnRef

POLICY = """
[[persons]]
name = "dev"
roles = ["developer"]

[[roles]]
name = "developer"
duties = ["use"]
grants = [{ actions = ["select"], objects = ["core:bank.*"] }]
masks = { id_card = "id_card", mobile = "mobile", name = "chinese_name", level_5 = "deny", bank_card = "clear" }
lookups = ["core:bank.customers.mobile"]

[[roles]]
name = "analyst"
masks = { mobile = "full", level_4 = { function = "keep", first = 1, last = 1 }, default = "null" }

[[roles]]
name = "dba"
masks = { default = "clear" }

[[roles]]
name = "service"
masks = { mobile = "keep(first=3,last=4)" }

[[roles]]
name = "auditor"
duties = ["audit"]

[[classifications]]
objects = ["core:bank.customers.id_card", "pg:bank.public.customers.id_card"]
type = "id_card"
level = 4

[[classifications]]
objects = ["*:bank.customers.mobile", "pg:bank.*.customers.mobile"]
type = "mobile"
level = 3

[[classifications]]
objects = ["core:bank.customers.name"]
type = "name"
level = 3

[[classifications]]
objects = ["core:bank.{accounts,transactions}.{card_no,counterparty_card}"]
type = "bank_card"
level = 5

[[classifications]]
objects = ["core:bank.transactions.memo"]
type = "free_text"
level = 5

[[classifications]]
objects = ["core:bank.*.*_secret"]
type = "secret"
level = 2
"""


def col(table: str, column: str, *, db: str = "bank", schema: str | None = None) -> ColumnRef:
    return ColumnRef(database=db, schema=schema, table=table, column=column)


@pytest.fixture(scope="module")
def policy() -> MaskingPolicy:
    return parse_masking_policy(tomllib.loads(POLICY), file="policy.toml")


def test_classify_exact_wildcard_and_braces(policy: MaskingPolicy) -> None:
    card = Classification(type="bank_card", level=5)
    assert policy.classify("core", col("customers", "id_card")) == Classification(type="id_card", level=4)
    assert policy.classify("other", col("customers", "mobile")) == Classification(type="mobile", level=3)
    assert policy.classify("core", col("accounts", "card_no")) == card
    assert policy.classify("core", col("transactions", "counterparty_card")) == card
    assert policy.classify("core", col("accounts", "counterparty_card")) == card
    assert policy.classify("core", col("customers", "city")) is None
    assert policy.classify("core", col("x", "api_secret")) == Classification(type="secret", level=2)


def test_mysql_column_spellings_match_the_same_path(policy: MaskingPolicy) -> None:
    a = ColumnRef(database="bank", schema=None, table="customers", column="id_card")
    b = ColumnRef(database=None, schema="bank", table="customers", column="id_card")
    c = ColumnRef(database="bank", schema="bank", table="customers", column="id_card")
    d = ColumnRef(database="BANK", schema="Bank", table="Customers", column="ID_CARD")
    assert column_path(a) == column_path(b) == column_path(c) == column_path(d) == ("bank", "customers", "id_card")
    for ref in (a, b, c, d):
        assert policy.classify("core", ref) is not None
        assert policy.classify("CORE", ref) is not None


def test_mysql_lineage_refs_carry_the_real_database_in_schema(policy: MaskingPolicy) -> None:
    # connected to database "other", reading bank.customers: the table's database is in ``schema``
    ref = ColumnRef(database="other", schema="bank", table="customers", column="id_card")
    assert policy.classify("core", ref) == Classification(type="id_card", level=4)
    assert policy.treatment(("developer",), "core", ref).function == "id_card"


def test_postgres_paths_have_four_parts(policy: MaskingPolicy) -> None:
    pg = ColumnRef(database="bank", schema="public", table="customers", column="id_card")
    assert policy.classify("pg", pg) == Classification(type="id_card", level=4)
    assert policy.classify("pg", ColumnRef(database="bank", schema="other", table="customers", column="mobile"))
    # a MySQL-style three-part pattern does not silently match a PostgreSQL column elsewhere
    assert policy.classify("core", pg) is None


def test_type_rule_wins_over_level_rule(policy: MaskingPolicy) -> None:
    # bank_card is level 5 (deny) for developers, but the type rule says clear
    assert policy.treatment(("developer",), "core", col("accounts", "card_no")).kind == "clear"
    # memo is level 5 with no type rule: deny
    assert policy.treatment(("developer",), "core", col("transactions", "memo")).kind == "deny"


def test_masks_and_lookups(policy: MaskingPolicy) -> None:
    t = policy.treatment(("developer",), "core", col("customers", "mobile"))
    assert t == Treatment(kind="mask", function="mobile", lookup_allowed=True)
    t = policy.treatment(("developer",), "core", col("customers", "id_card"))
    assert t == Treatment(kind="mask", function="id_card", lookup_allowed=False)
    assert policy.treatment(("developer",), "core", col("customers", "name")).function == "chinese_name"


def test_unclassified_is_clear(policy: MaskingPolicy) -> None:
    t = policy.treatment(("developer",), "core", col("customers", "city"))
    assert t.kind == "clear"
    assert t.lookup_allowed


def test_no_rule_means_strongest_mask(policy: MaskingPolicy) -> None:
    for roles in ((), ("auditor",), ("nobody",)):
        t = policy.treatment(roles, "core", col("customers", "id_card"))
        assert t == Treatment(kind="mask", function="full", lookup_allowed=False)
    # developer has no rule for "secret" (type) nor level_2
    assert policy.treatment(("developer",), "core", col("t", "x_secret")).function == "full"


def test_level_and_default_rules(policy: MaskingPolicy) -> None:
    assert policy.treatment(("analyst",), "core", col("customers", "id_card")).function == "keep(first=1,last=1)"
    assert policy.treatment(("analyst",), "core", col("customers", "name")).function == "null"
    assert policy.treatment(("analyst",), "core", col("customers", "mobile")).function == "full"


def test_several_roles_most_permissive(policy: MaskingPolicy) -> None:
    assert policy.treatment(("analyst", "dba"), "core", col("customers", "id_card")).kind == "clear"
    # deny (developer, level 5) vs strongest mask (auditor has no rule) -> the mask
    t = policy.treatment(("developer", "auditor"), "core", col("transactions", "memo"))
    assert t == Treatment(kind="mask", function="full", lookup_allowed=False)
    # mobile: analyst full vs developer mobile -> mobile; lookups united
    t = policy.treatment(("analyst", "developer"), "core", col("customers", "mobile"))
    assert t == Treatment(kind="mask", function="mobile", lookup_allowed=True)
    assert policy.treatment(("developer", "analyst"), "core", col("customers", "mobile")) == t
    # the same disclosure rank breaks the tie on the function name, whatever the order
    a = policy.treatment(("service", "developer"), "core", col("customers", "mobile"))
    b = policy.treatment(("developer", "service"), "core", col("customers", "mobile"))
    assert a == b


def test_restricted(policy: MaskingPolicy) -> None:
    assert not policy.restricted(("dba",))
    assert policy.restricted(("developer",))
    assert policy.restricted(())
    empty = parse_masking_policy({}, file="e.toml")
    assert empty.empty
    assert not empty.restricted(("developer",))
    assert empty.treatment(("x",), "core", col("customers", "id_card")).kind == "clear"


def test_highest_level_then_most_specific() -> None:
    p = parse_masking_policy(
        tomllib.loads(
            """
[[classifications]]
objects = ["*:*.*.mobile"]
type = "mobile"
level = 3
[[classifications]]
objects = ["core:bank.staff.mobile"]
type = "work_phone"
level = 3
[[classifications]]
objects = ["core:bank.*.mobile"]
type = "vip_mobile"
level = 4
[[classifications]]
objects = ["core:hr.staff.mobile"]
type = "work_phone"
level = 2
"""
        ),
        file="p.toml",
    )
    assert p.classify("core", col("staff", "mobile")) == Classification(type="vip_mobile", level=4)
    assert p.classify("x", col("staff", "mobile")) == Classification(type="mobile", level=3)
    assert p.classify("core", col("staff", "mobile", db="hr")) == Classification(type="mobile", level=3)


def test_policy_engine_keys_are_ignored() -> None:
    data = tomllib.loads(POLICY)
    data["rules"] = [{"id": "X", "match": {"statement_types": ["delete"]}}]
    p = parse_masking_policy(data, file="p.toml")
    assert "auditor" not in p.role_names
    assert set(p.role_names) == {"developer", "analyst", "dba", "service"}


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ('[[classifications]]\nobjects = ["bank.customers.x"]\ntype = "x"\nlevel = 1', "classifications[0].objects[0]"),
        ('[[classifications]]\nobjects = ["c:a.b"]\ntype = "x"\nlevel = 1', "classifications[0].objects[0]"),
        ('[[classifications]]\nobjects = ["c:a..b"]\ntype = "x"\nlevel = 1', "classifications[0].objects[0]"),
        ('[[classifications]]\nobjects = []\ntype = "x"\nlevel = 1', "classifications[0].objects"),
        ('[[classifications]]\nobjects = ["c:a.b.c"]\ntype = "X Y"\nlevel = 1', "classifications[0].type"),
        ('[[classifications]]\nobjects = ["c:a.b.c"]\ntype = "x"\nlevel = 6', "classifications[0].level"),
        ('[[classifications]]\nobjects = ["c:a.b.c"]\ntype = "x"\nlevel = true', "classifications[0].level"),
        ('[[classifications]]\nobjects = ["c:a.b.c"]\ntype = "x"\nlevel = 1\nlevl = 2', "classifications[0].levl"),
        ("classifications = 3", "classifications"),
        (
            '[[classifications]]\nobjects = ["c:a.b.' + "{x,y}" * 12 + '"]\ntype = "x"\nlevel = 1',
            "classifications[0].objects[0]",
        ),
        (
            '[[classifications]]\nobjects = ["c:{a,b,c,d,e,f}.{a,b,c,d,e,f}.{a,b,c,d,e,f}.{a,b,c,d,e,f}"]\n'
            'type = "x"\nlevel = 1',
            "classifications[0].objects[0]",
        ),
        ('[[roles]]\nname = "r"\nmasks = { mobile = "mobil" }', "roles[0].masks.mobile"),
        ('[[roles]]\nname = "r"\nmasks = { mobile = "keep(first=x)" }', "roles[0].masks.mobile"),
        ('[[roles]]\nname = "r"\nmasks = { mobile = "keep(middle=1)" }', "roles[0].masks.mobile"),
        ('[[roles]]\nname = "r"\nmasks = { mobile = { first = 1 } }', "roles[0].masks.mobile"),
        ('[[roles]]\nname = "r"\nmasks = { mobile = 3 }', "roles[0].masks.mobile"),
        ('[[roles]]\nname = "r"\nmasks = { level_9 = "full" }', "roles[0].masks.level_9"),
        ('[[roles]]\nname = "r"\nmasks = { "Bad Key" = "full" }', "roles[0].masks.Bad Key"),
        ('[[roles]]\nname = "r"\nmasks = { x = "pseudonym" }', "roles[0].masks.x"),
        ('[[roles]]\nname = "r"\nmasks = { x = "band(bounds=[3;1])" }', "roles[0].masks.x"),
        ('[[roles]]\nname = "r"\nmasks = "full"', "roles[0].masks"),
        ('[[roles]]\nname = "r"\nlookups = "c:a.b.c"', "roles[0].lookups"),
        ('[[roles]]\nname = "r"\nlookups = ["a.b.c"]', "roles[0].lookups[0]"),
        ("[[roles]]\nmasks = {}", "roles[0].name"),
        ('[[roles]]\nname = "r"\nmasks = {}\n[[roles]]\nname = "r"\nmasks = {}', "roles[1].name"),
    ],
)
def test_errors_name_file_and_key(doc: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_masking_policy(tomllib.loads(doc), file="bad.toml")
    assert err.value.file == "bad.toml"
    assert err.value.key == key
    assert err.value.problem


def test_merge_unites_files() -> None:
    a = parse_masking_policy(tomllib.loads(POLICY), file="a.toml")
    b = parse_masking_policy(
        tomllib.loads(
            """
[[roles]]
name = "developer"
masks = { email = "email" }
lookups = ["core:bank.customers.email"]
[[classifications]]
objects = ["core:bank.customers.email"]
type = "email"
level = 3
"""
        ),
        file="b.toml",
    )
    m = merge_masking_policies([a, b])
    t = m.treatment(("developer",), "core", col("customers", "email"))
    assert t == Treatment(kind="mask", function="email", lookup_allowed=True)
    assert m.treatment(("developer",), "core", col("customers", "mobile")).lookup_allowed
    assert m.classify("core", col("customers", "id_card")) is not None


def test_merge_conflict_is_an_error() -> None:
    a = parse_masking_policy({"roles": [{"name": "r", "masks": {"mobile": "full"}}]}, file="a.toml")
    b = parse_masking_policy({"roles": [{"name": "r", "masks": {"mobile": "mobile"}}]}, file="b.toml")
    with pytest.raises(ConfigError) as err:
        merge_masking_policies([a, b])
    assert err.value.file == "b.toml"
    assert "a.toml" in err.value.problem
    same = parse_masking_policy({"roles": [{"name": "r", "masks": {"mobile": "full"}}]}, file="c.toml")
    merge_masking_policies([a, same])


def test_key_refs() -> None:
    p = parse_masking_policy(
        {"roles": [{"name": "r", "masks": {"a": "pseudonym(key=pii)", "b": {"function": "fpe", "key": "cards"}}}]},
        file="k.toml",
    )
    assert p.key_refs() == {"pii", "cards"}


def test_spec_spellings_are_canonical() -> None:
    assert parse_spec("keep(first=3, last=4)").canonical == "keep(first=3,last=4)"
    assert spec_from_value({"function": "keep", "last": 4, "first": 3}).canonical == "keep(first=3,last=4)"
    assert parse_spec("id_card").canonical == "id_card"
    assert parse_spec("id_card(first=6,last=4)").canonical == "id_card"
    assert parse_spec("date(precision=month)").canonical == "date(precision=month)"
    assert parse_spec("band(bounds=[0, 10, 100])").canonical == "band(bounds=[0;10;100])"
    assert parse_spec(parse_spec("band(bounds=[0, 10, 100])").canonical).canonical == "band(bounds=[0;10;100])"
    assert spec_from_value({"function": "band", "bounds": [0, 1.5]}).param("bounds") == (0.0, 1.5)
    assert parse_spec("pseudonym(key=pii,algorithm=hmac-sm3)").key_ref == "pii"
    with pytest.raises(SpecError):
        parse_spec("band(bounds=[0;1],width=5)")
    with pytest.raises(SpecError):
        parse_spec("keep(first=999)")
    with pytest.raises(SpecError):
        parse_spec("x" * 600)


_KEYS = [
    "classifications",
    "roles",
    "objects",
    "type",
    "level",
    "name",
    "masks",
    "lookups",
    "function",
    "first",
    "mobile",
    "level_4",
    "default",
    "x",
]
_SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(-3, 9),
    st.booleans(),
    st.sampled_from(["clear", "deny", "full", "mobile", "keep(first=1)", "c:a.b.c", "c:a.b.c.d", "level_3", "*:*.*.*"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=4))
def test_any_document_parses_or_raises_a_config_error(doc: dict[str, object]) -> None:
    failed: ConfigError | None = None
    try:
        policy = parse_masking_policy(doc, file="fuzz.toml")
    except ConfigError as exc:
        failed = exc
    if failed is not None:
        assert failed.file == "fuzz.toml"
        return
    ref = ColumnRef(database="a", schema="b", table="c", column="d")
    t = policy.treatment(("name", "x"), "c", ref)
    assert t.kind in ("clear", "mask", "deny")
