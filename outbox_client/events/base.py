"""The event envelope: :class:`BaseEvent`, :class:`EventMetadata` and the shared field types."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from outbox_client.headers import PRODUCED_BY_OUTBOX_CLIENT, Header, check_header_value
from outbox_client.ids import uuid7


def _no_control_chars(value: str) -> str:
    return check_header_value("metadata", value)


#: A non-empty identifier such as ``CS101`` or ``hw-3``: no spaces, no dots (subjects use dots).
Code = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-:]+$"
    ),
]
#: Free text that must say something.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
#: A value that travels in a NATS header.
HeaderText = Annotated[
    str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_control_chars)
]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


#: An aware datetime, normalised to UTC so that the bytes of one instant are always the same.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventMetadata(BaseModel):
    """Who caused an event and how it links to others.

    >>> EventMetadata(source_service="schedule-service", user_id="student_123").user_id
    'student_123'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_service: HeaderText = "unspecified"
    correlation_id: HeaderText | None = None
    causation_id: HeaderText | None = None
    user_id: HeaderText | None = None
    #: W3C trace context; filled at enqueue when OpenTelemetry is active.
    traceparent: HeaderText | None = None
    tracestate: HeaderText | None = None


class BaseEvent(BaseModel):
    """Every event: an id, a type (which is also its NATS subject), a time and metadata.

    Subclasses set ``event_type`` as a ``Literal`` default and name the field that identifies
    their aggregate in ``partition_key_field``; events of one aggregate keep their order.

    >>> from outbox_client import CourseCreatedEvent
    >>> e = CourseCreatedEvent(course_code="CS101", course_name="Intro", semester="Fall 2025",
    ...                        credits=3, instructor="Dr. Smith")
    >>> (e.subject, e.partition_key)
    ('academic.course.created', 'CS101')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    partition_key_field: ClassVar[str] = ""
    #: How each new ``schema_version`` of this event type must relate to the previous one:
    #: ``BACKWARD`` (consumers of the new version read old events), ``FORWARD``, ``FULL`` or
    #: ``NONE``. ``vertector-relay schemas check`` enforces it.
    compatibility: ClassVar[str] = "BACKWARD"

    event_id: uuid.UUID = Field(default_factory=uuid7)
    event_type: str
    schema_version: int = Field(default=1, ge=1)
    occurred_at: UtcDatetime = Field(default_factory=_utcnow)
    metadata: EventMetadata = Field(default_factory=EventMetadata)

    @classmethod
    def upcast(cls, previous: dict[str, Any]) -> dict[str, Any]:
        """Turn a payload of the previous ``schema_version`` into one of this class's version.

        A class with ``schema_version`` above 1 defines it; ``decode_event`` chains the steps,
        so a consumer always receives the current class.
        """
        raise NotImplementedError(f"{cls.__name__} has no earlier version to upcast from")

    @property
    def subject(self) -> str:
        """The NATS subject: the event type, as the product description lists them."""
        return self.event_type

    @property
    def partition_key(self) -> str:
        """The aggregate's identity; events with the same key are delivered in commit order."""
        value = getattr(self, self.partition_key_field, None) if self.partition_key_field else None
        return str(value) if value is not None else str(self.event_id)

    def to_bytes(self) -> bytes:
        """Compact JSON without nulls: exactly the bytes the relay publishes."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)

    def nats_headers(self) -> dict[str, str]:
        """Headers the relay sends with the payload (``Nats-Msg-Id`` is added by the relay)."""
        metadata = self.metadata
        headers = {
            _EVENT_TYPE: self.event_type,
            _SCHEMA_VERSION: str(self.schema_version),
            _SOURCE_SERVICE: metadata.source_service,
            _PRODUCER: PRODUCED_BY_OUTBOX_CLIENT,
        }
        for name, field in _OPTIONAL_HEADERS:  # every enqueue asks: no enum look-ups here
            value = getattr(metadata, field)
            if value:
                headers[name] = value
        return headers


_EVENT_TYPE = Header.EVENT_TYPE.value
_SCHEMA_VERSION = Header.SCHEMA_VERSION.value
_SOURCE_SERVICE = Header.SOURCE_SERVICE.value
_PRODUCER = Header.PRODUCER.value
#: Headers sent when the metadata field is set, in this order.
_OPTIONAL_HEADERS = (
    (Header.CORRELATION_ID.value, "correlation_id"),
    (Header.CAUSATION_ID.value, "causation_id"),
    (Header.TRACEPARENT.value, "traceparent"),
    (Header.TRACESTATE.value, "tracestate"),
)


class GenericEvent(BaseEvent):
    """An event whose type no class is registered for; its other fields stay as they came."""

    model_config = ConfigDict(frozen=True, extra="allow")


_CHANGE_FIELDS: dict[type[BaseEvent], tuple[str, ...]] = {}


class UpdatedEvent(BaseEvent):
    """An update carries only the fields that changed: at least one must be set."""

    @model_validator(mode="after")
    def _at_least_one_change(self) -> UpdatedEvent:
        names = self._change_field_names()
        for name in names:  # a loop, not a generator: every decoded update runs this
            if getattr(self, name) is not None:
                return self
        raise ValueError(
            f"{type(self).__name__} carries no change: set at least one of {', '.join(names)}"
        )

    @classmethod
    def _change_field_names(cls) -> tuple[str, ...]:
        # Changes are the optional fields; required ones (the key, its parent) give context.
        # Worked out once per class: every decoded update asks.
        names = _CHANGE_FIELDS.get(cls)
        if names is None:
            names = _CHANGE_FIELDS[cls] = tuple(
                name
                for name, info in cls.model_fields.items()
                if name not in BaseEvent.model_fields
                and not info.is_required()
                and info.default is None
            )
        return names

    def changed_fields(self) -> dict[str, Any]:
        """The changed fields and their new values."""
        return {
            name: getattr(self, name)
            for name in self._change_field_names()
            if getattr(self, name) is not None
        }


class ReadEvent(BaseEvent):
    """An audit record that an aggregate was read."""

    requested_by: HeaderText | None = None


class DeletedEvent(BaseEvent):
    """An aggregate was removed."""

    reason: Annotated[str, StringConstraints(max_length=1000)] | None = None
