"""Checks made before a message is sent, because the server answers these by dropping the
connection (and nats-py then does not reconnect)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from outbox_client.headers import Header
from outbox_client.policy import header_block_size, subject_problem
from relay.ports import Failure, OutboxRow, Verdict

_BAD_VALUE = re.compile(r"[\r\n\0]")


def outgoing_headers(row: OutboxRow) -> dict[str, str]:
    """Stored headers plus ``Nats-Msg-Id = event_id``, which the relay always sets (with the
    replay's label after a colon when ``replay --fresh-ids`` marked the row)."""
    headers = dict(row.headers)
    replay = headers.get(Header.REPLAY.value)
    msg_id = str(row.event_id)
    headers[Header.MSG_ID.value] = f"{msg_id}:{replay}" if replay else msg_id
    return headers


def precheck(row: OutboxRow, headers: Mapping[str, str], max_payload: int) -> Failure | None:
    """A poison verdict when the message can never be sent as it is, else ``None``."""
    problem = subject_problem(row.subject)
    if problem:
        return Failure(Verdict.POISON, f"invalid subject: {problem}")
    # nats-py rejects bad keys itself (BadHeaderError, a poison verdict) but silently turns
    # CR/LF in values into spaces: refuse those here. One scan over all values.
    if _BAD_VALUE.search("".join(headers.values())):
        return Failure(Verdict.POISON, "invalid header value: CR, LF or NUL in it")
    size = len(row.payload) + header_block_size(headers)
    if size > max_payload:
        return Failure(
            Verdict.POISON,
            f"message of {size} bytes (payload {len(row.payload)} + headers) is over the "
            f"server's max_payload of {max_payload}",
        )
    return None
