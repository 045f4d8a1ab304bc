"""Keyed masks are consistent: the same value gives the same token in every session and on both protocols.

The analyst role sees mobile numbers as HMAC pseudonyms and card numbers as
FF1 tokens. A proxy fronts MariaDB and PostgreSQL, both holding the sample bank,
and the tokens read through each must agree, so masked data can still be
joined across sessions and systems, while never equalling the clear value.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest
from tests.integration.masking_support import PASSWORDS, MaskingProxy, run_masking_proxy

from sqlbastion.devtools.sample_bank import LoadedBank
from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration

SQL = (
    "SELECT c.mobile, a.card_no FROM customers c JOIN accounts a ON a.customer_id = c.id "
    "WHERE a.id IN (1, 2, 3) ORDER BY a.id"
)


@pytest.fixture(scope="module")
def proxy(
    sample_bank: LoadedBank,
    mariadb_server: ServerInfo,
    postgres_server: ServerInfo,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MaskingProxy]:
    yield from run_masking_proxy(
        Path(tmp_path_factory.mktemp("masking-both")), postgres=postgres_server, mariadb=mariadb_server
    )


def _postgres(proxy: MaskingProxy, person: str) -> list[tuple[object, ...]]:
    dsn = (
        f"host=127.0.0.1 port={proxy.ports['pg']} user={person} password={PASSWORDS[person]} "
        "dbname=bank sslmode=disable"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(SQL.encode()).fetchall()


def _mysql(proxy: MaskingProxy, person: str) -> list[tuple[object, ...]]:
    conn = pymysql.connect(
        host="127.0.0.1", port=proxy.ports["my"], user=person, password=PASSWORDS[person], database="bank"
    )
    try:
        with conn.cursor() as cur:
            cur.execute(SQL)
            return list(cur.fetchall())
    finally:
        conn.close()


def test_tokens_agree_across_sessions_and_protocols(proxy: MaskingProxy, sample_bank: LoadedBank) -> None:
    clear = _postgres(proxy, "dba")
    assert clear == _mysql(proxy, "dba")
    assert len(clear) == 3
    pg_first, pg_again, my = _postgres(proxy, "analyst"), _postgres(proxy, "analyst"), _mysql(proxy, "analyst")
    assert pg_first == pg_again == my
    for (mobile, card), (token, card_token) in zip(clear, pg_first, strict=True):
        assert isinstance(token, str)
        assert isinstance(card_token, str)
        assert len(token) == 16
        assert token != mobile
        # FF1 keeps the card number a card-number-shaped string of digits
        assert isinstance(card, str)
        assert len(card_token) == len(card)
        assert card_token.isdigit()
        assert card_token != card
    # distinct values stay distinct (the tokens can still be joined and counted)
    assert len({c for _, c in pg_first}) == len({c for _, c in clear})
    assert sample_bank.canary.card_no not in {c for _, c in pg_first}
