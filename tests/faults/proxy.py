"""A TCP proxy for fault tests: pass, delay, blackhole or cut (RST) the traffic it carries.
(`tc netem` is not available here; this sits between a relay and its server instead, NATS or
PostgreSQL alike.)"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from devtools.servers import free_port


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.latency = 0.0
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def before(cls, url: str) -> FaultProxy:
        """A proxy in front of the server of ``url`` (``nats://`` or ``postgresql://``)."""
        parts = urlsplit(url)
        assert parts.hostname and parts.port, url
        return cls(parts.port, parts.hostname)

    def via(self, url: str) -> str:
        """``url`` rewritten to reach its server through this proxy."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@" if userinfo else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Reset every connection now, mid-frame if bytes are in flight."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.blackhole:
                    continue  # swallowed: the peer sees silence, not an error
                writer.write(data)
                await writer.drain()
            writer.close()  # pass the end of stream on, as a real network would
