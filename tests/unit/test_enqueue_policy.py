"""``enqueue`` applies the message policy (outbox_client.policy) before anything is staged:
an event the relay could never publish is refused at once, with the reason and the fix."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from outbox_client import (
    CourseCreatedEvent,
    EnqueueError,
    GenericEvent,
    enqueue,
    enqueue_many,
    with_events,
)
from outbox_client.policy import MAX_HEADER_BLOCK, header_block_size

pytestmark = pytest.mark.unit


def course(code: str = "CS101") -> CourseCreatedEvent:
    return CourseCreatedEvent(
        course_code=code, course_name="Intro", semester="Fall 2025", credits=3,
        instructor="Dr. Smith",
    )  # fmt: skip


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.STREAM.PURGE.ACADEMIC_EVENTS",
        "$JS.API.STREAM.DELETE.NOTES_EVENTS",
        "$SYS.REQ.SERVER.PING",
        "_INBOX.abc",
        "academic.course.*",
        "academic..created",
        "academic.course created",
    ],
)
def test_a_subject_no_producer_may_publish_to_is_refused(subject: str) -> None:
    with Session() as session, pytest.raises(EnqueueError) as refused:
        enqueue(session, GenericEvent(event_type=subject))
    message = str(refused.value)
    assert "is not a subject a producer may publish to" in message
    assert "use one of your own" in message  # the fix
    assert not session.new  # nothing staged


def test_an_oversize_partition_key_is_refused_naming_it() -> None:
    with Session() as session, pytest.raises(EnqueueError) as refused:
        enqueue(session, course(), partition_key="k" * 100_000)
    message = str(refused.value)
    assert "header block of" in message
    assert "the partition key is 100000 characters" in message
    assert "keep them short" in message


def test_the_header_block_leaves_room_for_the_relays_msg_id() -> None:
    # A block that fits 64 KiB, but not with the Nats-Msg-Id the relay adds.
    ev = course()
    rest = header_block_size(ev.nats_headers() | {"Vertector-Partition-Key": ""})
    with Session() as session, pytest.raises(EnqueueError, match="header block"):
        enqueue(session, ev, partition_key="k" * (MAX_HEADER_BLOCK - rest - 10))


@pytest.mark.parametrize("key", ["k" * 100_000, "a\r\nNats-Rollup: all", "nul\0", 7])
def test_a_refusal_reads_the_same_once_the_header_names_are_remembered(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks remember header names they accepted (outbox_client.policy); an event with
    those names and a bad value is refused word for word as when nothing was remembered."""
    from outbox_client import policy

    monkeypatch.setattr(policy, "_accepted_names", {})  # nothing remembered yet
    monkeypatch.setattr(policy, "_accepted_names_with_reserved", {})
    monkeypatch.setattr(policy, "_unreserved_names", set())
    ev = course()

    def refusal() -> str:
        with Session() as session, pytest.raises(EnqueueError) as refused:
            enqueue(session, ev, partition_key=key)
        assert not session.new
        return str(refused.value)

    first = refusal()
    with Session() as session:
        enqueue(session, course("CS102"))  # the same names, accepted: now remembered
    assert (*ev.nats_headers(), "Vertector-Partition-Key", "Nats-Msg-Id") in (
        policy._accepted_names_with_reserved
    )
    assert refusal() == first


@pytest.mark.parametrize("key", ["a\r\nNats-Rollup: all", "nul\0", "x\n"])
def test_a_partition_key_that_would_be_mangled_is_refused(key: str) -> None:
    with Session() as session, pytest.raises(EnqueueError, match="CR, LF or NUL"):
        enqueue(session, course(), partition_key=key)


def test_a_partition_key_that_is_not_text_is_refused() -> None:
    with Session() as session, pytest.raises(EnqueueError, match="type int"):
        enqueue(session, course(), partition_key=7)  # type: ignore[arg-type]


def test_every_entry_point_applies_the_policy() -> None:
    bad = GenericEvent(event_type="$JS.API.STREAM.PURGE.ACADEMIC_EVENTS")
    with Session() as session:
        with pytest.raises(EnqueueError, match="reserved namespace"):
            enqueue_many(session, [course(), bad])
        assert not session.new  # all or nothing
    from sqlalchemy import column, insert, table

    with pytest.raises(EnqueueError, match="reserved namespace"):
        with_events(insert(table("t", column("x"))).values(x=1), bad)


@pytest.mark.parametrize("name", ["Nats-Rollup", "Nats-Msg-Id", "nats-ttl", "Vertector-Replay"])
async def test_a_reserved_header_from_an_event_class_is_refused_by_every_producer_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``enqueue`` checked an event's own headers with the relay's allowance for Nats-*: a
    class whose ``nats_headers()`` adds ``Nats-Rollup`` (or its own ``Nats-Msg-Id``) got
    through. Every producer path now refuses it, naming the header and the fix."""
    from sqlalchemy import column, insert, table

    from outbox_client import EventPublisher, PublishFailedError
    from tests.unit.test_publisher_retry import Client, FlakyJetStream

    plain = CourseCreatedEvent.nats_headers
    monkeypatch.setattr(CourseCreatedEvent, "nats_headers", lambda self: plain(self) | {name: "x"})
    event = course()
    with Session() as session:
        for call in (
            lambda: enqueue(session, event),
            lambda: enqueue_many(session, [event]),
            lambda: with_events(insert(table("t", column("x"))).values(x=1), event),
        ):
            with pytest.raises(EnqueueError) as refused:
                call()
            message = str(refused.value)
            assert f"its headers set {name!r}" in message
            assert "remove it from nats_headers()" in message
        assert not session.new
    js = FlakyJetStream(failures=0)
    with pytest.raises(PublishFailedError, match=f"its headers set {name!r}"):
        await EventPublisher(Client(js)).publish(event)  # type: ignore[arg-type]
    assert js.calls == 0  # refused before anything was sent


async def test_the_direct_publisher_refuses_a_reserved_subject_too() -> None:
    from outbox_client import EventPublisher, PublishFailedError
    from tests.unit.test_publisher_retry import Client, FlakyJetStream

    js = FlakyJetStream(failures=0)
    bad = GenericEvent(event_type="$JS.API.STREAM.PURGE.ACADEMIC_EVENTS")
    with pytest.raises(PublishFailedError, match=r"reserved namespace \(\$JS\)"):
        await EventPublisher(Client(js)).publish(bad)  # type: ignore[arg-type]
    assert js.calls == 0
