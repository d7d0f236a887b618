"""In-memory store and publisher: the relay loop's logic, tested in milliseconds.

The store is :class:`tests.memstore.MemoryStore`, held to ``PgStore`` by the contract suite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

from relay.ports import Failure, OutboxRow, PublishResult, Stored
from tests.memstore import MemoryStore

__all__ = ["FakePublisher", "MemoryStore"]


class FakePublisher:
    """Records what reaches the 'stream'; ``verdict(row)`` may script a failure per row."""

    def __init__(self, verdict: Callable[[OutboxRow], Failure | None] | None = None) -> None:
        self.verdict = verdict or (lambda row: None)
        self.stream: list[OutboxRow] = []  # what was stored, in order (dedup by event id)
        self.sent: list[int] = []  # every publish attempt, by row id
        self._seen: set[uuid.UUID] = set()
        self.calls: list[list[int]] = []

    async def publish(self, rows: Sequence[OutboxRow]) -> list[PublishResult]:
        await asyncio.sleep(0)
        self.calls.append([r.id for r in rows])
        results: list[PublishResult] = []
        for row in rows:
            self.sent.append(row.id)
            failure = self.verdict(row)
            if failure is not None:
                results.append(failure)
                continue
            duplicate = row.event_id in self._seen
            if not duplicate:
                self._seen.add(row.event_id)
                self.stream.append(row)
            results.append(Stored("ACADEMIC_EVENTS", len(self.stream), duplicate))
        return results

    def batchable(self, rows: Sequence[OutboxRow]) -> bool:
        return False

    def keys_in_order(self) -> dict[str, list[int]]:
        order: dict[str, list[int]] = {}
        for row in self.stream:
            order.setdefault(row.partition_key, []).append(row.id)
        return order
