"""Every exception ``outbox_client`` raises derives from :class:`OutboxError`."""

from __future__ import annotations


class OutboxError(Exception):
    """Root of the package's exceptions."""


class UnknownEventTypeError(OutboxError):
    """Bytes carry an ``event_type`` that no registered class handles."""

    def __init__(self, event_type: object) -> None:
        super().__init__(
            f"unknown event_type {event_type!r}: register a class for it with "
            "outbox_client.register_event(), or decode with unknown='generic' to get a GenericEvent"
        )
        self.event_type = event_type


class EventDecodeError(OutboxError):
    """Bytes are not a valid event (not JSON, no event_type, or fields that fail validation)."""


class EnqueueError(OutboxError):
    """``enqueue`` was called with something that is not an event or not a session/connection."""
