"""Statement text in audit events: literals and passwords never survive, fail closed."""

from __future__ import annotations

import pytest

from sqlbastion.audit.redact import redact_literals, statement_text

PASSWORD_STATEMENTS = [
    ("mysql", "CREATE USER 'bob'@'%' IDENTIFIED BY 'S3cr3t-pw'"),
    ("mysql", 'ALTER USER bob IDENTIFIED WITH mysql_native_password BY "S3cr3t-pw"'),
    ("mysql", "SET PASSWORD FOR bob = PASSWORD('S3cr3t-pw')"),
    ("mysql", "GRANT ALL ON *.* TO bob IDENTIFIED BY 'S3cr3t-pw'"),
    ("postgres", "CREATE ROLE bob LOGIN PASSWORD 'S3cr3t-pw'"),
    ("postgres", "ALTER ROLE bob WITH ENCRYPTED PASSWORD 'S3cr3t-pw' VALID UNTIL '2030-01-01'"),
    ("postgres", "ALTER USER bob PASSWORD $$S3cr3t-pw$$"),
    ("postgres", "ALTER USER bob PASSWORD $tag$S3cr3t-pw$tag$"),
    ("postgres", "ALTER USER bob PASSWORD E'S3cr3t-pw'"),
    ("postgres", "CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'x', password 'S3cr3t-pw')"),
]


@pytest.mark.parametrize(("dialect", "sql"), PASSWORD_STATEMENTS)
@pytest.mark.parametrize("raw_allowed", [False, True])
def test_passwords_never_survive_even_with_raw_text_enabled(dialect: str, sql: str, raw_allowed: bool) -> None:
    result = statement_text(sql, dialect=dialect, raw_allowed=raw_allowed, sensitive=False)
    assert result.mode in ("redacted", "withheld")
    assert "S3cr3t" not in (result.text or "")


@pytest.mark.parametrize(
    ("dialect", "sql", "secret_parts"),
    [
        ("mysql", "SELECT * FROM customers WHERE mobile = '13800138000'", ["13800138000"]),
        ("mysql", 'SELECT * FROM c WHERE id_card LIKE "1101%" AND id = 42', ["1101", "42"]),
        ("mysql", "SELECT x'4142', b'0101', N'名字', 0x4142, 1.5e3", ["4142", "0101", "名字", "1.5e3"]),
        ("mysql", "SELECT /*!50000 '13800138000' */ 1", ["13800138000"]),
        ("mysql", "SELECT /*M!100000 '13800138000' */ 1", ["13800138000"]),
        ("mysql", "SELECT 1 /* 13800138000 */ -- 13900139000\n", ["13800138000", "13900139000"]),
        ("mysql", "SELECT 1 # 13800138000", ["13800138000"]),
        ("mysql", "SELECT _utf8mb4'13800138000' COLLATE utf8mb4_bin", ["13800138000"]),
        (
            "postgres",
            "SELECT E'\\x31\\x33' || U&'\\0031' || $$138$$ || B'101' || X'1F'",
            ["x31", "0031", "138", "101", "1F"],
        ),
        ("postgres", "SELECT * FROM t WHERE a = '13800138000'::text AND b > 99", ["13800138000", "99"]),
        ("postgres", "SELECT 1 /* nested /* 13800138000 */ */", ["13800138000"]),
    ],
)
def test_literals_are_redacted(dialect: str, sql: str, secret_parts: list[str]) -> None:
    text = redact_literals(sql, dialect)
    for part in secret_parts:
        assert part not in text, text
    assert "?" in text or "SELECT 1" in text


def test_structure_is_kept() -> None:
    text = redact_literals("SELECT name, `id_card` FROM bank.customers WHERE id = 7 LIMIT 10", "mysql")
    assert text == "SELECT name, `id_card` FROM bank.customers WHERE id = ? LIMIT ?"
    text = redact_literals('SELECT "Name" FROM public.t WHERE a = $1 AND b = $2', "postgres")
    assert text == 'SELECT "Name" FROM public.t WHERE a = $1 AND b = $2'


def test_raw_text_only_when_opted_in_and_not_sensitive() -> None:
    sql = "SELECT * FROM accounts WHERE balance > 1000"
    assert statement_text(sql, dialect="mysql", raw_allowed=True, sensitive=False).text == sql
    assert statement_text(sql, dialect="mysql", raw_allowed=False, sensitive=False).mode == "redacted"
    sensitive = statement_text(
        "SELECT mobile FROM customers WHERE mobile = '13800138000'", dialect="mysql", raw_allowed=True, sensitive=True
    )
    assert sensitive.mode == "redacted"
    assert "13800138000" not in (sensitive.text or "")


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("mysql", "SELECT 'unterminated"),
        ("mysql", "SELECT /*! 'unterminated executable comment"),
        ("postgres", "SELECT $$never closed"),
        ("postgres", "SELECT 'a"),
    ],
)
def test_untokenizable_text_is_withheld_entirely(dialect: str, sql: str) -> None:
    result = statement_text(sql, dialect=dialect, raw_allowed=False, sensitive=False)
    assert result.mode == "withheld"
    assert result.text is None


def test_backend_secrets_never_appear_even_as_identifiers() -> None:
    secret = "svc-Pa55word"
    raw = statement_text(f"SELECT '{secret}'", dialect="mysql", raw_allowed=True, sensitive=False, secrets=[secret])
    assert secret not in (raw.text or "")
    ident = statement_text(
        "SELECT * FROM `svc-Pa55word`", dialect="mysql", raw_allowed=True, sensitive=False, secrets=[secret]
    )
    assert ident.text is None
    assert ident.mode == "withheld"


def test_huge_statements_are_cut_and_oversize_ones_withheld() -> None:
    long_sql = "SELECT " + ", ".join(f"c{i}" for i in range(5000))
    result = statement_text(long_sql, dialect="mysql", raw_allowed=False, sensitive=False)
    assert result.text is not None
    assert len(result.text) < 16500
    assert result.text.endswith("more characters]")
    oversize = statement_text("SELECT '" + "x" * (2 << 20) + "'", dialect="mysql", raw_allowed=True, sensitive=False)
    assert oversize.mode == "withheld"


@pytest.mark.parametrize(
    ("dialect", "sql", "fragment"),
    [
        ("postgres", "SELECT * FROM t WHERE mobile = 138_0013_8000", "0013"),
        ("postgres", "SELECT 0o1777, 0x1F", "1777"),
        ("postgres", 'SELECT "Col" FROM t WHERE n = 1_000_555', "555"),
    ],
)
def test_numbers_the_tokenizer_splits_are_redacted_whole(dialect: str, sql: str, fragment: str) -> None:
    assert fragment not in redact_literals(sql, dialect)
