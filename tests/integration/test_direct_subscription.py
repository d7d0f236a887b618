"""``OutboxNATSClient.subscribe_direct`` against a real nats-server: what the relay's PubAcks
ride on. Each message reaches the handler as read, headers parsed as nats-py parses them (a
"no responders" status among them), and nats-py keeps the subscription as its own: it comes
back after the server restarts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import nats.errors
import pytest

from devtools.servers import EmbeddedNats, server_dir
from outbox_client.client import connect_nats
from outbox_client.nats_config import NATSConfig

Seen = list[tuple[bytes, bytes, dict[str, str] | None]]


async def until(seen: Seen, count: int) -> None:
    async with asyncio.timeout(30):
        while len(seen) < count:
            await asyncio.sleep(0.01)


async def test_messages_reach_the_handler_as_read(nats_url: str) -> None:
    nc = await connect_nats(NATSConfig(servers=[nats_url]))
    seen: Seen = []
    try:
        inbox = nc.new_inbox()
        await nc.subscribe_direct(f"{inbox}.*", lambda *m: seen.append(m))
        await nc.publish(f"{inbox}.1", b'{"stream":"S","seq":1}')
        await nc.publish(f"{inbox}.2", b"body", headers={"Vertector-Event-Type": "a.b"})
        # Nothing listens on this subject: the server answers the request with a 503 status.
        await nc.publish("nobody.listens.here", b"", reply=f"{inbox}.3", headers={"X": "1"})
        await until(seen, 3)
        assert seen[0] == (f"{inbox}.1".encode(), b'{"stream":"S","seq":1}', None)
        assert seen[1] == (f"{inbox}.2".encode(), b"body", {"Vertector-Event-Type": "a.b"})
        subject, data, headers = seen[2]
        assert (subject, data) == (f"{inbox}.3".encode(), b"")
        assert headers is not None and headers["Status"] == "503"
        # An ordinary subscription on the same client is untouched.
        plain = await nc.subscribe("plain.subject")
        await nc.publish("plain.subject", b"x")
        assert (await plain.next_msg(timeout=10)).data == b"x"
        assert len(seen) == 3
    finally:
        await nc.close()


@pytest.fixture
def own_server() -> Iterator[EmbeddedNats]:
    base = server_dir("vertector-direct-")
    server = EmbeddedNats(base / "nats")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


async def test_the_subscription_comes_back_after_a_reconnect(own_server: EmbeddedNats) -> None:
    nc = await connect_nats(NATSConfig(servers=[own_server.url], reconnect_wait_seconds=0.1))
    seen: Seen = []
    try:
        await nc.subscribe_direct("direct.>", lambda *m: seen.append(m))
        await nc.publish("direct.before", b"1")
        await until(seen, 1)
        own_server.kill()
        own_server.start()
        async with asyncio.timeout(30):
            while not nc.is_connected:
                await asyncio.sleep(0.05)
        async with asyncio.timeout(30):
            while len(seen) < 2:  # re-subscribing races the first publishes: ask until heard
                try:
                    await nc.publish("direct.after", b"2")
                    await nc.flush(1)
                except (TimeoutError, nats.errors.Error):
                    pass
                await asyncio.sleep(0.1)
        assert seen[1][:2] == (b"direct.after", b"2")
    finally:
        await nc.close()
