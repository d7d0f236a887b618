"""Bytes back to the right event class, by ``event_type`` and ``schema_version``.

Each event type may have several versions; the highest registered one is *current*. An event
of an older version is validated against its own class, then upcast step by step
(``Class.upcast``) to the current class: consumers see only current classes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ValidationError

from outbox_client.errors import EventDecodeError, UnknownEventTypeError
from outbox_client.events.academic import ACADEMIC_EVENTS
from outbox_client.events.base import BaseEvent, GenericEvent
from outbox_client.events.history import PREVIOUS_VERSIONS
from outbox_client.events.notes import NOTES_EVENTS

_REGISTRY: dict[str, dict[int, type[BaseEvent]]] = {}


def event_type_of(cls: type[BaseEvent]) -> str:
    """The ``event_type`` a class declares as its default."""
    default = cls.model_fields["event_type"].default
    if not isinstance(default, str):
        raise TypeError(f"{cls.__name__} must give event_type a Literal default")
    return default


def schema_version_of(cls: type[BaseEvent]) -> int:
    """The ``schema_version`` a class declares as its default (1 unless it says otherwise)."""
    default = cls.model_fields["schema_version"].default
    if not isinstance(default, int) or isinstance(default, bool) or default < 1:
        raise TypeError(f"{cls.__name__} must give schema_version a positive integer default")
    return default


def register_event(cls: type[BaseEvent]) -> type[BaseEvent]:
    """Make ``decode_event`` return ``cls`` for its ``event_type``; usable as a decorator.

    A class whose ``schema_version`` is above 1 must define ``upcast`` (from the version
    before it).

    >>> from typing import Literal
    >>> @register_event
    ... class PingEvent(BaseEvent):
    ...     event_type: Literal["ops.ping"] = "ops.ping"
    >>> type(decode_event(PingEvent().to_bytes())).__name__
    'PingEvent'
    """
    event_type, version = event_type_of(cls), schema_version_of(cls)
    known = _REGISTRY.get(event_type, {}).get(version)
    if known is not None and known is not cls:
        raise ValueError(
            f"event_type {event_type!r} version {version} is already registered to {known.__name__}"
        )
    if version > 1 and "upcast" not in vars(cls):
        raise TypeError(
            f"{cls.__name__} is schema_version {version} of {event_type!r}: define the "
            f"classmethod upcast(previous) that turns a version {version - 1} payload into "
            f"version {version}"
        )
    _REGISTRY.setdefault(event_type, {})[version] = cls
    return cls


def registered_events() -> dict[str, type[BaseEvent]]:
    """A copy of the registry: event_type -> current class."""
    return {event_type: versions[max(versions)] for event_type, versions in _REGISTRY.items()}


def event_versions() -> dict[str, dict[int, type[BaseEvent]]]:
    """Every registered class: event_type -> schema_version -> class."""
    return {event_type: dict(versions) for event_type, versions in _REGISTRY.items()}


def decode_event(data: bytes | str, *, unknown: Literal["error", "generic"] = "error") -> BaseEvent:
    """Parse event JSON into its registered class, upcast to the current version.

    An unknown type raises :class:`UnknownEventTypeError`, or with ``unknown="generic"``
    gives a :class:`GenericEvent` that keeps every field. Anything else that is wrong
    (including a ``schema_version`` newer than this code knows) raises
    :class:`EventDecodeError` naming the problem.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"event bytes are not JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str):
        raise EventDecodeError("event JSON must be an object with a string 'event_type'")
    event_type = raw["event_type"]
    versions = _REGISTRY.get(event_type)
    if versions is None:
        if unknown == "generic":
            return _validate(GenericEvent, raw)
        raise UnknownEventTypeError(event_type)
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventDecodeError(f"invalid {event_type} event: schema_version must be an integer")
    current = max(versions)
    if version == current:
        return _validate(versions[current], raw)
    if version > current:
        raise EventDecodeError(
            f"{event_type} schema_version {version} is newer than this code knows (up to "
            f"{current}): upgrade outbox_client in this service"
        )
    return _validate(versions[current], _upcast(raw, event_type, version, versions))


def _upcast(
    raw: dict[str, Any], event_type: str, version: int, versions: dict[int, type[BaseEvent]]
) -> dict[str, Any]:
    if version not in versions:
        raise EventDecodeError(f"{event_type} schema_version {version} has no registered class")
    _validate(versions[version], raw)  # an old payload must hold to its own contract
    data = raw
    for step in range(version + 1, max(versions) + 1):
        cls = versions.get(step)
        if cls is None:
            raise EventDecodeError(
                f"{event_type} has no class for schema_version {step}: cannot upcast past it"
            )
        try:
            data = cls.upcast(data)
        except Exception as exc:  # an upcaster's bug becomes this event's decode error
            raise EventDecodeError(
                f"upcasting {event_type} from version {step - 1} to {step} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return data


def _validate(cls: type[BaseEvent], raw: dict[str, Any]) -> BaseEvent:
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise EventDecodeError(f"invalid {raw['event_type']} event: {exc}") from exc


for _cls in (*PREVIOUS_VERSIONS, *ACADEMIC_EVENTS, *NOTES_EVENTS):
    register_event(_cls)
