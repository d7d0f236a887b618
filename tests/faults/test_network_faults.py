"""The network between the relay and its servers: a TCP proxy (tests/faults/proxy.py) adds
latency, blackholes traffic past every timeout, and resets connections mid-frame, first in
front of NATS, then in front of PostgreSQL. The relay must ride through without exiting and the
checker must count 0 lost, 0 duplicates, 0 phantoms and 0 order violations."""

from __future__ import annotations

import asyncio

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    create_test_stream,
    under_load,
)
from tests.faults.proxy import FaultProxy
from tests.relayrun import engine
from tests.walsupport import both_modes  # noqa: F401 - every test in both capture modes


async def test_network_between_relay_and_nats_delays_blackholes_and_resets(
    database_url: str, nats_url: str
) -> None:
    await create_test_stream(nats_url)
    proxy = FaultProxy.before(nats_url)
    await proxy.start()
    relay = FaultRelay(database_url, proxy.via(nats_url), "behind-proxy")

    async def faults() -> None:
        # The faults hit a running relay: on a busy machine it can take seconds to start.
        await relay.wait_for_log("relay.loop.started")
        await asyncio.sleep(1.0)
        proxy.latency = 0.05  # a slow link
        await asyncio.sleep(1.5)
        proxy.latency = 0.0
        proxy.blackhole = True  # silence longer than the publish timeout and pings
        await asyncio.sleep(3.5)
        proxy.blackhole = False
        proxy.cut()  # the half-open connection is reset
        await asyncio.sleep(1.0)
        for _ in range(3):  # resets mid-stream, mid-frame when bytes are in flight
            proxy.cut()
            await asyncio.sleep(0.7)

    try:
        async with engine(database_url) as eng:
            report = await under_load(Workload(eng), nats_url, [relay], faults)
        assert_clean(report, [relay])
        assert relay.exits == [0]
    finally:
        await proxy.stop()


async def test_network_between_relay_and_postgres_delays_blackholes_and_resets(
    database_url: str, nats_url: str
) -> None:
    """Every relay connection (pool, LISTEN) goes through the proxy; producers do not. While
    blackholed past RELAY_DB_TIMEOUT_SECONDS and the lease, the relay's statements time out and
    its leases lapse; afterwards it reconnects, takes the partitions back and re-publishes what
    it could not mark, which JetStream drops as duplicates."""
    await create_test_stream(nats_url)
    proxy = FaultProxy.before(database_url)
    await proxy.start()
    relay = FaultRelay(
        proxy.via(database_url), nats_url, "pg-behind-proxy", RELAY_DB_TIMEOUT_SECONDS="2"
    )

    async def faults() -> None:
        # Connected and running first: a relay still starting when the blackhole begins only
        # ever fails to connect, and never logs the statement timeout waited for below.
        await relay.wait_for_log("relay.loop.started")
        await asyncio.sleep(1.0)
        proxy.latency = 0.02  # every round trip to PostgreSQL is slow
        await asyncio.sleep(1.5)
        proxy.latency = 0.0
        proxy.blackhole = True  # longer than the statement timeout and the lease
        await relay.wait_for_log("no answer from PostgreSQL within 2 s")
        await asyncio.sleep(2.5)  # and past the 2 s lease
        proxy.blackhole = False
        proxy.cut()  # the desynchronised connections are reset
        await asyncio.sleep(1.5)
        for _ in range(4):  # resets mid-statement, mid-frame when bytes are in flight
            proxy.cut()
            await asyncio.sleep(0.6)

    try:
        async with engine(database_url) as eng:
            report = await under_load(Workload(eng), nats_url, [relay], faults)
        assert_clean(report, [relay])
        assert relay.exits == [0], relay.tail()
        log = relay.log.read_text()
        assert "relay.leases.leave_failed" not in log, "partitions were not handed over at stop"
    finally:
        await proxy.stop()
