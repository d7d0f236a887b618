"""WAL capture with several relays: one reads the slot, a standby takes over when it dies.
The takeover is measured: from the reader's SIGKILL to the stream storing an event committed
at that moment (printed; run with -s to see it)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from devtools.harness import FaultRelay, create_test_stream
from outbox_client import CourseUpdatedEvent, enqueue
from tests.relayrun import engine, jetstream
from tests.walsupport import skip_unless_logical, wal_mode


async def reader(database_url: str) -> str | None:
    from tests.integration.test_relay import pg_rows

    rows = await pg_rows(
        database_url, "SELECT owner FROM outbox_wal_readers WHERE expires_at > now()"
    )
    return rows[0]["owner"] if rows else None


@pytest.mark.parametrize("read", ["functions", "stream"])
@pytest.mark.parametrize("lease", ["2", "10"])
async def test_standby_takes_the_slot_over_when_the_reader_is_killed(
    database_url: str,
    nats_url: str,
    wal_level: str,
    monkeypatch: pytest.MonkeyPatch,
    lease: str,
    read: str,
) -> None:
    skip_unless_logical(wal_level)
    await create_test_stream(nats_url)
    async with wal_mode(database_url, monkeypatch, read=read), engine(database_url) as eng:
        relays = [
            FaultRelay(database_url, nats_url, name, RELAY_LEASE_SECONDS=lease).start()
            for name in ("first", "second")
        ]
        try:
            for relay in relays:
                await relay.wait_for_log("relay.started")
            holder = await reader(database_url)
            assert holder in ("first", "second")
            active = next(r for r in relays if r.name == holder)
            standby = next(r for r in relays if r.name != holder)
            active.kill()
            killed = datetime.now(UTC)
            event = CourseUpdatedEvent(course_code="TAKEOVER", credits=1)
            async with eng.begin() as conn:
                await enqueue(conn, event)
            async with jetstream(nats_url) as js:
                deadline = time.monotonic() + 60
                while (await js.stream_info("ACADEMIC_EVENTS")).state.messages < 1:
                    assert time.monotonic() < deadline, standby.tail()
                    await asyncio.sleep(0.05)
                stored = await js.get_msg("ACADEMIC_EVENTS", 1)
            assert stored.headers is not None
            assert stored.headers["Nats-Msg-Id"] == str(event.event_id)
            assert await reader(database_url) == standby.name
            assert stored.time is not None
            takeover = (stored.time - killed).total_seconds()
            print(f"\nWAL takeover ({read}) with RELAY_LEASE_SECONDS={lease}: {takeover:.2f} s")
            # Within the lease and one renewal interval (+ a second for a busy machine).
            assert takeover <= float(lease) * 1.2 + 1.0, standby.tail()
        finally:
            for relay in relays:
                await asyncio.to_thread(relay.stop)
