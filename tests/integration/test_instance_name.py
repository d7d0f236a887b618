"""Two relays of one RELAY_INSTANCE_NAME would each own every partition and publish every event
twice: the second refuses to start. Real processes."""

from __future__ import annotations

import asyncio
import time

from devtools.processes import RelayProcess
from tests.relayrun import apply_default_streams


async def wait_for_log(relay: RelayProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in relay.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the relay's log:\n{relay.tail()}"
        assert relay.alive, f"the relay exited:\n{relay.tail()}"
        await asyncio.sleep(0.1)


async def wait_for_exit(relay: RelayProcess, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while relay.alive:
        assert time.monotonic() < deadline, f"the relay is still running:\n{relay.tail()}"
        await asyncio.sleep(0.1)
    relay.reap()
    return relay.exits[-1]


async def test_a_second_relay_of_the_same_name_refuses_to_start(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    first = RelayProcess(database_url, nats_url, "twin").start()
    second = RelayProcess(database_url, nats_url, "twin")
    try:
        await wait_for_log(first, "relay.started")
        second.start()
        assert await wait_for_exit(second) == 2
        errors = [
            line for line in second.log.read_text().splitlines() if "RELAY_INSTANCE_NAME" in line
        ]
        assert errors == [
            "vertector-relay run: another relay named 'twin' is running against this database"
            " (RELAY_INSTANCE_NAME): give each relay its own name, or leave RELAY_INSTANCE_NAME"
            " unset (host-pid)"
        ]
        assert first.alive
        # A relay that crashed is no obstacle: its restart under the same name goes ahead.
        first.kill()
        again = RelayProcess(database_url, nats_url, "twin").start()
        try:
            await wait_for_log(again, "relay.started")
        finally:
            again.terminate()
        assert again.exits == [0]
    finally:
        first.kill()
        second.kill()
