"""COM_CHANGE_USER: a person change on an open connection, authenticated by sqlbastion.

page_protocol_com_change_user. The command is never relayed: the backend
connection stays logged in as the service account, and is reset so nothing of
the previous person's session (variables, temporary tables, prepared
statements, an open transaction) survives into the next person's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from sqlbastion.proxy.mysql.constants import Capability, Command, ErrorCode
from sqlbastion.proxy.mysql.errors import BackendAuthError, MalformedPacket
from sqlbastion.proxy.mysql.state import SETUP_SQL, quote_ident
from sqlbastion.proxy.mysql.wire import PayloadReader
from sqlbastion.proxy.session import Session, StatementOutcome, auth_failed

if TYPE_CHECKING:
    from sqlbastion.proxy.mysql.commands import CommandLoop

__all__ = ["change_user"]

_SECURE_CONNECTION = int(Capability.SECURE_CONNECTION)
ER_BAD_DB_ERROR = 1049


async def change_user(loop: CommandLoop, payload: bytes) -> None:
    """COM_CHANGE_USER: re-authenticate a person through sqlbastion, never relayed.

    On success the backend connection is reset (COM_RESET_CONNECTION: variables,
    temporary tables, prepared statements and transactions of the previous
    person are gone), the old session is closed and a new one opened. Any
    failure answers 1045 and ends the connection, as a failed login would.
    """
    hs = loop.handshake
    if hs is None:
        loop.send_error(ErrorCode.ER_NOT_SUPPORTED_YET, "sqlbastion: COM_CHANGE_USER is not available here")
        return
    r = PayloadReader(payload, 1)
    user = r.nul_bytes("user")
    if len(user) > 1024:
        raise MalformedPacket("user name too long")
    if loop.client_caps & _SECURE_CONNECTION:
        r.fixed(r.int1("auth length"), "auth response")
    else:
        r.nul_bytes("auth response")
    database = r.nul_bytes("database").decode("utf-8", "replace") if not r.at_end() else ""
    old = loop.session
    runtime = old.runtime
    backend = old.backend

    def fail(reason: str) -> None:
        auth_failed(
            runtime,
            protocol="mysql",
            backend=backend.name,
            person=hs.person,
            client_address=old.client.address,
            reason=reason,
        )
        loop.end("change_user_failed")

    loop.client.write(hs.change_user(user).data)
    try:
        async with asyncio.timeout(loop.handshake_timeout_s):
            while True:
                step = hs.receive_packet(await loop.client.read_packet())
                if step.action == "refused":
                    fail(step.reason)
                    loop.client.write(step.data)
                    return
                if step.data:
                    loop.client.write(step.data)
                if step.action == "authenticated":
                    break
    except TimeoutError:
        fail("timeout")
        return
    refusal = runtime.engine.admit(hs.person, old.client.address, backend.name)
    if refusal is not None:
        fail(refusal)
        loop.client.write(hs.access_denied())
        return
    new = Session(runtime=runtime, backend=backend, person=hs.person, client=old.client)
    if database:
        verdict = new.authorize(f"USE {quote_ident(database)}")
        if not verdict.allowed:
            new.finish(verdict, StatementOutcome())
            loop.client.write(hs.error(ErrorCode.ER_SPECIFIC_ACCESS_DENIED_ERROR, verdict.message, "42000"))
            loop.end("change_user_refused")
            return
    try:
        await loop.backend_command(bytes((Command.RESET_CONNECTION,)))
        if database:
            await loop.backend_command(bytes((Command.INIT_DB,)) + database.encode("utf-8"))
    except BackendAuthError as exc:
        loop.client.write(hs.error(ER_BAD_DB_ERROR, exc.message[:200], "42000"))
        loop.end("change_user_failed")
        return
    old.closed("change_user")
    loop.replace_session(new)
    await loop.internal(SETUP_SQL)
    await loop.refresh_state()
    loop.registry.register(
        person=new.person, proxy_id=loop.proxy_id, backend=backend.name, backend_id=loop.backend.connection_id
    )
    new.opened()
    loop.client.write(hs.ok())
