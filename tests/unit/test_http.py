"""The metrics server holds against junk and slow clients: no traceback, no unbounded hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from relay import http
from relay.http import HealthServer

pytestmark = pytest.mark.unit


async def get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    except (ConnectionResetError, BrokenPipeError):  # the server closed with our bytes unread
        return b"reset"
    finally:
        writer.close()


async def test_junk_and_slow_clients_are_bounded(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "REQUEST_SECONDS", 1.0, raising=False)
    server = HealthServer("127.0.0.1", 0, CollectorRegistry(), lambda: (True, "ready"))
    await server.start()
    try:
        with caplog.at_level(logging.DEBUG):
            long_line = await get(server.port, b"GET /" + b"x" * 1_000_000 + b" HTTP/1.1\r\n\r\n")
            assert long_line.startswith(b"HTTP/1.1 431") or long_line == b"reset"
            # Slow senders: each trickles a header line well inside any per-line timeout, so
            # only a deadline on the whole request lets them go.
            started = time.monotonic()
            slow = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(200)]

            async def trickle(writer: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError):  # until the server lets it go
                    writer.write(b"GET /metrics HTTP/1.1\r\n")
                    for _ in range(10):
                        await asyncio.sleep(0.3)
                        writer.write(b"X: y\r\n")

            await asyncio.gather(*(trickle(w) for _, w in slow), return_exceptions=True)
            closed = await asyncio.gather(
                *(asyncio.wait_for(r.read(), 10) for r, _ in slow), return_exceptions=True
            )
            # every one was let go (closed or reset), none was answered
            assert all(c == b"" or isinstance(c, ConnectionError) for c in closed), closed[:3]
            assert time.monotonic() - started < 10
            for _, w in slow:
                w.close()
            ok = await get(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"ok\n")
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await server.close()
