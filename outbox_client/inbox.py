"""Exactly-once effects for consumers: the inbox.

JetStream delivers at least once (redeliveries, and re-publishes past the duplicate window).
The inbox records ``(consumer, event_id)`` in the consumer's own database *in the same
transaction* as the handler's effect: an event seen before is acknowledged and skipped.

>>> inbox = Inbox(engine, consumer="notes-service")  # doctest: +SKIP
>>> async def create_notebook(conn: AsyncConnection, event: BaseEvent) -> None:  # doctest: +SKIP
...     await conn.execute(insert(notebooks).values(course_code=event.course_code))
>>> await consumer.subscribe(inbox.handler(create_notebook))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox_client.events.base import BaseEvent
from outbox_client.table import inbox as inbox_table

Effect = Callable[[AsyncConnection, BaseEvent], Awaitable[None]]
Handler = Callable[[BaseEvent, Any], Awaitable[None]]


class Inbox:
    """Records applied events of one consumer (``consumer`` names it: one inbox per service)."""

    def __init__(self, engine: AsyncEngine, consumer: str) -> None:
        if not consumer:
            raise ValueError("Inbox needs a consumer name, e.g. Inbox(engine, 'notes-service')")
        self.engine = engine
        self.consumer = consumer

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
