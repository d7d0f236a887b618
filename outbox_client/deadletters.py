"""The consumers' dead-letter stream: list what failed, and replay it to its original subject.

>>> for letter in await list_dead_letters(client):  # doctest: +SKIP
...     print(letter.seq, letter.original_subject, letter.reason)
>>> await replay_dead_letter(client, seq=3)  # doctest: +SKIP
"""

from __future__ import annotations

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
                event_id=headers.get("Nats-Msg-Id", "").rsplit(":", 1)[-1],
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
    original_id = stored.get(Header.MSG_ID.value, "").rsplit(":", 1)[-1]
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
