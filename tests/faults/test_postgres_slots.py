"""PostgreSQL out of connection slots ("sorry, too many clients already", SQLSTATE 53300):
the relay starts while every slot is taken and later loses its connections while they are
all taken again. It must keep retrying, never exit, and deliver everything once slots free."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    create_test_stream,
    under_load,
)
from tests.harness import PgTarget, asyncpg_url
from tests.relayrun import engine
from tests.walsupport import both_modes, wal_read  # noqa: F401 - every test in both capture modes


class SlotHog:
    """Holds every connection slot the server will give, superuser-reserved ones included."""

    def __init__(self, url: str) -> None:
        self.url = asyncpg_url(url)
        self.held: list[asyncpg.Connection] = []
        self.refusals = 0

    async def fill(self, seconds: float = 0.0) -> None:
        """Take slots until refused; go on grabbing freed ones for ``seconds`` more."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while True:
            try:
                self.held.append(await asyncpg.connect(self.url, timeout=5))
                continue
            except asyncpg.TooManyConnectionsError:
                self.refusals += 1
            if loop.time() >= until:
                return
            await asyncio.sleep(0.01)

    async def run(self, sql: str) -> None:
        await self.held[0].execute(sql)

    async def release(self) -> None:
        held, self.held = self.held, []
        for conn in held:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await conn.close(timeout=5)


async def test_connection_slots_exhausted_at_start_and_under_load(
    pg: PgTarget, database_url: str, nats_url: str
) -> None:
    pg.require_control()  # never exhaust a server the suite does not own
    await create_test_stream(nats_url)
    hog = SlotHog(database_url)
    relay = FaultRelay(database_url, nats_url, "starved")
    try:
        await hog.fill()
        assert len(hog.held) > 10 and hog.refusals
        relay.start()  # no slot for it: it must wait, not exit
        await relay.wait_for_log("too many clients")
        await asyncio.sleep(1.0)  # and it keeps waiting
        assert relay.alive, relay.tail()
        await hog.release()

        async def faults() -> None:
            await asyncio.sleep(1.5)
            await hog.fill()
            relay.pause()  # so that the slots its connections free go to the hog, not to it
            await hog.run(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'vertector-relay/starved%'"
            )
            await hog.fill(seconds=0.3)
            relay.resume()  # every connection it had is gone and no slot is free
            # A stream (RELAY_WAL_READ=stream) reconnects at once: a walsender does not count
            # against max_connections. The lease's renewals then fail instead of the claims.
            lost = "relay.wal.lease_failed" if wal_read() == "stream" else "relay.store.unavailable"
            await relay.wait_for_log(lost)
            await hog.release()
            await asyncio.sleep(1.0)

        async with engine(database_url) as eng:
            workload = Workload(eng, producers=3)
            report = await under_load(workload, nats_url, [relay], faults)
    finally:
        await hog.release()
        await asyncio.to_thread(relay.stop)
    assert_clean(report, [relay])
    assert relay.exits == [0], relay.tail()
    log = relay.log.read_text()
    assert "relay.postgres.unavailable" in log
