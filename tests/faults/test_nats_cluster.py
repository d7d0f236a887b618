"""A 3-node JetStream cluster (devtools.servers.EmbeddedNatsCluster) with R3 streams: the relay,
given every seed URL, rides through the stream leader being killed (node loss and election),
its restart and catch-up, and the next leader being paused past every timeout."""

from __future__ import annotations

import asyncio
import shutil

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    create_test_stream,
    stream_leader,
    under_load,
)
from devtools.servers import EmbeddedNatsCluster, server_dir
from tests.relayrun import engine
from tests.walsupport import both_modes  # noqa: F401 - every test in both capture modes


async def test_cluster_stream_leader_killed_then_paused_under_load(database_url: str) -> None:
    base = server_dir("vertector-fault-cluster-")
    cluster = EmbeddedNatsCluster(base / "cluster")
    await asyncio.to_thread(cluster.start)
    try:
        await create_test_stream(cluster.url, replicas=3)
        relay = FaultRelay(database_url, cluster.url, "cluster-rider")
        leaders: list[str] = []

        async def faults() -> None:
            await asyncio.sleep(1.5)
            first = await stream_leader(cluster.url)
            leaders.append(first)
            cluster.node(first).kill()  # node loss: the stream must elect a new leader
            leaders.append(await stream_leader(cluster.url, other_than=first))
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.node(first).start)  # it rejoins and catches up
            await asyncio.sleep(2.0)
            second = await stream_leader(cluster.url)
            leaders.append(second)
            cluster.node(second).pause()  # silent, past the publish timeout and pings
            others = ",".join(n.url for n in cluster.nodes if n is not cluster.node(second))
            leaders.append(await stream_leader(others, other_than=second))
            await asyncio.sleep(3.0)
            cluster.node(second).resume()
            await asyncio.sleep(2.0)

        async with engine(database_url) as eng:
            workload = Workload(eng)
            report = await under_load(workload, cluster.url, [relay], faults)
        assert_clean(report, [relay])
        assert relay.exits == [0], relay.tail()
        # stream_leader(other_than=...) raises unless a new leader was elected after each fault
        assert leaders[0] != leaders[1] and len(leaders) == 4, leaders
        assert leaders[3] != leaders[2], f"no election after the leader was paused: {leaders}"
        assert len(workload.committed) > 500
    finally:
        await asyncio.to_thread(cluster.stop)
        shutil.rmtree(base, ignore_errors=True)
