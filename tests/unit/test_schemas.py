"""Contracts from code, the compatibility rules, the gate and upcasting (no server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from outbox_client import (
    ALL_EVENTS,
    PREVIOUS_VERSIONS,
    BaseEvent,
    ClassScheduleCreatedEvent,
    ClassScheduleCreatedEventV1,
    EventDecodeError,
    Header,
    decode_event,
    event_versions,
    register_event,
)
from outbox_client.events.registry import _REGISTRY
from outbox_client.schemas import (
    Mode,
    breaking_changes,
    catalog,
    contract_of,
    read_snapshot,
    review,
    write_snapshot,
)
from tests.strategies import events

REPO = Path(__file__).resolve().parents[2]


# --- a small event type in several shapes, to evolve -----------------------------------------


class Base(BaseEvent):
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[int, Field(ge=0, le=100)]
    colour: Literal["red", "green", "blue"] = "red"
    note: str | None = None


class Removed(BaseEvent):  # note is gone
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[int, Field(ge=0, le=100)]
    colour: Literal["red", "green", "blue"] = "red"


class Renamed(BaseEvent):  # thing_id -> id
    event_type: Literal["test.thing.created"] = "test.thing.created"
    id: str
    size: Annotated[int, Field(ge=0, le=100)]
    colour: Literal["red", "green", "blue"] = "red"
    note: str | None = None


class Required(BaseEvent):  # note must be given
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[int, Field(ge=0, le=100)]
    colour: Literal["red", "green", "blue"] = "red"
    note: str


class Retyped(BaseEvent):  # size is a string now
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: str
    colour: Literal["red", "green", "blue"] = "red"
    note: str | None = None


class Narrowed(BaseEvent):  # fewer colours, smaller sizes
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[int, Field(ge=1, le=50)]
    colour: Literal["red", "green"] = "red"
    note: str | None = None


class Added(BaseEvent):  # a new optional field
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[int, Field(ge=0, le=100)]
    colour: Literal["red", "green", "blue"] = "red"
    note: str | None = None
    label: str | None = None


class Widened(BaseEvent):  # more colours, larger sizes, a float size
    event_type: Literal["test.thing.created"] = "test.thing.created"
    thing_id: str
    size: Annotated[float, Field(ge=0, le=1000)]
    colour: Literal["red", "green", "blue", "black"] = "red"
    note: str | None = None


def payload(cls: type[BaseEvent]) -> dict[str, Any]:
    return contract_of(cls).payload


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (Removed, "note: field removed (or renamed)"),
        (Renamed, "thing_id: field removed (or renamed)"),
        (Renamed, "id: new required field"),
        (Required, "note: optional field became required"),
        (Retyped, "size: type changed: integer is no longer accepted (now string)"),
        (Narrowed, 'colour: enum narrowed: "blue" no longer allowed'),
        (Narrowed, "size: lower bound raised from 0 to 1"),
        (Narrowed, "size: upper bound lowered from 100 to 50"),
    ],
)
def test_backward_breaks_are_named(new: type[BaseEvent], expected: str) -> None:
    problems = breaking_changes(payload(Base), payload(new), Mode.BACKWARD)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("new", [Added, Widened])
def test_adding_an_optional_field_and_widening_pass_backward(new: type[BaseEvent]) -> None:
    assert breaking_changes(payload(Base), payload(new), Mode.BACKWARD) == []


def test_forward_and_full_judge_from_the_old_consumer_and_none_allows_all() -> None:
    # An old consumer refuses a field it does not know (events are closed objects)...
    forward = breaking_changes(payload(Base), payload(Added), Mode.FORWARD)
    assert forward == [
        "label: field removed (or renamed): events that carry it are refused "
        "(for consumers still on the old version)"
    ]
    # ...and a narrowing is what an old consumer always reads.
    assert breaking_changes(payload(Base), payload(Narrowed), Mode.FORWARD) == []
    assert breaking_changes(payload(Base), payload(Added), Mode.FULL) == forward
    assert breaking_changes(payload(Base), payload(Removed), Mode.NONE) == []


def test_a_refs_target_is_compared_in_its_own_document() -> None:
    old = contract_of(Base).payload
    new = json.loads(json.dumps(old))
    new["$defs"]["EventMetadata"]["properties"]["source_service"]["maxLength"] = 10
    assert breaking_changes(old, new, Mode.BACKWARD) == [
        "metadata.source_service: maximum length lowered from 1024 to 10"
    ]


# --- contracts -------------------------------------------------------------------------------


def test_every_registered_version_has_a_contract_with_its_headers() -> None:
    contracts = {c.key: c for c in catalog()}
    expected = {f"{t}.v{v}" for t, versions in event_versions().items() for v in versions}
    assert set(contracts) == expected
    v1 = contracts["academic.schedule.created.v1"]
    v2 = contracts["academic.schedule.created.v2"]
    assert "delivery_mode" in v2.payload["properties"]
    assert "delivery_mode" not in v1.payload["properties"]
    headers = v2.headers["properties"]
    assert headers[Header.EVENT_TYPE]["const"] == "academic.schedule.created"
    assert headers[Header.SCHEMA_VERSION]["const"] == "2"
    assert Header.PARTITION_KEY.value in v2.headers["required"]


def test_the_committed_snapshot_matches_the_classes() -> None:
    result = review(catalog(), read_snapshot(REPO / "schemas"))
    assert result.breaks == []
    assert [c.key for c in result.new] == [], "run `vertector-relay schemas snapshot`"


def test_snapshot_files_round_trip_and_a_misnamed_file_is_refused(tmp_path: Path) -> None:
    contracts = catalog()
    assert len(write_snapshot(tmp_path, contracts)) == len(contracts)
    assert write_snapshot(tmp_path, contracts) == []  # unchanged files are not rewritten
    assert read_snapshot(tmp_path) == {c.key: c for c in contracts}
    (tmp_path / "academic.course.created.v1.json").rename(tmp_path / "wrong.json")
    with pytest.raises(Exception, match="must be named academic.course.created.v1.json"):
        read_snapshot(tmp_path)


# --- the gate ---------------------------------------------------------------------------------


class ThingV2Breaking(Removed):
    schema_version: Literal[2] = 2

    @classmethod
    def upcast(cls, previous: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in previous.items() if k != "note"} | {"schema_version": 2}


class ThingV2Free(ThingV2Breaking):
    compatibility: ClassVar[str] = "NONE"


class ThingV2Compatible(Added):
    schema_version: Literal[2] = 2

    @classmethod
    def upcast(cls, previous: dict[str, Any]) -> dict[str, Any]:
        return previous | {"schema_version": 2}


def published(*classes: type[BaseEvent]) -> dict[str, Any]:
    return {c.key: c for c in map(contract_of, classes)}


def test_a_changed_class_with_the_same_version_is_a_break_in_itself() -> None:
    result = review([contract_of(Added)], published(Base))
    assert result.breaks == [
        "test.thing.created.v1: changed without a new schema_version: undo the change, or "
        "make it version 2 with an upcaster",
        "test.thing.created.v1: label: field removed (or renamed): events that carry it are "
        "refused (for consumers still on the old version)",
    ]


def test_a_new_version_is_judged_against_the_one_before_under_its_mode() -> None:
    bad = review([contract_of(Base), contract_of(ThingV2Breaking)], published(Base))
    assert bad.breaks == [
        "test.thing.created.v2: note: field removed (or renamed): events that carry it are "
        "refused (incompatible with version 1 under BACKWARD)"
    ]
    good = review([contract_of(Base), contract_of(ThingV2Compatible)], published(Base))
    assert good.breaks == [] and [c.key for c in good.new] == ["test.thing.created.v2"]
    free = review([contract_of(Base), contract_of(ThingV2Free)], published(Base))
    assert free.breaks == []


def test_a_dropped_or_skipped_version_is_a_break() -> None:
    gone = review([contract_of(ThingV2Compatible)], published(Base))
    assert gone.breaks[0].startswith("test.thing.created.v1: published, but no class")
    skipped = review([contract_of(ThingV2Compatible)], {})
    assert skipped.breaks == ["test.thing.created.v2: version 1 is missing: versions of an "
                              "event type follow each other"]  # fmt: skip


# --- versions and upcasting -------------------------------------------------------------------

SPAN = {"starts_at": "2026-09-01T09:00:00Z", "ends_at": "2026-09-01T10:15:00Z"}


def v1_schedule(location: str) -> bytes:
    return ClassScheduleCreatedEventV1(
        schedule_id="s1",
        course_code="CS101",
        location=location,
        **SPAN,  # type: ignore[arg-type]
    ).to_bytes()


def test_a_v1_payload_decodes_into_the_current_class() -> None:
    online = decode_event(v1_schedule("https://meet.example/cs101"))
    assert type(online) is ClassScheduleCreatedEvent
    assert (online.schema_version, online.delivery_mode) == (2, "online")
    in_room = decode_event(v1_schedule("Room 101"))
    assert isinstance(in_room, ClassScheduleCreatedEvent)
    assert (in_room.schema_version, in_room.delivery_mode) == (2, "in_person")
    # Existing producers keep building the class as before; it is version 2 now.
    made = ClassScheduleCreatedEvent(schedule_id="s2", course_code="CS101", location="A1",
                                     **SPAN)  # type: ignore[arg-type]  # fmt: skip
    assert made.nats_headers()[Header.SCHEMA_VERSION] == "2"
    assert decode_event(made.to_bytes()) == made


def test_an_old_payload_is_held_to_its_own_contract_and_a_newer_one_is_refused() -> None:
    bad = json.loads(v1_schedule("Room 101"))
    bad["delivery_mode"] = "online"  # not a v1 field
    with pytest.raises(EventDecodeError, match="delivery_mode"):
        decode_event(json.dumps(bad))
    future = json.loads(v1_schedule("Room 101")) | {"schema_version": 3}
    with pytest.raises(EventDecodeError, match="version 3 is newer than this code knows"):
        decode_event(json.dumps(future))


def test_a_second_version_without_an_upcaster_is_refused_at_registration() -> None:
    class NoUpcast(BaseEvent):
        event_type: Literal["test.noupcast"] = "test.noupcast"
        schema_version: Literal[2] = 2

    with pytest.raises(TypeError, match="define the classmethod upcast"):
        register_event(NoUpcast)
    assert "test.noupcast" not in _REGISTRY


# --- the contracts are true to the classes ----------------------------------------------------


@pytest.mark.parametrize("cls", [*ALL_EVENTS, *PREVIOUS_VERSIONS], ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_a_class_builds_satisfies_its_contract(
    cls: type[BaseEvent], data: st.DataObject
) -> None:
    event = data.draw(events(cls))
    contract = contract_of(cls)
    payload = jsonschema_rs.validator_for(contract.payload, validate_formats=True)
    headers = jsonschema_rs.validator_for(contract.headers)
    assert [e.message for e in payload.iter_errors(json.loads(event.to_bytes()))] == []
    sent = event.nats_headers() | {Header.PARTITION_KEY.value: event.partition_key}
    assert [e.message for e in headers.iter_errors(sent)] == []
    # ...and the contract is not a blank cheque: a wrong type or a stray field is refused.
    assert not payload.is_valid(json.loads(event.to_bytes()) | {"unknown_field": 1})
    assert not payload.is_valid(json.loads(event.to_bytes()) | {"event_id": 42})
