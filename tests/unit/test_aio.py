from __future__ import annotations

import asyncio

import pytest

from relay.aio import first_of, sleep_until_stopped

LONG = 600.0  # never reached: each test returns because of an event, not a clock


async def test_first_of_returns_with_the_first_and_cancels_the_rest() -> None:
    woken, never = asyncio.Event(), asyncio.Event()
    other = asyncio.ensure_future(never.wait())
    woken.set()
    await asyncio.wait_for(first_of(woken.wait(), other), 10)
    assert other.cancelled()


async def test_first_of_gives_up_after_within_seconds() -> None:
    never = asyncio.Event()
    waiting = asyncio.ensure_future(never.wait())
    await asyncio.wait_for(first_of(waiting, within=0.01), 10)
    assert waiting.cancelled()


async def test_first_of_raises_what_the_first_one_raised() -> None:
    async def fails() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        await asyncio.wait_for(first_of(fails(), asyncio.Event().wait()), 10)


async def test_sleep_until_stopped_wakes_when_stopped_and_says_so() -> None:
    stop = asyncio.Event()
    sleeping = asyncio.ensure_future(sleep_until_stopped(stop, LONG))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(sleeping, 10) is True
    assert await sleep_until_stopped(asyncio.Event(), 0.01) is False
