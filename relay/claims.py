"""Where the loop's rows come from: a claim of the oldest rows of keys not retrying, plus the
heads of retrying keys now due; and the next batch, claimed while the one in hand is published.

A claim excludes rows in flight (the prefetched batch is claimed without the batch in hand,
and neither holds a row whose outcome is being written), so nothing is published twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from relay.outcomes import OutcomeWriter
from relay.ports import OutboxRow, Partitions, Store
from relay.retrying import RetryingKeys

#: Rows claimed and whether the ordinary part was a full batch (more is waiting).
Claimed = tuple[list[OutboxRow], bool]


class Claims:
    """Claims the next rows; holds the prefetched batch, if any."""

    def __init__(
        self,
        store: Store,
        *,
        partitions: Partitions,
        retrying: RetryingKeys,
        writer: OutcomeWriter,
        batch_size: int,
        wakeup: asyncio.Event,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.partitions = partitions
        self.retrying = retrying
        self.writer = writer
        self.batch_size = batch_size
        self.wakeup = wakeup
        self.clock = clock
        self._prefetch: asyncio.Task[Claimed] | None = None

    async def next(self) -> Claimed:
        """The prefetched batch if there is one, else a claim now."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            return await prefetch
        self.wakeup.clear()  # before the claim: a notification during it is not lost
        return await self._claim(set())

    def prefetch(self, in_hand: list[OutboxRow]) -> None:
        """Start claiming the batch after ``in_hand`` while it is published. Only when no key
        is held back: a batch claimed while some rows are excluded (backing off, or left
        unpublished by the batch in hand) could hold later events of their keys, which would
        overtake them once the backoff expires."""
        self._prefetch = asyncio.create_task(self._claim({row.id for row in in_hand}))

    async def drop_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
            await asyncio.gather(self._prefetch, return_exceptions=True)
            self._prefetch = None

    async def _claim(self, also_exclude: set[int]) -> Claimed:
        exclude = also_exclude | self.writer.in_flight
        partitions = self.partitions.current()
        rows: list[OutboxRow] = []
        if not self.retrying.full():
            rows = await self.store.claim(
                partitions, sorted(exclude), self.retrying.keys(), self.batch_size
            )
        full = len(rows) >= self.batch_size
        due = self.retrying.due(self.clock(), self.batch_size)
        if due:
            heads = await self.store.claim_ids(sorted(due), partitions)
            # A head not found was sent by another relay or its partition moved: forget it.
            self.retrying.forget_heads(due - {row.id for row in heads})
            # A store may hand a head out with the rest of its transaction: not what is in
            # flight, nor what the claim above took.
            taken = exclude | {row.id for row in rows}
            heads = [row for row in heads if row.id not in taken]
            rows = sorted([*rows, *heads], key=lambda row: row.id)
        return rows, full
