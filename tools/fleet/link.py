"""A TCP pass-through between a site's bridge and the central broker, that the fleet check
severs and restores: the network cut of docs/fleet.md, without root or firewall rules.

Severed, it closes every connection it carries (both ends see the socket close, as when a
router drops the link and the peer's stack answers with a reset) and stops listening, so
that the bridge's reconnects are refused until ``restore``. Bytes are copied untouched: the
bridge's TLS runs end to end through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

from tools.broker import free_port

_CHUNK = 64 * 1024


class Links:
    """Every pass-through of a fleet, served by one asyncio loop on one thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fleet-links", daemon=True)
        self._thread.start()
        self._links: list[Link] = []

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def open(self, target_host: str, target_port: int) -> Link:
        """A pass-through to target_host:target_port, listening on a free loopback port."""
        link = Link(self, target_host, target_port)
        link.restore()
        self._links.append(link)
        return link

    def close(self) -> None:
        """Every link severed and every task of theirs ended before the loop closes (a task
        left pending would be torn down by the garbage collector, on a closed loop)."""
        if self.loop.is_closed():
            return
        self.run(self._shut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _shut(self) -> None:
        for link in self._links:
            await link._sever()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Link:
    """One pass-through: ``port`` is what the bridge connects to."""

    host = "127.0.0.1"

    def __init__(self, links: Links, target_host: str, target_port: int) -> None:
        self._links = links
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        """How many connections it has carried (each bridge reconnect is one)."""

    @property
    def up(self) -> bool:
        return self._server is not None

    def sever(self) -> None:
        """Cut: every carried connection closed, new ones refused."""
        self._links.run(self._sever())

    def restore(self) -> None:
        """Listen again (on the same port): the bridge's next attempt gets through."""
        self._links.run(self._listen())

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._carry, self.host, self.port, reuse_address=True)

    async def _sever(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, not a polite close: nothing more crosses
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until either end goes; then the other direction goes too."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
