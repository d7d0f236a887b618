"""Earlier versions of event types, frozen as they were published.

Events of these versions may still sit in a stream (or in an outbox written by an older
producer). ``decode_event`` validates them against their own class here, then upcasts them
step by step to the current class, so a consumer never sees a version it cannot read.
Never edit a class in this module: its contract is committed in ``schemas/`` and
``vertector-relay schemas check`` refuses a change to a published version.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from outbox_client.events.academic import Recurrence, _check_span
from outbox_client.events.base import BaseEvent, Code, Text, UtcDatetime


class ClassScheduleCreatedEventV1(BaseEvent):
    """``academic.schedule.created`` version 1: no ``delivery_mode``."""

    partition_key_field = "schedule_id"
    event_type: Literal["academic.schedule.created"] = "academic.schedule.created"
    schedule_id: Code
    course_code: Code
    starts_at: UtcDatetime
    ends_at: UtcDatetime
    location: Text
    recurrence: Recurrence = "weekly"
    repeat_until: UtcDatetime | None = None
    instructor: Text | None = None

    @model_validator(mode="after")
    def _span(self) -> ClassScheduleCreatedEventV1:
        _check_span(self.starts_at, self.ends_at, "class schedule")
        _check_span(self.starts_at, self.repeat_until, "class schedule repeat_until")
        return self


PREVIOUS_VERSIONS: tuple[type[BaseEvent], ...] = (ClassScheduleCreatedEventV1,)
