"""Exactly-once effects for consumers: the inbox.

JetStream delivers at least once (redeliveries, and re-publishes past the duplicate window).
The inbox records ``(consumer, event_id)`` in the consumer's own database *in the same
transaction* as the handler's effect: an event seen before is acknowledged and skipped.

>>> inbox = Inbox(engine, consumer="notes-service")  # doctest: +SKIP
>>> async def create_notebook(conn: AsyncConnection, event: BaseEvent) -> None:  # doctest: +SKIP
...     await conn.execute(insert(notebooks).values(course_code=event.course_code))
>>> await consumer.subscribe(inbox.handler(create_notebook))  # doctest: +SKIP

``batch_handler`` does the same for a whole lane of a fetched batch in ONE transaction (one
multi-row inbox insert, the effects in order, one commit): what keeps a consumer at the relay's
pace. When an effect fails, the transaction is rolled back and the events before it are
committed again without it; the consumer then retries or dead-letters the failed one.

>>> await consumer.subscribe_batches(inbox.batch_handler(create_notebook))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Uuid, delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox_client.checkpoints import NO_CHECKPOINTS, Checkpoints
from outbox_client.consumer import BatchHandler, BatchOutcome, Delivery
from outbox_client.events.base import BaseEvent
from outbox_client.table import inbox as inbox_table
from outbox_client.tracing import consumer_span

Effect = Callable[[AsyncConnection, BaseEvent], Awaitable[None]]
#: Applies a batch's new events in order, in the inbox's transaction.
BatchEffect = Callable[[AsyncConnection, Sequence[BaseEvent]], Awaitable[None]]
Handler = Callable[[BaseEvent, Any], Awaitable[None]]
_Apply = Callable[[AsyncConnection, Sequence[Delivery]], Awaitable[None]]
#: Called after a batch commits, with the deliveries it applied (not those seen before).
OnApplied = Callable[[Sequence[Delivery]], None]


#: Claims a batch's event ids; returns those not seen before (one statement for the batch).
_CLAIM = text(
    "INSERT INTO outbox_inbox (consumer, event_id, event_type) "
    "SELECT :consumer, t.id, t.type FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) "
    "AS t(id, type) ON CONFLICT DO NOTHING RETURNING event_id"
).columns(event_id=Uuid(as_uuid=True))


class _EffectFailed(Exception):
    """``error`` raised by the effect of the ``index``-th delivery (``None``: unknown which)."""

    def __init__(self, index: int | None, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _per_event(effect: Effect | None) -> _Apply:
    assert effect is not None

    async def apply(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
        for index, delivery in enumerate(deliveries):
            try:
                with consumer_span(delivery.msg.headers, delivery.event.event_type, delivery.trace):
                    await effect(conn, delivery.event)
            except Exception as exc:  # the effect's failure is the event's, by contract
                raise _EffectFailed(index, exc) from exc

    return apply


def _all_at_once(effect_many: BatchEffect) -> _Apply:
    async def apply(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
        try:
            await effect_many(conn, [delivery.event for delivery in deliveries])
        except Exception as exc:  # the effect's failure is the events', by contract
            raise _EffectFailed(None, exc) from exc

    return apply


class Inbox:
    """Records applied events of one consumer (``consumer`` names it: one inbox per service)."""

    def __init__(
        self, engine: AsyncEngine, consumer: str, *, checkpoints: Checkpoints = NO_CHECKPOINTS
    ) -> None:
        if not consumer:
            raise ValueError("Inbox needs a consumer name, e.g. Inbox(engine, 'notes-service')")
        self.engine = engine
        self.consumer = consumer
        self.checkpoints = checkpoints

    async def warm(
        self,
        connections: int,
        *,
        prime: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        """Open ``connections`` of the engine's pool before the first event, each with the
        inbox's claim prepared, and ``prime`` run on it (e.g. the effect's statements with
        nothing to change; its transaction is rolled back). The first connection also
        initialises the dialect (several round trips: the first batch's transaction took
        22-44 ms), and a connection's first claim prepares the statement and reads its array
        types (7-10 ms; the pool hands its connections out in turn, so each of the first
        transactions paid it: 11-16 ms against ~2 in the bench). The claim runs with no ids:
        it inserts nothing."""

        async def one() -> None:
            async with self.engine.connect() as conn:
                await conn.execute(_CLAIM, {"consumer": self.consumer, "ids": [], "types": []})
                if prime is not None:
                    await prime(conn)
                await asyncio.sleep(0)  # hold it while the others open
                await conn.rollback()

        async with self.engine.connect() as conn:  # the dialect, once
            await conn.execute(text("SELECT 1"))
        await asyncio.gather(*(one() for _ in range(connections)))

    async def apply(self, event: BaseEvent, effect: Effect) -> bool:
        """Run ``effect`` in one transaction with the inbox record; ``False`` when the event
        was applied before (then nothing runs)."""
        async with self.engine.begin() as conn:
            claimed = await conn.execute(
                insert(inbox_table)
                .values(
                    consumer=self.consumer, event_id=event.event_id, event_type=event.event_type
                )
                .on_conflict_do_nothing()
            )
            if claimed.rowcount == 0:
                return False
            await effect(conn, event)
        return True

    def handler(
        self, effect: Effect, on_duplicate: Callable[[BaseEvent], None] | None = None
    ) -> Handler:
        """An ``EventConsumer`` handler that applies ``effect`` exactly once, then acks."""

        async def handle(event: BaseEvent, msg: Any) -> None:
            applied = await self.apply(event, effect)
            if not applied and on_duplicate is not None:
                on_duplicate(event)
            await msg.ack()

        return handle

    def batch_handler(
        self,
        effect: Effect | None = None,
        *,
        effect_many: BatchEffect | None = None,
        on_applied: OnApplied | None = None,
        on_duplicate: OnApplied | None = None,
    ) -> BatchHandler:
        """An ``EventConsumer.subscribe_batches`` handler: each lane in one transaction.

        Give ``effect`` (run per event) or ``effect_many`` (run once with the lane's new events
        in order, e.g. one executemany: much less per-event work). When ``effect_many`` fails,
        the events are applied one transaction each to find the one that fails.
        """
        if (effect is None) == (effect_many is None):
            raise ValueError("give batch_handler one of effect or effect_many")
        apply = _all_at_once(effect_many) if effect_many is not None else _per_event(effect)

        async def handle(deliveries: Sequence[Delivery]) -> BatchOutcome:
            done, applied, error = await self.apply_batch(deliveries, apply)
            if on_applied is not None and applied:
                on_applied([d for d in deliveries[:done] if d.event.event_id in applied])
            if on_duplicate is not None:
                seen = [d for d in deliveries[:done] if d.event.event_id not in applied]
                if seen:
                    on_duplicate(seen)
            return BatchOutcome(done, error)

        return handle

    async def apply_batch(
        self, deliveries: Sequence[Delivery], apply: _Apply
    ) -> tuple[int, set[Any], Exception | None]:
        """Apply the events of ``deliveries`` in order in one transaction: ``(done, applied
        ids, error)``.

        ``deliveries[:done]`` are committed (those in ``applied`` had their effect, the others
        were applied before); when ``error`` is set, ``deliveries[done]`` raised it and those
        after it did not run. A failure rolls the transaction back and commits the events
        before the failed one again (so an effect may run twice for them; one commit counts).
        """
        end, error = len(deliveries), None
        while end > 0:
            try:
                return end, await self._transaction(deliveries[:end], apply), error
            except _EffectFailed as failure:
                if failure.index is None:  # somewhere in a batch effect: one at a time
                    return await self._one_by_one(deliveries[:end], apply)
                end, error = failure.index, failure.error
        return 0, set(), error

    async def _one_by_one(
        self, deliveries: Sequence[Delivery], apply: _Apply
    ) -> tuple[int, set[Any], Exception | None]:
        applied: set[Any] = set()
        for index, delivery in enumerate(deliveries):
            try:
                applied |= await self._transaction([delivery], apply)
            except _EffectFailed as failure:
                return index, applied, failure.error
        return len(deliveries), applied, None

    async def _transaction(self, deliveries: Sequence[Delivery], apply: _Apply) -> set[Any]:
        events = [delivery.event for delivery in deliveries]
        async with self.engine.begin() as conn:
            claimed = await conn.execute(
                _CLAIM,
                {
                    "consumer": self.consumer,
                    "ids": [e.event_id for e in events],
                    "types": [e.event_type for e in events],
                },
            )
            fresh = set(claimed.scalars())
            todo: list[Delivery] = []
            for delivery in deliveries:
                if delivery.event.event_id in fresh:
                    fresh.discard(delivery.event.event_id)  # twice in one batch: applied once
                    todo.append(delivery)
            if todo:
                try:
                    await apply(conn, todo)
                except _EffectFailed as failure:
                    if failure.index is None and len(deliveries) > 1:
                        raise
                    failed = todo[failure.index or 0]
                    index = next(i for i, d in enumerate(deliveries) if d is failed)
                    raise _EffectFailed(index, failure.error) from failure.error
            self.checkpoints.reached("after_effect_before_commit")
        return {delivery.event.event_id for delivery in todo}

    async def seen(self, event_id: Any) -> bool:
        async with self.engine.connect() as conn:
            found = await conn.execute(
                inbox_table.select().where(
                    inbox_table.c.consumer == self.consumer, inbox_table.c.event_id == event_id
                )
            )
            return found.first() is not None

    async def purge(self, older_than_seconds: float) -> int:
        """Forget records older than the longest time a duplicate can still arrive (at least
        the stream's max age)."""
        cutoff = func.now() - text("make_interval(secs => :secs)").bindparams(
            secs=older_than_seconds
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(inbox_table).where(
                    inbox_table.c.consumer == self.consumer, inbox_table.c.processed_at < cutoff
                )
            )
            return int(result.rowcount)
