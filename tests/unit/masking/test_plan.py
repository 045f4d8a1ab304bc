"""Mask plans from lineage, protocol metadata and the policy; the stricter one wins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlbastion.config import ConfigError, loads
from sqlbastion.masking.functions import MissingKey
from sqlbastion.masking.plan import MaskingPlanner, load_masking_policy, planner_from_settings
from sqlbastion.masking.policy import MaskingPolicy, parse_masking_policy
from sqlbastion.observability.metrics import METRICS
from sqlbastion.policies.model import Action, ColumnRef, Decision, OutputColumn, StatementContext
from sqlbastion.proxy.session import ResultColumn

POLICY = """
[[roles]]
name = "developer"
masks = { mobile = "mobile", id_card = "id_card", level_5 = "deny", amount = "band", email = "pseudonym(key=pii)" }

[[roles]]
name = "nulls"
masks = { mobile = "null" }

[[roles]]
name = "dba"
masks = { default = "clear" }

[[classifications]]
objects = ["core:bank.customers.mobile", "pg:bank.public.customers.mobile"]
type = "mobile"
level = 3

[[classifications]]
objects = ["core:bank.customers.id_card"]
type = "id_card"
level = 4

[[classifications]]
objects = ["core:bank.customers.email"]
type = "email"
level = 3

[[classifications]]
objects = ["core:bank.accounts.balance"]
type = "amount"
level = 3

[[classifications]]
objects = ["core:bank.transactions.memo"]
type = "memo"
level = 5
"""

KEYS = {"pii": b"0123456789abcdef0123456789abcdef"}


def ref(table: str, column: str) -> ColumnRef:
    return ColumnRef(database="bank", schema="bank", table=table, column=column)


MOBILE, IDC, CITY, MEMO = (
    ref("customers", "mobile"),
    ref("customers", "id_card"),
    ref("customers", "city"),
    ref("transactions", "memo"),
)


@pytest.fixture(scope="module")
def policy() -> MaskingPolicy:
    return parse_masking_policy(tomllib.loads(POLICY), file="p.toml")


@pytest.fixture(scope="module")
def planner(policy: MaskingPolicy) -> MaskingPlanner:
    return MaskingPlanner(policy, keys=KEYS)


def ctx(*roles: str, dialect: str = "mysql", backend: str = "core") -> StatementContext:
    return StatementContext(person="p", roles=roles, backend=backend, dialect=dialect, database="bank")  # type: ignore[arg-type]  # dialect is a Literal


def decision(
    *sets: tuple[OutputColumn, ...], stypes: tuple[str, ...] = ("select",), sensitive: tuple[ColumnRef, ...] = ()
) -> Decision:
    return Decision(action=Action.ALLOW, output_columns=sets, statement_types=stypes, sensitive_columns=sensitive)


def oc(
    name: str, *sources: ColumnRef, direct: bool = True, opaque: bool = False, whole: tuple[ColumnRef, ...] = ()
) -> OutputColumn:
    return OutputColumn(name=name, sources=frozenset(sources), direct=direct, opaque=opaque, whole_row_of=whole)


def rc(
    name: str,
    table: str | None = None,
    column: str | None = None,
    type_name: str = "var_string",
    schema: str | None = "bank",
) -> ResultColumn:
    return ResultColumn(name=name, schema=schema if table else None, table=table, column=column, type_name=type_name)


def test_plain_columns_get_their_function(planner: MaskingPlanner) -> None:
    d = decision((oc("mobile", MOBILE), oc("city", CITY), oc("id_card", IDC)))
    cols = [rc("mobile", "customers", "mobile"), rc("city", "customers", "city"), rc("id_card", "customers", "id_card")]
    plan = planner.plan(d, ctx("developer"), cols)
    assert not plan.empty
    assert plan.refuse is None
    assert plan.columns[1] is None
    m0, m2 = plan.columns[0], plan.columns[2]
    assert m0 is not None
    assert m2 is not None
    assert m0(b"13812341234") == b"138****1234"
    assert m0(None) is None
    assert m2(b"11010119900307123X") == b"110101********123X"
    assert plan.functions == ("mobile", None, "id_card")


def test_clear_roles_and_empty_policy_take_the_fast_path(planner: MaskingPlanner) -> None:
    d = decision((oc("mobile", MOBILE),))
    assert planner.plan(d, ctx("dba"), [rc("mobile", "customers", "mobile")]).empty
    empty = MaskingPlanner(parse_masking_policy({}, file="e.toml"))
    assert empty.plan(d, ctx("developer"), [rc("mobile", "customers", "mobile")]).empty
    assert planner.plan(decision((oc("city", CITY),)), ctx("developer"), [rc("city", "customers", "city")]).empty


def test_expressions_over_masked_columns_are_fully_masked(planner: MaskingPlanner) -> None:
    d = decision((oc("x", MOBILE, direct=False), oc("y", MOBILE, CITY, direct=False), oc("z", CITY, direct=False)))
    plan = planner.plan(d, ctx("developer"), [rc("x"), rc("y"), rc("z")])
    assert plan.columns[0] is not None
    assert plan.columns[0](b"31234123831") == b"****"
    assert plan.columns[1] is not None
    assert plan.columns[1](b"138...") == b"****"
    assert plan.columns[2] is None
    assert plan.functions[0] == "full"
    # a role whose function is NULL keeps NULL for expressions (the stricter of the two)
    plan = planner.plan(decision((oc("x", MOBILE, direct=False),)), ctx("nulls"), [rc("x")])
    assert plan.columns[0] is not None
    assert plan.columns[0](b"x") is None


def test_opaque_and_whole_row_values_are_fully_masked(planner: MaskingPlanner) -> None:
    d = decision((oc("o", opaque=True), oc("row", whole=(CITY, MOBILE), direct=False), oc("row2", whole=(CITY,))))
    plan = planner.plan(
        d, ctx("developer", dialect="postgres", backend="core"), [rc("o"), rc("row", type_name="text"), rc("row2")]
    )
    assert plan.functions == ("full", "full", None)


def test_deny_refuses_the_result(planner: MaskingPlanner) -> None:
    plan = planner.plan(decision((oc("memo", MEMO),)), ctx("developer"), [rc("memo", "transactions", "memo")])
    assert plan.refuse is not None
    assert "column 1 (memo)" in plan.refuse
    # deny through an expression too
    plan = planner.plan(decision((oc("m", MEMO, direct=False),)), ctx("developer"), [rc("m")])
    assert plan.refuse is not None


def test_metadata_is_stricter_than_a_wrong_lineage(planner: MaskingPlanner) -> None:
    # lineage claims the column is city; the server says it is customers.mobile
    plan = planner.plan(decision((oc("city", CITY),)), ctx("developer"), [rc("city", "customers", "mobile")])
    assert plan.functions == ("mobile",)
    # PostgreSQL metadata: schema from the RowDescription, database from the session
    plan = planner.plan(
        decision((oc("m", CITY),)),
        ctx("developer", dialect="postgres", backend="pg"),
        [rc("m", "customers", "mobile", type_name="text", schema="public")],
    )
    assert plan.functions == ("mobile",)


def test_column_count_mismatch_refuses(planner: MaskingPlanner) -> None:
    d = decision((oc("mobile", MOBILE),))
    plan = planner.plan(d, ctx("developer"), [rc("a"), rc("b")])
    assert plan.refuse is not None
    assert "2 columns" in plan.refuse


def test_several_statements_combine_by_column_count(planner: MaskingPlanner) -> None:
    d = decision((oc("a", CITY), oc("b", CITY)), (oc("m", MOBILE), oc("c", CITY)), (oc("x", CITY),))
    plan = planner.plan(d, ctx("developer"), [rc("a"), rc("b")])
    assert plan.functions == ("mobile", None)
    assert planner.plan(d, ctx("developer"), [rc("x")]).empty


def test_results_without_lineage(planner: MaskingPlanner) -> None:
    # touched sensitive columns and no lineage: refuse
    d = decision(sensitive=(MOBILE,))
    assert planner.plan(d, ctx("developer"), [rc("a")]).refuse is not None
    # metadata statements: by metadata only
    d = decision(stypes=("show",))
    assert planner.plan(d, ctx("developer"), [rc("Tables_in_bank")]).empty
    # a FETCH from a cursor: named columns by metadata, the rest fully masked
    d = decision(stypes=("fetch",))
    plan = planner.plan(
        d, ctx("developer"), [rc("mobile", "customers", "mobile"), rc("city", "customers", "city"), rc("expr")]
    )
    assert plan.functions == ("mobile", None, "full")


def test_numbers_and_keyed_functions_in_plans(planner: MaskingPlanner) -> None:
    bal = ref("accounts", "balance")
    email = ref("customers", "email")
    d = decision((oc("balance", bal), oc("email", email)))
    plan = planner.plan(
        d,
        ctx("developer"),
        [rc("balance", "accounts", "balance", type_name="newdecimal"), rc("email", "customers", "email")],
    )
    b, e = plan.columns
    assert b is not None
    assert e is not None
    assert b(b"12345.67") == b"10000.00"
    token = e(b"zhang.san@example.com")
    assert token is not None
    assert token == e(b"zhang.san@example.com")
    assert b"zhang" not in token


def test_missing_key_fails_at_construction(policy: MaskingPolicy) -> None:
    with pytest.raises(MissingKey):
        MaskingPlanner(policy, keys={})
    planner = MaskingPlanner(policy, keys=KEYS)
    with pytest.raises(MissingKey):
        planner.replace_policy(
            parse_masking_policy({"roles": [{"name": "r", "masks": {"x": "fpe(key=nope)"}}]}, file="x")
        )
    assert planner.policy is policy


def test_masked_values_are_counted(planner: MaskingPlanner) -> None:
    child = METRICS.masked_values.labels("core", "mobile")
    planner.flush_metrics()
    before = child._value.get()
    plan = planner.plan(decision((oc("mobile", MOBILE),)), ctx("developer"), [rc("mobile", "customers", "mobile")])
    m = plan.columns[0]
    assert m is not None
    for _ in range(2500):
        m(b"13812341234")
    m(None)  # NULL is not a masked value
    assert 2500 - 256 < child._value.get() - before <= 2500  # added in batches
    planner.flush_metrics()
    assert child._value.get() - before == 2500


def test_plans_are_cached_and_reset_by_a_new_policy(planner: MaskingPlanner, policy: MaskingPolicy) -> None:
    d = decision((oc("mobile", MOBILE), oc("city", CITY)))
    cols = [rc("mobile", "customers", "mobile"), rc("city", "customers", "city")]
    first = planner.plan(d, ctx("developer"), cols)
    assert planner.plan(d, ctx("developer"), cols) is first
    assert planner.plan(d, ctx("developer", backend="other"), cols) is not first
    other = MaskingPlanner(policy, keys=KEYS)
    other.plan(d, ctx("developer"), cols)
    other.replace_policy(
        parse_masking_policy({"roles": [{"name": "developer", "masks": {"mobile": "full"}}]}, file="r")
    )
    assert other.plan(d, ctx("developer"), cols).empty  # the new policy classifies nothing


def test_planner_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    monkeypatch.setenv("SQLBASTION_TEST_PII_KEY", "0123456789abcdef-long-enough")
    text = (
        '[policy]\nfiles = ["policy.toml"]\n[masking.keys]\npii = "env:SQLBASTION_TEST_PII_KEY"\n'
        'unused = "env:SQLBASTION_TEST_UNSET_KEY"\n'
    )
    settings = loads(text, source=str(tmp_path / "sqlbastion.toml"))
    planner = planner_from_settings(settings)
    assert not load_masking_policy(settings).empty
    plan = planner.plan(decision((oc("mobile", MOBILE),)), ctx("developer"), [rc("mobile", "customers", "mobile")])
    assert plan.functions == ("mobile",)
    monkeypatch.setenv("SQLBASTION_TEST_PII_KEY", "short")
    with pytest.raises(ConfigError, match="16 bytes"):
        planner_from_settings(settings)
    monkeypatch.delenv("SQLBASTION_TEST_PII_KEY")
    with pytest.raises(ConfigError) as err:
        planner_from_settings(settings)
    assert err.value.key == "masking.keys.pii"
    bad = loads('[policy]\nfiles = ["policy.toml"]\n', source=str(tmp_path / "sqlbastion.toml"))
    with pytest.raises(ConfigError, match="pii"):
        planner_from_settings(bad)
    (tmp_path / "broken.toml").write_text("[[roles]\n", encoding="utf-8")
    broken = loads('[policy]\nfiles = ["broken.toml"]\n', source=str(tmp_path / "sqlbastion.toml"))
    with pytest.raises(ConfigError, match="TOML"):
        load_masking_policy(broken)


SOURCES = [MOBILE, IDC, CITY, ref("accounts", "balance"), ref("customers", "email")]
META = [None, ("customers", "mobile"), ("customers", "id_card"), ("customers", "city"), ("transactions", "memo")]


@st.composite
def output_columns(draw: st.DrawFn) -> OutputColumn:
    sources = draw(st.sets(st.sampled_from(SOURCES), max_size=3))
    whole = tuple(draw(st.lists(st.sampled_from(SOURCES), max_size=2)))
    return OutputColumn(
        name="c", sources=frozenset(sources), direct=draw(st.booleans()), opaque=draw(st.booleans()), whole_row_of=whole
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(output_columns(), st.sampled_from(META)), min_size=1, max_size=4))
def test_plan_is_never_weaker_than_lineage_or_metadata(cols: list[tuple[OutputColumn, tuple[str, str] | None]]) -> None:
    planner = MaskingPlanner(parse_masking_policy(tomllib.loads(POLICY), file="p.toml"), keys=KEYS)
    policy = planner.policy
    roles = ("developer",)
    d = decision(tuple(o for o, _ in cols))
    rcs = [rc(f"c{i}", *(m if m else (None, None))) for i, (_, m) in enumerate(cols)]
    plan = planner.plan(d, ctx(*roles), rcs)
    per_column = []
    for o, m in cols:
        lineage = {policy.treatment(roles, "core", s).kind for s in [*o.sources, *o.whole_row_of]}
        kinds = set(lineage)
        if m is not None:
            kinds.add(policy.treatment(roles, "core", ref(*m)).kind)
        per_column.append((lineage, kinds))
    if any("deny" in kinds for _, kinds in per_column):
        assert plan.refuse is not None
        return
    assert plan.refuse is None
    for i, ((o, _), (lineage, kinds)) in enumerate(zip(cols, per_column, strict=True)):
        masked = "mask" in kinds or o.opaque
        assert (bool(plan.columns) and plan.columns[i] is not None) == masked
        if ("mask" in lineage and (not o.direct or o.whole_row_of)) or o.opaque:
            # an expression, opaque or whole-row value over a masked column is fully masked
            assert plan.functions[i] in ("full", "null")


def test_a_reloaded_policy_may_use_a_key_first_needed_then(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlbastion.config import SecretRef

    start = parse_masking_policy({"roles": [{"name": "r", "masks": {"x": "full"}}]}, file="a")
    planner = MaskingPlanner(start, key_refs={"late": SecretRef("env:SQLBASTION_TEST_LATE_KEY")})
    later = parse_masking_policy({"roles": [{"name": "r", "masks": {"x": "pseudonym(key=late)"}}]}, file="b")
    monkeypatch.delenv("SQLBASTION_TEST_LATE_KEY", raising=False)
    with pytest.raises(MissingKey, match="late"):
        planner.replace_policy(later)
    assert planner.policy is start
    monkeypatch.setenv("SQLBASTION_TEST_LATE_KEY", "a-key-that-is-long-enough")
    planner.replace_policy(later)
    assert planner.policy is later


def test_empty_lineage_tuples_mean_no_lineage(planner: MaskingPlanner) -> None:
    show = Decision(action=Action.ALLOW, output_columns=((),), statement_types=("show",))
    assert planner.plan(show, ctx("developer"), [rc("Tables_in_bank")]).empty
    assert planner.plan(show, ctx("developer"), [rc("mobile", "customers", "mobile")]).functions == ("mobile",)
    unknown = Decision(action=Action.ALLOW, output_columns=((),), statement_types=("cursor",))
    assert planner.plan(unknown, ctx("developer"), [rc("x")]).functions == ("full",)
    explain = Decision(
        action=Action.ALLOW, output_columns=((),), statement_types=("explain",), sensitive_columns=(MOBILE,)
    )
    assert planner.plan(explain, ctx("developer"), [rc("QUERY PLAN")]).empty
    touched = Decision(
        action=Action.ALLOW, output_columns=((),), statement_types=("cursor",), sensitive_columns=(MOBILE,)
    )
    assert planner.plan(touched, ctx("developer"), [rc("x")]).refuse is not None
