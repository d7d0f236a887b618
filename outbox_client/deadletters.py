"""The consumers' dead-letter stream: list what failed, and replay it to its original subject.

>>> for letter in await list_dead_letters(client):  # doctest: +SKIP
...     print(letter.seq, letter.original_subject, letter.reason)
>>> await replay_dead_letter(client, seq=3)  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from nats.js.errors import NotFoundError

from outbox_client.client import NATSClient
from outbox_client.consumer import DEAD_LETTER_STREAM, PAYLOAD_OMITTED_HEADER
from outbox_client.errors import OutboxError
from outbox_client.headers import Header
from outbox_client.policy import headers_problem, subject_problem

_DEAD_HEADERS = (
    "Vertector-Dead-Reason",
    "Vertector-Original-Subject",
    "Vertector-Original-Stream",
    "Vertector-Original-Seq",
    "Vertector-Consumer",
    "Vertector-Deliveries",
    "Vertector-Dead-Headers",
)


def letter_event_id(headers: Mapping[str, str]) -> str:
    """The event id in a dead letter's own ``Nats-Msg-Id``, ``dl:<consumer>:<original id>``.

    The original is the event id, or ``<event_id>:<label>`` after ``vertector-relay replay
    --fresh-ids``, or ``<event_id>:replay:<seq>`` after a dead-letter replay: the event id is
    what comes before its first colon (an event id, a UUID, has none).

    >>> event = "0b6e2c1e-0000-4000-8000-000000000001"
    >>> letter_event_id({"Nats-Msg-Id": f"dl:notes:{event}:replay-20261129T101500",
    ...                  "Vertector-Consumer": "notes"})
    '0b6e2c1e-0000-4000-8000-000000000001'
    """
    msg_id = headers.get(Header.MSG_ID.value, "")
    prefix = f"dl:{headers.get('Vertector-Consumer', '')}:"
    if msg_id.startswith(prefix):
        return msg_id[len(prefix) :].partition(":")[0]
    # Not written by publish_dead_letter as we know it: the first part that is an event id.
    return next((part for part in msg_id.split(":") if _is_uuid(part)), "")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    original_subject: str
    original_stream: str
    consumer: str
    deliveries: int
    reason: str
    event_id: str
    stored_at: datetime | None


async def list_dead_letters(
    client: NATSClient, *, limit: int = 100, stream: str = DEAD_LETTER_STREAM
) -> list[DeadLetter]:
    """The oldest ``limit`` dead letters (metadata only, no payloads)."""
    try:
        state = (await client.js.stream_info(stream)).state
    except NotFoundError:
        return []
    letters: list[DeadLetter] = []
    if state.messages == 0:  # an empty stream's first_seq is 0, which get_msg refuses
        return letters
    seq = state.first_seq
    while seq <= state.last_seq and len(letters) < limit:
        try:
            msg = await client.js.get_msg(stream, seq)
        except NotFoundError:  # deleted after a replay
            seq += 1
            continue
        headers = msg.headers or {}
        letters.append(
            DeadLetter(
                seq=seq,
                original_subject=headers.get("Vertector-Original-Subject", ""),
                original_stream=headers.get("Vertector-Original-Stream", ""),
                consumer=headers.get("Vertector-Consumer", ""),
                deliveries=int(headers.get("Vertector-Deliveries", "0")),
                reason=headers.get("Vertector-Dead-Reason", ""),
                event_id=letter_event_id(headers),
                stored_at=msg.time,
            )
        )
        seq += 1
    return letters


async def replay_dead_letter(
    client: NATSClient, seq: int, *, stream: str = DEAD_LETTER_STREAM
) -> int:
    """Publish dead letter ``seq`` to its original subject again and remove it from the
    dead-letter stream; returns the new stream sequence. The consumer's inbox still guards
    against a double effect."""
    try:
        msg = await client.js.get_msg(stream, seq)
    except NotFoundError as exc:
        raise OutboxError(f"no dead letter {seq} in {stream}: list them first") from exc
    stored = msg.headers or {}
    subject = stored.get("Vertector-Original-Subject")
    if not subject:
        raise OutboxError(f"dead letter {seq} has no Vertector-Original-Subject header")
    # Anyone who may publish to deadletter.> can write a dead letter: the same policy as the
    # producer's decides where, and with which headers, it may be sent again.
    problem = subject_problem(subject)
    if problem:
        raise OutboxError(f"dead letter {seq} not replayed: {problem}")
    if PAYLOAD_OMITTED_HEADER in stored:
        raise OutboxError(
            f"dead letter {seq} was stored without its payload ({stored[PAYLOAD_OMITTED_HEADER]}):"
            " nothing to replay; the producer must send the event again"
        )
    original_id = letter_event_id(stored)
    # Vertector-Replay: a relay replay's label on a message of an older release (the Msg-Id
    # below is new anyway), not a producer's header: dropped, not refused.
    headers = {
        k: v for k, v in stored.items()
        if k not in _DEAD_HEADERS and k not in (Header.MSG_ID.value, Header.REPLAY.value)
    }  # fmt: skip
    problem = headers_problem(headers)
    if problem:
        raise OutboxError(f"dead letter {seq} not replayed: {problem}")
    # A new Nats-Msg-Id: the original is still inside the stream's duplicate window, maybe.
    headers[Header.MSG_ID.value] = f"{original_id}:replay:{seq}"
    ack = await client.js.publish(subject, msg.data or b"", headers=headers)
    await client.js.delete_msg(stream, seq)
    return int(ack.seq)
