"""A tiny HTTP server for /metrics, /healthz and /readyz (no framework needed for three GETs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from relay.log import log_event

logger = logging.getLogger("relay.http")

#: Longest request or header line read; more is junk (a scrape request is ~100 bytes).
MAX_LINE = 8192
MAX_HEADERS = 100
#: One deadline for reading a whole request and writing the answer.
REQUEST_SECONDS = 5.0
#: Connections served at once; more are closed at once.
MAX_CONNECTIONS = 64


class HealthServer:
    """``/healthz``: the process is alive (never fails on a NATS or PostgreSQL outage, so that
    orchestrators do not restart-storm); ``/readyz``: connected to both and making progress."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.ready = ready
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=MAX_LINE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log_event(logger, "relay.http.listening", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:  # junk or a flood: the scrapers get the slots back soon
            writer.close()
            return
        self._open += 1
        try:
            async with asyncio.timeout(REQUEST_SECONDS):  # the whole request, not per line
                status, ctype, body = await self._answer(reader)
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client too slow, or gone: nothing to answer
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        try:
            request = await reader.readline()
            for _ in range(MAX_HEADERS):
                if not (await reader.readline()).strip():
                    break
            else:
                return "431 Request Header Fields Too Large", "text/plain", b"too many headers\n"
        except ValueError:  # a line over MAX_LINE (asyncio's LimitOverrunError is wrapped)
            return "431 Request Header Fields Too Large", "text/plain", b"line too long\n"
        parts = request.decode("latin-1").split()
        path = parts[1].split("?")[0] if len(parts) >= 2 else ""
        return self._route(path)

    def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            ok, why = self.ready()
            return (
                ("200 OK" if ok else "503 Service Unavailable"),
                "text/plain",
                (why + "\n").encode(),
            )
        return "404 Not Found", "text/plain", b"try /metrics, /healthz or /readyz\n"
