from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import outbox_client
from outbox_client import (
    ACADEMIC_EVENTS,
    ALL_EVENTS,
    NOTES_EVENTS,
    AssignmentCreatedEvent,
    BaseEvent,
    ClassScheduleCreatedEvent,
    CourseCreatedEvent,
    CourseUpdatedEvent,
    EventDecodeError,
    EventMetadata,
    GenericEvent,
    Header,
    LabSessionCreatedEvent,
    UnknownEventTypeError,
    decode_event,
    event_type_of,
)
from tests.strategies import events

ENTITIES = ["course", "assignment", "exam", "quiz", "lab", "study", "challenge", "schedule"]
ACTIONS = ["created", "read", "updated", "deleted"]
DUE = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)


def course(**overrides: object) -> CourseCreatedEvent:
    fields: dict[str, object] = {
        "course_code": "CS101",
        "course_name": "Intro to Computer Science",
        "semester": "Fall 2025",
        "credits": 3,
        "instructor": "Dr. Smith",
    }
    return CourseCreatedEvent(**(fields | overrides))


def test_the_catalog_has_every_entity_and_action_on_the_described_subjects() -> None:
    subjects = sorted(event_type_of(cls) for cls in ACADEMIC_EVENTS)
    assert subjects == sorted(f"academic.{e}.{a}" for e in ENTITIES for a in ACTIONS)
    assert len(ACADEMIC_EVENTS) == 32
    assert all(event_type_of(cls).startswith("notes.") for cls in NOTES_EVENTS)
    for cls in ALL_EVENTS:
        assert getattr(outbox_client, cls.__name__) is cls
        assert cls.partition_key_field in cls.model_fields, cls


def test_description_example_builds_and_carries_its_envelope() -> None:
    event = course(metadata=EventMetadata(source_service="schedule-service", user_id="s_123"))
    assert event.subject == "academic.course.created"
    assert event.partition_key == "CS101"
    assert event.event_id.version == 7
    assert event.occurred_at.tzinfo is UTC
    assert event.schema_version == 1
    headers = event.nats_headers()
    assert headers[Header.EVENT_TYPE] == "academic.course.created"
    assert headers[Header.SOURCE_SERVICE] == "schedule-service"


def test_event_ids_are_time_ordered() -> None:
    ids = [course().event_id for _ in range(50)]
    assert [i.bytes[:6] for i in ids] == sorted(i.bytes[:6] for i in ids)
    assert len(set(ids)) == 50


def test_bytes_are_compact_json_without_nulls() -> None:
    data = course().to_bytes()
    assert b": " not in data and b", " not in data
    assert b"null" not in data
    assert json.loads(data)["course_code"] == "CS101"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"course_code": ""}, "course_code"),
        ({"course_code": "CS 101"}, "course_code"),
        ({"credits": -1}, "credits"),
        ({"course_name": "   "}, "course_name"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_course_is_rejected_naming_the_field(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        course(**overrides)
    assert field in str(info.value)


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        AssignmentCreatedEvent(
            assignment_id="hw1", course_code="CS101", title="HW 1",
            due_date=datetime(2026, 12, 1), max_points=10,
        )  # fmt: skip


def test_aware_datetimes_are_normalised_to_utc() -> None:
    local = datetime(2026, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    event = AssignmentCreatedEvent(
        assignment_id="hw1", course_code="CS101", title="HW 1", due_date=local, max_points=10
    )
    assert event.due_date == local
    assert event.due_date.tzinfo is UTC


def test_spans_must_end_after_they_start() -> None:
    with pytest.raises(ValidationError, match="end must be after the start"):
        LabSessionCreatedEvent(
            lab_id="lab1", course_code="CS101", title="Lab", location="B12",
            start_time=DUE, end_time=DUE - timedelta(hours=1),
        )  # fmt: skip
    with pytest.raises(ValidationError, match="end must be after the start"):
        ClassScheduleCreatedEvent(
            schedule_id="s1", course_code="CS101", location="A1",
            starts_at=DUE, ends_at=DUE,
        )  # fmt: skip


def test_updates_must_change_something_and_say_what() -> None:
    with pytest.raises(ValidationError, match="set at least one of"):
        CourseUpdatedEvent(course_code="CS101")
    update = CourseUpdatedEvent(course_code="CS101", credits=4)
    assert update.changed_fields() == {"credits": 4}


def test_metadata_rejects_header_breaking_characters() -> None:
    with pytest.raises(ValidationError, match="CR, LF"):
        EventMetadata(source_service="svc", correlation_id="a\r\nb")


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_every_class_round_trips_exactly(cls: type[BaseEvent], data: st.DataObject) -> None:
    event = data.draw(events(cls))
    raw = event.to_bytes()
    back = decode_event(raw)
    assert type(back) is cls
    assert back == event
    assert back.to_bytes() == raw


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_every_class_rejects_a_missing_key(cls: type[BaseEvent]) -> None:
    with pytest.raises(ValidationError) as info:
        cls()
    assert cls.partition_key_field in str(info.value)


def test_unknown_type_is_a_typed_error_or_an_explicit_generic_event() -> None:
    raw = json.dumps({"event_type": "academic.grade.created", "grade": "A"}).encode()
    with pytest.raises(UnknownEventTypeError, match=r"academic\.grade\.created"):
        decode_event(raw)
    generic = decode_event(raw, unknown="generic")
    assert isinstance(generic, GenericEvent)
    assert generic.event_type == "academic.grade.created"
    assert generic.model_extra == {"grade": "A"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "event_type"),
        (b'{"event_type": 5}', "event_type"),
        (b'{"event_type": "academic.course.created", "course_code": "CS101"}', "course_name"),
    ],
)
def test_bad_bytes_give_a_decode_error_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode_event(raw)
