"""Deletes sent rows older than the retention, a small batch per statement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from relay.errors import StoreError
from relay.log import log_event
from relay.ports import Store

logger = logging.getLogger("relay.purger")


async def purge_once(
    store: Store, retention_seconds: float, batch_size: int, max_batches: int = 100
) -> int:
    """Delete up to ``max_batches`` batches of expired sent rows; return how many went."""
    total = 0
    for _ in range(max_batches):
        deleted = await store.purge(retention_seconds, batch_size)
        total += deleted
        if deleted < batch_size:
            break
    return total


async def run_purger(
    store: Store,
    *,
    retention_seconds: float,
    interval: float,
    batch_size: int,
    stop: asyncio.Event,
    on_purged: Callable[[int], None] = lambda n: None,
) -> None:
    while not stop.is_set():
        try:
            deleted = await purge_once(store, retention_seconds, batch_size)
            on_purged(deleted)
            if deleted:
                log_event(logger, "relay.purge.deleted", rows=deleted)
        except StoreError as exc:
            log_event(logger, "relay.purge.failed", level=logging.WARNING, error=str(exc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
