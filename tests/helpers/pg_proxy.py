"""A TCP proxy in front of the test server, to fake outages a test cannot cause on the real one.

``refuse()`` is a server that went away (open connections reset, new ones refused); ``go_silent()`` is
a network that drops every packet (connections stay open, nothing answers).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class PostgresProxy:
    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self._target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self._dsn = dsn
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self.silent = False
        self.port = 0

    async def start(self) -> PostgresProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def dsn(self) -> str:
        """The test DSN, pointed at the proxy."""
        return make_conninfo(self._dsn, host="127.0.0.1", port=str(self.port))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.silent:
            return  # accepted, never answered
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(source, sink))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                if self.silent:
                    continue  # dropped on the floor
                sink.write(data)
                await sink.drain()
        sink.transport.abort()

    def go_silent(self) -> None:
        self.silent = True

    async def refuse(self) -> None:
        """Stop listening and reset every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
