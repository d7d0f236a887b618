"""What the relay lets out, checked before a row is sent: the message policy of
:mod:`outbox_client.policy` (reserved subjects and headers, sizes) plus the relay's own routes
(a subject no configured stream captures is never published). The checks answer why a row may
not go; :func:`relay.classify.refused` makes that poison: quarantined with the reason, never
sent, never retried.

Rows come from a table any producer role may insert into, so nothing of a row is trusted until
it has passed here: the headers may be any JSON value, the subject any text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from outbox_client.headers import Header
from outbox_client.policy import (
    MAX_HEADER_BLOCK,
    header_block_size,
    headers_problem,
    route_problem,
)
from outbox_client.streams import StreamConfig
from relay.ports import OutboxRow

#: Subjects whose verdict is remembered; past this the memory is cleared (hostile rows may
#: bring many distinct subjects, ordinary traffic few).
_REMEMBERED_SUBJECTS = 10_000


class Admission:
    """Decides, per row, whether the relay may publish it; ``streams`` are the relay's."""

    def __init__(self, streams: Sequence[StreamConfig]) -> None:
        if not streams:
            raise ValueError("the relay needs at least one configured stream")
        self.streams = tuple(streams)
        self._routes: dict[str, str | None] = {}

    def refusal(self, row: OutboxRow) -> str | None:
        """Why the stored row may not be published, or ``None``."""
        problem = self._route_problem(row.subject)
        if problem is not None:
            return f"invalid subject: {problem}"
        problem = headers_problem(row.headers)
        if problem is not None:
            return f"invalid headers: {problem}"
        return None

    def _route_problem(self, subject: str) -> str | None:
        try:
            return self._routes[subject]
        except KeyError:
            pass
        problem = route_problem(subject, self.streams)
        if len(self._routes) >= _REMEMBERED_SUBJECTS:
            self._routes.clear()
        self._routes[subject] = problem
        return problem


def outgoing_headers(row: OutboxRow) -> dict[str, str]:
    """Stored headers plus ``Nats-Msg-Id = event_id``, which the relay always sets (with the
    row's ``replay_label`` after a colon when ``replay --fresh-ids`` marked it: a column only
    the replay writes, never a header); call it only for a row :meth:`Admission.refusal` let
    through (it refuses a producer's ``Vertector-Replay`` header)."""
    headers = dict(row.headers)
    msg_id = str(row.event_id)
    headers[Header.MSG_ID.value] = f"{msg_id}:{row.replay_label}" if row.replay_label else msg_id
    return headers


def oversize(
    row: OutboxRow, headers: Mapping[str, str], max_payload: int, *, reserve: int = 0
) -> str | None:
    """Why the message is too large: the outgoing headers (the relay's own added) pass
    JetStream's header limit, or payload and headers together the server's ``max_payload``
    (the server would answer that by dropping the connection; nats-py checks the payload
    alone). ``None`` when it fits. ``reserve``: bytes of header lines the message may still
    get (see :func:`header_lines_size`)."""
    block = header_block_size(headers) + reserve
    if block > MAX_HEADER_BLOCK:
        return f"header block of {block} bytes (limit {MAX_HEADER_BLOCK})"
    size = len(row.payload) + block
    if size > max_payload:
        return (
            f"message of {size} bytes (payload {len(row.payload)} + headers) is over the "
            f"server's max_payload of {max_payload}"
        )
    return None


def header_lines_size(headers: Mapping[str, str]) -> int:
    """Bytes that ``headers`` add to a header block (``name: value`` and CRLF each)."""
    return header_block_size(headers) - header_block_size({})
