"""The frame an event travels in when it is captured from the WAL (``OUTBOX_CAPTURE=wal``).

One ``pg_logical_emit_message`` per event, with prefix :data:`WAL_PREFIX` and this content:

    version (1 byte, = 1) | event id (16 bytes) |
    4 lengths (uint32, big-endian): event type, subject, partition key, headers |
    event type | subject | partition key | headers (compact JSON object) | payload (the rest)

Everything the table row holds and the relay publishes; nothing else (the commit time comes
from the transaction). Compact and fixed-layout: the producer pays one ``struct.pack`` and a
join, the relay one ``unpack``.
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import NamedTuple

from asyncpg.pgproto.pgproto import UUID as _PgUUID

from outbox_client.errors import OutboxError

#: The logical message prefix of outbox events (and the version of the frame layout).
WAL_PREFIX = "vertector.outbox.v1"
VERSION = 1
_HEAD = struct.Struct(">B16sIIII")


class FrameError(OutboxError):
    """Bytes under :data:`WAL_PREFIX` that are not a frame this version can read."""


class Frame(NamedTuple):
    """A decoded frame (a named tuple: built in C, a frame per event the relay reads)."""

    event_id: uuid.UUID
    event_type: str
    subject: str
    partition_key: str
    headers: object  # a dict of str -> str when written by outbox_client; checked by the relay
    payload: bytes


def encode(
    event_id: uuid.UUID,
    event_type: str,
    subject: str,
    partition_key: str,
    payload: bytes,
    headers: dict[str, str],
) -> bytes:
    kind = event_type.encode()
    to = subject.encode()
    key = partition_key.encode()
    block = headers_json(headers).encode()
    head = _HEAD.pack(VERSION, event_id.bytes, len(kind), len(to), len(key), len(block))
    return b"".join((head, kind, to, key, block, payload))


def headers_json(headers: dict[str, str]) -> str:
    """``json.dumps(headers, separators=(",", ":"))``, byte for byte, in half the time for a
    dict of strings (every producer's headers: the policy refuses anything else)."""
    try:
        return (
            "{"
            + ",".join([_quote(name) + ":" + _quote(value) for name, value in headers.items()])
            + "}"
        )
    except TypeError:  # a name or value that is not a string: json.dumps converts or names it
        return json.dumps(headers, separators=(",", ":"))


def decode(frame: bytes) -> Frame:
    """Raises :class:`FrameError` naming what is wrong (the relay quarantines such a frame).

    What ``encode`` writes (every field there, text all ASCII, no NUL) is read in one decode
    and cut by the lengths; anything else takes :func:`_decode_checked`, field by field, which
    names the problem (or reads the non-ASCII text)."""
    if len(frame) >= _HEAD.size:
        version, raw_id, kind, to, key, block = _HEAD.unpack_from(frame)
        texts = kind + to + key
        end = _HEAD.size + texts + block
        if version == VERSION and end <= len(frame):
            try:
                text = frame[_HEAD.size : end].decode()
            except UnicodeDecodeError:
                text = ""  # not UTF-8: the checked walk names the field
            if text.isascii() and len(text) == end - _HEAD.size and "\0" not in text[:texts]:
                return Frame(
                    _UUID(raw_id),
                    text[:kind],
                    text[kind : kind + to],
                    text[kind + to : texts],
                    _parsed_headers(text[texts:]),
                    frame[end:],
                )
    return _decode_checked(frame)


def _decode_checked(frame: bytes) -> Frame:
    if len(frame) < _HEAD.size:
        raise FrameError(f"frame of {len(frame)} bytes is shorter than its {_HEAD.size}-byte head")
    version, raw_id, *lengths = _HEAD.unpack_from(frame)
    if version != VERSION:
        raise FrameError(f"frame version {version} is not {VERSION}: upgrade the relay")
    fields: list[str] = []
    at = _HEAD.size
    for length in lengths:
        if at + length > len(frame):
            raise FrameError("frame truncated: a field runs past its end")
        try:
            fields.append(frame[at : at + length].decode())
        except UnicodeDecodeError as exc:
            raise FrameError(f"frame field is not UTF-8: {exc}") from exc
        at += length
    for name, value in zip(_TEXT_FIELDS, fields, strict=False):
        if "\0" in value:
            raise FrameError(f"frame {name} holds a NUL character{_NUL}")
    headers = _parsed_headers(fields[3])
    return Frame(_UUID(raw_id), fields[0], fields[1], fields[2], headers, frame[at:])


def _parsed_headers(text: str) -> object:
    """The headers' JSON, parsed: by the C scanner itself when the text is one JSON value and
    nothing else (what encode writes), else by ``json.loads`` for its whitespace rules and its
    errors."""
    try:
        headers, end = _SCAN(text, 0)
    except (StopIteration, RecursionError, ValueError):
        end = -1
    if end != len(text):
        try:
            headers = json.loads(text)
        except (RecursionError, ValueError) as exc:
            raise FrameError(f"frame headers are not JSON: {type(exc).__name__}") from exc
    # JSON writes NUL only as the escape \u0000: without one the walk is not needed.
    if "\\u0000" in text and _holds_nul(headers):
        raise FrameError(f"frame headers hold a NUL character{_NUL}")
    return headers


#: asyncpg's UUID, a ``uuid.UUID`` built in C from the 16 bytes (what table mode's rows hold):
#: 0.24 us against 3.2 for ``uuid.UUID(bytes=...)``, and str() 0.17 against 1.7.
_UUID: Callable[[bytes], uuid.UUID] = _PgUUID

#: json's own scanner (C): what json.loads calls after two layers of Python.
_SCAN: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_TEXT_FIELDS = ("event type", "subject", "partition key")
_NUL = " (PostgreSQL text cannot: no outbox_events row could hold the event)"


def _holds_nul(value: object) -> bool:
    """Whether a string anywhere in the parsed JSON ``value`` holds NUL (without recursion:
    the nesting may be as deep as json.loads allows)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            if "\0" in item:
                return True
        elif isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
    return False
