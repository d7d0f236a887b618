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
from outbox_client.consumer import DEAD_LETTER_STREAM
from outbox_client.errors import OutboxError

_DEAD_HEADERS = (
    "Vertector-Dead-Reason",
    "Vertector-Original-Subject",
    "Vertector-Original-Stream",
    "Vertector-Original-Seq",
    "Vertector-Consumer",
    "Vertector-Deliveries",
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
    headers = {k: v for k, v in (msg.headers or {}).items() if k not in _DEAD_HEADERS}
    subject = (msg.headers or {}).get("Vertector-Original-Subject")
    if not subject:
        raise OutboxError(f"dead letter {seq} has no Vertector-Original-Subject header")
    # A new Nats-Msg-Id: the original is still inside the stream's duplicate window, maybe.
    original_id = headers.get("Nats-Msg-Id", "").rsplit(":", 1)[-1]
    headers["Nats-Msg-Id"] = f"{original_id}:replay:{seq}"
    ack = await client.js.publish(subject, msg.data or b"", headers=headers)
    await client.js.delete_msg(stream, seq)
    return int(ack.seq)
