"""Issue 10, case 3: rows nobody will ever acknowledge — a subject the relay's NATS user may
not publish, a subject a non-JetStream service answers — are quarantined, and a batch made only
of them is not an outage. On the old relay they timed out or came back unreadable, were retried
for ever, and a batch of nothing else was taken for a NATS outage: the same rows were claimed
again first and no good event behind them went out."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import api as js_api

from devtools.servers import EmbeddedNats, server_dir
from outbox_client.nats_config import NATSConfig
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig
from relay.app import RelayApp
from relay.errors import PublishError
from relay.natspublisher import NatsPublisher
from relay.settings import RelaySettings
from tests.hostile.rows import RawRow, good, insert_raw, wait_quarantined
from tests.relayrun import (
    apply_default_streams,
    engine,
    jetstream,
    produce,
    running_relay,
    wait_for_messages,
)

ROOT = Path(__file__).resolve().parents[2]
BATCH = 30


@dataclass
class LockedNats:
    """A nats-server with the recommended ``deploy/nats/relay-permissions.conf``."""

    admin_url: str
    relay: NATSConfig


@pytest.fixture
def locked_nats() -> Iterator[LockedNats]:
    base = server_dir("vertector-hostile-")
    config = (ROOT / "deploy/nats/relay-permissions.conf").read_text()
    config = config.replace("$ADMIN_PASSWORD", "admin-pw").replace("$RELAY_PASSWORD", "relay-pw")
    server = EmbeddedNats(base / "nats", config=config)
    server.start()
    try:
        yield LockedNats(
            f"nats://admin:admin-pw@127.0.0.1:{server.port}",
            NATSConfig(
                servers=[server.url], enable_auth=True, username="relay", password="relay-pw"
            ),
        )
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.asynccontextmanager
async def _responder(url: str, subject: str) -> AsyncIterator[None]:
    """A core NATS service that answers every request on ``subject`` with plain text."""
    nc = await nats.connect(url)

    async def answer(msg: Msg) -> None:
        await msg.respond(b"hello from a service")

    await nc.subscribe(subject, cb=answer)
    await nc.flush()
    try:
        yield
    finally:
        await nc.close()


async def _relay_through(
    database_url: str,
    locked: LockedNats,
    streams: tuple[StreamConfig, ...],
    bad: list[RawRow],
) -> tuple[dict[int, str], int, float]:
    """Run a relay as the locked-down user over ``bad`` rows first, then a batch of good
    events; the bad rows' reasons, how many good events arrived, and how long they took."""
    app = RelayApp(
        RelaySettings(
            database_url=database_url, metrics_port=-1, batch_size=BATCH,
            publish_timeout_seconds=2,
        ),
        locked.relay,
        streams=streams,
    )  # fmt: skip
    stop = asyncio.Event()
    ids = await insert_raw(database_url, bad)
    good_events = [good(f"G{i}") for i in range(BATCH)]
    async with engine(database_url) as eng:
        await produce(eng, good_events)
    started = time.monotonic()
    task = asyncio.create_task(app.run(stop))
    try:
        arrived = await wait_for_messages(locked.admin_url, BATCH, timeout=60)
        took = time.monotonic() - started
        reasons = await wait_quarantined(database_url, ids)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return reasons, arrived, took


async def test_a_batch_of_unpublishable_rows_is_quarantined_not_taken_for_an_outage(
    database_url: str, locked_nats: LockedNats
) -> None:
    await apply_default_streams(locked_nats.admin_url)
    # payroll.*: the relay's NATS user may not publish there. notes.echo.*: allowed, but no
    # stream captures it and a service answers with plain text.
    bad = [RawRow("payroll.salaries", key=f"p{i}") for i in range(BATCH)]
    bad += [RawRow("notes.echo.ping", key=f"e{i}") for i in range(BATCH)]
    async with _responder(locked_nats.admin_url, "notes.echo.>"):
        reasons, arrived, _ = await _relay_through(database_url, locked_nats, DEFAULT_STREAMS, bad)
    assert arrived == BATCH, f"{arrived} of {BATCH} good events went out behind the bad rows"
    assert len(reasons) == len(bad), reasons
    assert all("no configured stream captures" in reason for reason in reasons.values())


async def test_a_permission_violation_is_quarantined_with_its_reason(
    database_url: str, locked_nats: LockedNats
) -> None:
    """A stream the relay is configured with, but that its NATS user may not publish to: the
    server's violation (reported only to error_cb) settles each publish at once."""
    forbidden = StreamConfig(name="T_FORBIDDEN", subjects=("forbidden.>",))
    await apply_default_streams(locked_nats.admin_url, [*DEFAULT_STREAMS, forbidden])
    bad = [RawRow("forbidden.fruit", key=f"f{i}") for i in range(BATCH)]
    reasons, arrived, took = await _relay_through(
        database_url, locked_nats, (*DEFAULT_STREAMS, forbidden), bad
    )
    assert arrived == BATCH
    assert len(reasons) == BATCH, reasons
    assert all("permissions violation" in reason for reason in reasons.values()), reasons
    # Settled by the server's answer, not by waiting out the PubAck timeout and backing off.
    assert took < 30, took


def test_a_relay_built_in_code_gets_the_relays_private_reply_prefix() -> None:
    """The locked fixtures above pass a NATSConfig without a prefix, as an embedding program
    would: the relay's own default applies, not the generic ``_INBOX`` its user may not read
    (which left every PubAck unread: 0 good events out, the relay retrying for ever)."""
    config = NATSConfig(servers=["nats://127.0.0.1:1"])
    app = RelayApp(RelaySettings(database_url="postgresql://x@127.0.0.1/x"), config)
    assert app.nats_config.inbox_prefix == "_INBOX_relay"
    chosen = NATSConfig(servers=["nats://127.0.0.1:1"], inbox_prefix="_INBOX_mine")
    assert (
        RelayApp(
            RelaySettings(database_url="postgresql://x@127.0.0.1/x"), chosen
        ).nats_config.inbox_prefix
        == "_INBOX_mine"
    )


async def test_a_reply_prefix_the_nats_user_may_not_read_is_named_at_connect(
    locked_nats: LockedNats,
) -> None:
    """A prefix outside the user's subscribe permissions is a one-line cause naming
    NATS_INBOX_PREFIX, not PubAck timeouts and stream checks failing for ever."""
    config = locked_nats.relay.model_copy(update={"inbox_prefix": "_INBOX"})
    publisher = NatsPublisher(config, streams=DEFAULT_STREAMS, max_in_flight=8, publish_timeout=2)
    with pytest.raises(PublishError, match="may not subscribe to _INBOX.> .*NATS_INBOX_PREFIX"):
        await publisher.connect()
    allowed = NatsPublisher(
        locked_nats.relay.model_copy(update={"inbox_prefix": "_INBOX_relay"}),
        streams=DEFAULT_STREAMS, max_in_flight=8, publish_timeout=2,
    )  # fmt: skip
    await allowed.connect()
    await allowed.close()


async def test_an_answer_that_is_not_a_puback_is_quarantined(
    database_url: str, nats_url: str
) -> None:
    """A configured stream removed under the relay while a service answers on its subjects:
    the service's reply is not a PubAck, so the event reached no stream; it is quarantined."""
    echo = StreamConfig(name="T_ECHO", subjects=("echo.>",))
    await apply_default_streams(nats_url, [*DEFAULT_STREAMS, echo])
    async with (
        engine(database_url) as eng,
        running_relay(database_url, nats_url, streams=(*DEFAULT_STREAMS, echo), batch_size=BATCH),
    ):
        await produce(eng, [good("first")])
        assert await wait_for_messages(nats_url, 1) == 1  # past the start-up check
        async with jetstream(nats_url) as js:
            await js.delete_stream("T_ECHO")
        async with _responder(nats_url, "echo.>"):
            ids = await insert_raw(
                database_url, [RawRow("echo.ping", key=f"e{i}") for i in range(BATCH)]
            )
            await produce(eng, [good(f"G{i}") for i in range(BATCH)])
            reasons = await wait_quarantined(database_url, ids)
            assert await wait_for_messages(nats_url, BATCH + 1) == BATCH + 1
    assert len(reasons) == BATCH, reasons
    assert all("reply is not a PubAck" in reason for reason in reasons.values()), reasons


async def test_a_message_over_a_streams_own_limit_is_quarantined(
    database_url: str, nats_url: str
) -> None:
    """JetStream error 10054 (over the stream's max_msg_size) can never succeed on a retry."""
    small = StreamConfig(name="T_SMALL", subjects=("small.>",))
    async with jetstream(nats_url) as js:
        await js.add_stream(
            js_api.StreamConfig(name="T_SMALL", subjects=["small.>"], max_msg_size=400)
        )
    await apply_default_streams(nats_url)
    async with running_relay(database_url, nats_url, streams=(*DEFAULT_STREAMS, small)):
        ids = await insert_raw(
            database_url,
            [RawRow("small.note", payload=b"x" * 1000, key="s"), RawRow("small.note", key="s")],
        )
        reasons = await wait_quarantined(database_url, ids[:1])
        assert await wait_for_messages(nats_url, 1, stream="T_SMALL") == 1
    assert "jetstream 10054" in reasons[ids[0]], reasons
