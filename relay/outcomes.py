"""Outcomes of published batches and their write-behind: what a batch produced (PubAcks,
failures, quarantines) is written to the store in the background while the next batch is
published, one write at a time; what a write could not record is kept and written again before
the loop claims anything else.

Rows being written are excluded from claims (:attr:`OutcomeWriter.in_flight`), so a row whose
PubAck is not yet recorded is never published again by this relay.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from relay.batchlog import BatchReport
from relay.errors import StoreError
from relay.log import log_event
from relay.ports import Sent, Store

logger = logging.getLogger("relay.worker")


@dataclass
class Outcome:
    """What a batch produced, written to the store in three statements."""

    sent: list[Sent] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    quarantined: list[tuple[int, str]] = field(default_factory=list)
    #: Keys with rows of the batch left unpublished (failed, blocked, or not owned): rows
    #: of these keys in a batch claimed meanwhile must wait.
    unpublished_keys: set[str] = field(default_factory=set)
    #: Failures for want of an answer from NATS (not a JetStream refusal of one event).
    unanswered: int = 0
    #: Events that failed for the first time (a warning), and retries that failed again.
    first_failures: BatchReport = field(default_factory=BatchReport)
    failed_again: BatchReport = field(default_factory=BatchReport)
    #: Events quarantined: one warning per batch (1,000 hostile rows are not 1,000 lines).
    poison: BatchReport = field(default_factory=BatchReport)

    def empty(self) -> bool:
        return not (self.sent or self.failures or self.quarantined)


class OutcomeWriter:
    """The outcome being written, and what earlier writes left unwritten."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._writing: tuple[set[int], asyncio.Task[Outcome]] | None = None
        self._unwritten = Outcome()  # outcomes whose write failed: retried before claiming

    @property
    def in_flight(self) -> set[int]:
        """Rows whose outcome is being written: a claim must not take them."""
        return self._writing[0] if self._writing is not None else set()

    @property
    def pending(self) -> bool:
        """Something is being written or waits to be written again."""
        return not self._unwritten.empty() or self._writing is not None

    def start(self, outcome: Outcome) -> None:
        """Write ``outcome`` in the background; call :meth:`settle` first."""
        if outcome.empty():
            return
        ids = {s.row_id for s in outcome.sent} | {q[0] for q in outcome.quarantined}
        self._writing = (ids, asyncio.create_task(self._write(outcome)))

    async def settle(self) -> None:
        """Wait for the write under way; what it could not record is kept."""
        if self._writing is None:
            return
        _, task = self._writing
        leftover = await task
        self._writing = None
        self._unwritten.sent += leftover.sent
        self._unwritten.quarantined += leftover.quarantined
        self._unwritten.failures += leftover.failures

    async def catch_up(self) -> bool:
        """Write again what earlier writes left (after the one under way); True when nothing
        is left unwritten."""
        if self._unwritten.empty():
            return True
        await self.settle()
        self._unwritten = await self._write(self._unwritten)
        return self._unwritten.empty()

    async def _write(self, outcome: Outcome) -> Outcome:
        """Record a batch's outcome; returns what could not be written (empty on success)."""
        left = Outcome(list(outcome.sent), list(outcome.failures), list(outcome.quarantined))
        try:
            if left.sent:
                await self.store.mark_sent(left.sent)
                left.sent = []
            if left.quarantined:
                await self.store.quarantine(left.quarantined)
                left.quarantined = []
            if left.failures:
                await self.store.record_failures(left.failures)
                left.failures = []
        except StoreError as exc:
            log_event(
                logger, "relay.store.write_failed", level=logging.WARNING,
                error=str(exc), pending_marks=len(left.sent),
            )  # fmt: skip
        return left
