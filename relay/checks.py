"""Checks made before a message is sent, because the server answers these by dropping the
connection (and nats-py then does not reconnect)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from outbox_client.headers import Header
from relay.ports import Failure, OutboxRow, Verdict

#: Longest subject we send; the server's control line (subject + reply + sizes) is 4 KiB.
MAX_SUBJECT_LENGTH = 1024
_FORBIDDEN = set(" \t\r\n\f\v*>")


_BAD_VALUE = re.compile(r"[\r\n\0]")


def header_size(headers: Mapping[str, str]) -> int:
    """Bytes of the NATS/1.0 header block nats-py writes for ``headers`` (an upper bound:
    nats-py strips surrounding whitespace from values)."""
    text = "".join(headers) + "".join(headers.values())
    # "NATS/1.0\r\n" + "\r\n" at the end, and ": " + "\r\n" per header.
    return 12 + 4 * len(headers) + len(text.encode())


@lru_cache(maxsize=4096)
def subject_problem(subject: str) -> str | None:
    """Why ``subject`` cannot be published to, or ``None``."""
    if not subject:
        return "empty subject"
    if len(subject) > MAX_SUBJECT_LENGTH:
        return f"subject of {len(subject)} characters (limit {MAX_SUBJECT_LENGTH})"
    if _FORBIDDEN & set(subject):
        return "subject contains whitespace or a wildcard (* or >)"
    if any(token == "" for token in subject.split(".")):
        return "subject has an empty token (leading, trailing or double dot)"
    return None


def outgoing_headers(row: OutboxRow) -> dict[str, str]:
    """Stored headers plus ``Nats-Msg-Id = event_id``, which the relay always sets."""
    headers = dict(row.headers)
    headers[Header.MSG_ID.value] = str(row.event_id)
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
    size = len(row.payload) + header_size(headers)
    if size > max_payload:
        return Failure(
            Verdict.POISON,
            f"message of {size} bytes (payload {len(row.payload)} + headers) is over the "
            f"server's max_payload of {max_payload}",
        )
    return None
