"""RELAY_WAL_READ=stream over TLS: the relay takes over the socket of a connection asyncpg
opened with ``sslmode=require``, so the stream runs inside the TLS session. The wheel's
PostgreSQL is built without SSL, so a proxy in front of it answers PostgreSQL's SSLRequest,
terminates TLS (a certificate from a test CA) and passes the plain protocol on; it refuses
any connection that does not ask for TLS."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import trustme

from devtools.servers import free_port
from outbox_client import CourseUpdatedEvent, enqueue_many
from relay.walstore import WalStore
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    running_relay,
    stream_messages,
    wait_for_messages,
)
from tests.walsupport import skip_unless_logical, wal_mode

_SSL_REQUEST = 80877103


class TlsTerminator:
    """Listens on ``port``; each client must send an SSLRequest, then speaks TLS."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        cert = trustme.CA().issue_cert("127.0.0.1")
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(self.context)
        self.refused = 0  # connections that did not ask for TLS
        self.replication = 0  # replication connections carried inside TLS
        self.tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, code = struct.unpack(">II", await reader.readexactly(8))
        if code != _SSL_REQUEST:
            self.refused += 1
            writer.close()
            return
        writer.write(b"S")
        await writer.drain()
        await writer.start_tls(self.context)
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        startup = struct.pack(">I", length) + await reader.readexactly(length - 4)
        if b"replication\0database\0" in startup:
            self.replication += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(startup)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        try:
            yield
        finally:
            server.close()


async def test_the_stream_runs_inside_tls(
    database_url: str, nats_url: str, wal_level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_logical(wal_level)
    parts = urlsplit(database_url)
    assert parts.port is not None
    tls = TlsTerminator(parts.port)
    userinfo = parts.netloc.rpartition("@")[0]
    url = urlunsplit(
        parts._replace(netloc=f"{userinfo}@127.0.0.1:{tls.port}", query="sslmode=require")
    )
    await apply_default_streams(nats_url)
    events = [CourseUpdatedEvent(course_code=f"TLS{i}", credits=1) for i in range(20)]
    async with (
        wal_mode(database_url, monkeypatch, read="stream"),
        tls.running(),
        engine(database_url) as eng,  # producers direct: the TLS is the relay's
        running_relay(url, nats_url, capture="wal") as app,
    ):
        assert isinstance(app.store, WalStore) and app.store.stream_target is not None
        async with eng.begin() as conn:
            await enqueue_many(conn, events[:10])
        assert await wait_for_messages(nats_url, 10) == 10
        async with eng.begin() as conn:
            await enqueue_many(conn, events[10:])
        assert await wait_for_messages(nats_url, 20) == 20
        assert app.store.confirmed_lsn > 0  # confirmed through the stream's status updates
    assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in events]
    assert tls.replication >= 1 and tls.refused == 0
