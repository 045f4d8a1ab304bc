"""Run the proxy in a background thread with its own event loop, for tests and benchmarks.

Synchronous clients (pymysql, psycopg, the CLI tools) block whatever thread they
run in, so the proxy gets a thread of its own::

    with ProxyThread(settings) as proxy:
        conn = pymysql.connect(host="127.0.0.1", port=proxy.port("core"), ...)
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import uvloop

from sqlbastion.config import Settings
from sqlbastion.proxy.server import serve
from sqlbastion.proxy.services import ProxyServices

__all__ = ["ProxyThread"]


class ProxyThread:
    """The proxy serving ``settings`` on a background thread until ``stop()``."""

    def __init__(self, settings: Settings, *, services: ProxyServices | None = None, startup_timeout: float = 30.0):
        self.settings = settings
        self.services = services
        self.startup_timeout = startup_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sqlbastion-proxy", daemon=True)

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await serve(self.settings, stop=self._stop, services=self.services, ready=self._ready.set)
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                raise

        try:
            loop.run_until_complete(main())
        except BaseException:  # noqa: S110  # the error is kept in self._error and re-raised by start()
            pass
        finally:
            loop.close()

    def start(self) -> ProxyThread:
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            raise TimeoutError("the proxy did not start listening in time")
        if self._error is not None:
            raise RuntimeError(f"the proxy failed to start: {self._error!r}") from self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.loop is not None and self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def port(self, backend: str) -> int:
        return self.settings.backend(backend).listen_address[1]

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
