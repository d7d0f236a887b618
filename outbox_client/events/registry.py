"""Bytes back to the right event class, by ``event_type``."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import ValidationError

from outbox_client.errors import EventDecodeError, UnknownEventTypeError
from outbox_client.events.academic import ACADEMIC_EVENTS
from outbox_client.events.base import BaseEvent, GenericEvent
from outbox_client.events.notes import NOTES_EVENTS

_REGISTRY: dict[str, type[BaseEvent]] = {}


def event_type_of(cls: type[BaseEvent]) -> str:
    """The ``event_type`` a class declares as its default."""
    default = cls.model_fields["event_type"].default
    if not isinstance(default, str):
        raise TypeError(f"{cls.__name__} must give event_type a Literal default")
    return default


def register_event(cls: type[BaseEvent]) -> type[BaseEvent]:
    """Make ``decode_event`` return ``cls`` for its ``event_type``; usable as a decorator.

    >>> from typing import Literal
    >>> @register_event
    ... class PingEvent(BaseEvent):
    ...     event_type: Literal["ops.ping"] = "ops.ping"
    >>> type(decode_event(PingEvent().to_bytes())).__name__
    'PingEvent'
    """
    event_type = event_type_of(cls)
    known = _REGISTRY.get(event_type)
    if known is not None and known is not cls:
        raise ValueError(f"event_type {event_type!r} is already registered to {known.__name__}")
    _REGISTRY[event_type] = cls
    return cls


def registered_events() -> dict[str, type[BaseEvent]]:
    """A copy of the registry: event_type -> class."""
    return dict(_REGISTRY)


def decode_event(data: bytes | str, *, unknown: Literal["error", "generic"] = "error") -> BaseEvent:
    """Parse event JSON into its registered class.

    An unknown type raises :class:`UnknownEventTypeError`, or with ``unknown="generic"``
    gives a :class:`GenericEvent` that keeps every field. Anything else that is wrong raises
    :class:`EventDecodeError` naming the problem.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"event bytes are not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str):
        raise EventDecodeError("event JSON must be an object with a string 'event_type'")
    cls = _REGISTRY.get(raw["event_type"])
    if cls is None:
        if unknown == "generic":
            cls = GenericEvent
        else:
            raise UnknownEventTypeError(raw["event_type"])
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise EventDecodeError(f"invalid {raw['event_type']} event: {exc}") from exc


for _cls in (*ACADEMIC_EVENTS, *NOTES_EVENTS):
    register_event(_cls)
