"""In-memory store and publisher: the relay loop's logic, tested in milliseconds."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from relay.errors import StoreError
from relay.ports import Ack, Backlog, Failure, OutboxRow, PublishResult, Sent


@dataclass
class MemRow:
    id: int
    key: str
    subject: str
    visible: bool = True
    sent: bool = False
    quarantined: str | None = None
    attempts: int = 0
    last_error: str | None = None
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_row(self) -> OutboxRow:
        return OutboxRow(
            self.id, self.event_id, self.subject, self.key, 0, b"{}", {}, self.attempts,
            datetime.now(UTC),
        )  # fmt: skip


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[int, MemRow] = {}
        self._ids = itertools.count(1)
        self.fail_writes = 0  # how many next write calls raise StoreError
        self.fail_claims = 0
        self.claims: list[list[int]] = []
        self.marks: list[list[int]] = []

    def add(self, key: str, subject: str = "academic.course.updated") -> MemRow:
        row_id = next(self._ids)
        row = MemRow(row_id, key, subject)
        self.rows[row_id] = row
        return row

    async def claim(
        self,
        partitions: Sequence[int],
        exclude: Sequence[int],
        held_keys: Sequence[str],
        limit: int,
    ) -> list[OutboxRow]:
        await asyncio.sleep(0)
        if self.fail_claims:
            self.fail_claims -= 1
            raise StoreError("claim failed: injected")
        skip, held = set(exclude), set(held_keys)
        pending = sorted(
            (r for r in self.rows.values()
             if r.visible and not r.sent and not r.quarantined and r.id not in skip
             and r.key not in held),
            key=lambda r: r.id,
        )[:limit]  # fmt: skip
        self.claims.append([r.id for r in pending])
        return [r.as_row() for r in pending]

    async def claim_ids(self, ids: Sequence[int], partitions: Sequence[int]) -> list[OutboxRow]:
        await asyncio.sleep(0)
        wanted = set(ids)
        rows = [
            r for r in self.rows.values() if r.id in wanted and not r.sent and not r.quarantined
        ]
        return [r.as_row() for r in sorted(rows, key=lambda r: r.id)]

    def _maybe_fail(self) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise StoreError("write failed: injected")

    async def mark_sent(self, sent: Sequence[Sent]) -> int:
        await asyncio.sleep(0)
        self._maybe_fail()
        self.marks.append([s.row_id for s in sent])
        for s in sent:
            row = self.rows[s.row_id]
            assert not row.sent, f"row {row.id} marked twice"
            row.sent = True
            row.attempts += 1
        return len(sent)

    async def record_failures(self, failures: Sequence[tuple[int, str]]) -> None:
        self._maybe_fail()
        for row_id, reason in failures:
            self.rows[row_id].attempts += 1
            self.rows[row_id].last_error = reason

    async def quarantine(self, rows: Sequence[tuple[int, str]]) -> None:
        self._maybe_fail()
        for row_id, reason in rows:
            self.rows[row_id].quarantined = reason
            self.rows[row_id].attempts += 1

    async def purge(self, older_than_seconds: float, limit: int) -> int:
        return 0

    async def vacuum(self) -> None:
        return None

    async def can_vacuum(self) -> bool:
        return True

    async def backlog(self) -> Backlog:
        pending = [r for r in self.rows.values() if not r.sent and not r.quarantined]
        quarantined = sum(1 for r in self.rows.values() if r.quarantined)
        return Backlog(len(pending), 0.0, quarantined)


class FakePublisher:
    """Records what reaches the 'stream'; ``verdict(row)`` may script a failure per row."""

    def __init__(self, verdict: Callable[[OutboxRow], Failure | None] | None = None) -> None:
        self.verdict = verdict or (lambda row: None)
        self.stream: list[OutboxRow] = []  # what was stored, in order (dedup by event id)
        self.sent: list[int] = []  # every publish attempt, by row id
        self._seen: set[uuid.UUID] = set()
        self.calls: list[list[int]] = []
        self.streams: dict[str, str | Exception] = {"academic.": "ACADEMIC_EVENTS"}

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
            results.append(Ack("ACADEMIC_EVENTS", len(self.stream), duplicate))
        return results

    async def stream_of(self, subject: str) -> str | None:
        """Scripted by ``streams``: subject prefix -> stream name, or an exception to raise."""
        for prefix, answer in self.streams.items():
            if subject.startswith(prefix):
                if isinstance(answer, Exception):
                    raise answer
                return answer
        return None

    def keys_in_order(self) -> dict[str, list[int]]:
        order: dict[str, list[int]] = {}
        for row in self.stream:
            order.setdefault(row.partition_key, []).append(row.id)
        return order
