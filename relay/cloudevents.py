"""The CloudEvents NATS binding, binary content mode: the event's attributes as ``ce-*``
headers next to the unchanged payload, so a CloudEvents consumer reads our events as they are
(and ours keep reading them: nothing in the payload moves).

Attributes come from the row alone, so they hold for rows of any producer: ``id`` is the
event id, ``type`` the event type, ``source`` the producing service, ``time`` when the row was
written (in the producer's transaction), ``subject`` the partition key and ``dataschema`` the
contract's id in the schema registry. Values are percent-encoded as the binding requires.

>>> import uuid, datetime
>>> from relay.ports import OutboxRow
>>> row = OutboxRow(1, uuid.UUID(int=1), "academic.course.created", "CS101", 0, b"{}",
...     {"Vertector-Source-Service": "schedule service", "Vertector-Schema-Version": "1"}, 0,
...     datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
>>> binary_headers(row)["ce-source"]
'/schedule%20service'
"""

from __future__ import annotations

from urllib.parse import quote

from outbox_client.headers import Header
from relay.ports import OutboxRow

SPECVERSION = "1.0"
#: Printable ASCII except space, '"' and '%' stays as it is (the binding's rule).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def binary_headers(row: OutboxRow) -> dict[str, str]:
    """The ``ce-*`` headers (and ``content-type``) for ``row``."""
    headers = row.headers
    event_type = headers.get(Header.EVENT_TYPE.value) or row.subject
    version = headers.get(Header.SCHEMA_VERSION.value) or "1"
    source = headers.get(Header.SOURCE_SERVICE.value) or "unspecified"
    return {
        "ce-specversion": SPECVERSION,
        "ce-id": str(row.event_id),
        "ce-type": _encode(event_type),
        "ce-source": _encode(f"/{source}"),
        "ce-time": row.created_at.isoformat(),
        "ce-subject": _encode(row.partition_key),
        "ce-dataschema": _encode(f"urn:vertector:{event_type}:v{version}"),
        "content-type": "application/json",
    }


def _encode(value: str) -> str:
    return quote(value, safe=_SAFE)
