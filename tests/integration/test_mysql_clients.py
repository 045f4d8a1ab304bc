"""pymysql through sqlbastion against the real MariaDB: the basics, commands and blocking."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from tests.integration.mysql_support import PASSWORD, PERSON, Proxy, prepare_test_database, run_proxy

from sqlbastion.devtools.servers import ServerInfo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(mariadb_server: ServerInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prepare_test_database(mariadb_server)
    yield from run_proxy(mariadb_server, tmp_path_factory.mktemp("mysql-proxy"))


def test_select_through_proxy(proxy: Proxy) -> None:
    with proxy.connect(database="proxytest") as conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "one"), (2, "two"), (3, "three"))
        cur.execute("SELECT DATABASE(), CURRENT_USER()")
        db, user = cur.fetchone()
        assert db == "proxytest"
        assert user.startswith(proxy.server.service_user)


def test_wrong_password_and_unknown_user_same_text(proxy: Proxy) -> None:
    before = proxy.backend_connection_count()
    texts = []
    for user, pw in ((PERSON, "wrong"), ("nobody", PASSWORD)):
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect(user=user, password=pw)
        code, text = info.value.args
        assert code == 1045
        texts.append(text.replace(user, "<user>"))
    assert texts[0] == texts[1]
    assert proxy.backend_connection_count() == before
