"""What a message may look like: the one policy the producer, the relay and the consumer's
dead-letter replay all apply, so that a row no check refused at one end is never sent at another.

A producer may target any ordinary subject. It may not target the server's own namespaces:
a first token that starts with ``$`` (``$JS.API.STREAM.PURGE...`` purges a stream, ``$SYS``,
``$KV``, ``$O``) or with ``_`` (``_INBOX.`` and other reply subjects: a message there is read by
whoever waits for a reply). Headers are an object of string to string; ``Nats-*`` headers steer
the server (``Nats-Rollup`` deletes messages, ``Nats-Expected-*`` fail every retry,
``Nats-TTL`` expires the event), so a producer may not set them: the relay sets ``Nats-Msg-Id``
itself. Nor ``Vertector-Replay``: a replay's label (which changes the Msg-Id) is a column only
``vertector-relay replay`` writes. Sizes are the server's: a subject past 1 KiB or a header
block past 64 KiB is refused (the first by dropping the connection, the second with JetStream
error 10097).

>>> subject_problem("academic.course.created") is None
True
>>> subject_problem("$JS.API.STREAM.PURGE.ACADEMIC_EVENTS")
'subject in a reserved namespace ($JS): producers may publish only to their own subjects'
>>> headers_problem({"x": 1})
"header 'x' has a value of type int: header values must be strings"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

from outbox_client.headers import Header
from outbox_client.streams import StreamConfig

#: Longest subject we send; the server's control line (subject + reply + sizes) is 4 KiB.
MAX_SUBJECT_LENGTH = 1024
#: Largest header block JetStream stores: it keeps the length in 16 bits, and refuses a larger
#: block with error 10097 (nats-server stream.go: ``len(hdr) > math.MaxUint16``).
MAX_HEADER_BLOCK = 65_535
#: Header names that steer the server; only the relay sets one (``Nats-Msg-Id``).
RESERVED_HEADER_PREFIX = "nats-"
#: Why no producer may set a Nats-* (or Vertector-Replay) header: there is no use for one an
#: outbox can keep. The relay sets Nats-Msg-Id (the event id, JetStream's deduplication key);
#: the others steer the server on every re-send (Nats-Rollup deletes the subject's earlier
#: messages, Nats-Expected-* fail every retry, Nats-TTL expires the event).
RESERVED_FIX = (
    "Producers may not set Nats-* headers (the relay sets Nats-Msg-Id to the event id itself; "
    "the others steer the server: Nats-Rollup deletes messages, Nats-Expected-* fail every "
    "retry, Nats-TTL expires the event) nor Vertector-Replay (only `vertector-relay replay` "
    "labels a replay): remove it from nats_headers()"
)
#: Lower-cased names no producer may set for another reason (see the module docstring).
RELAY_ONLY_HEADERS = {
    Header.REPLAY.value.lower(): "set by `vertector-relay replay --fresh-ids` only (as the row's "
    "replay_label), never by a producer: it would change the event's Nats-Msg-Id",
}

_FORBIDDEN_IN_SUBJECT = set(" \t\r\n\f\v*>")
#: Header names are HTTP-style tokens: printable ASCII without ':' or whitespace.
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")


def subject_problem(subject: str) -> str | None:
    """Why a producer may not publish to ``subject``, or ``None``."""
    if not isinstance(subject, str):
        return f"subject of type {type(subject).__name__}: a subject is a string"
    if len(subject) > MAX_SUBJECT_LENGTH:  # before the cache: it keeps only short strings
        return f"subject of {len(subject)} characters (limit {MAX_SUBJECT_LENGTH})"
    return _subject_problem(subject)


@lru_cache(maxsize=4096)
def _subject_problem(subject: str) -> str | None:
    if not subject:
        return "empty subject"
    if _FORBIDDEN_IN_SUBJECT & set(subject):
        return "subject contains whitespace or a wildcard (* or >)"
    if not subject.isprintable() or not subject.isascii():
        return "subject contains a control or non-ASCII character"
    tokens = subject.split(".")
    if any(token == "" for token in tokens):
        return "subject has an empty token (leading, trailing or double dot)"
    if tokens[0][0] in "$_":
        return (
            f"subject in a reserved namespace ({tokens[0]}): producers may publish only to "
            "their own subjects"
        )
    return None


def route_problem(subject: str, streams: Iterable[StreamConfig]) -> str | None:
    """Why the relay may not publish ``subject`` when it is configured with ``streams``: a
    subject problem, or no configured stream captures it (a message there would reach no
    stream, or whatever else listens on it). ``None`` when it may.

    >>> from outbox_client.streams import DEFAULT_STREAMS
    >>> route_problem("academic.course.created", DEFAULT_STREAMS) is None
    True
    >>> route_problem("payroll.salaries", DEFAULT_STREAMS)
    "no configured stream captures 'payroll.salaries'"
    """
    problem = subject_problem(subject)
    if problem is not None:
        return problem
    if not any(stream.captures(subject) for stream in streams):
        return f"no configured stream captures {subject[:200]!r}"
    return None


def header_block_size(headers: Mapping[str, str]) -> int:
    """Bytes of the NATS/1.0 header block nats-py writes for ``headers`` (an upper bound:
    nats-py strips surrounding whitespace from values)."""
    text = "".join(headers) + "".join(headers.values())
    # "NATS/1.0\r\n" + "\r\n" at the end, and ": " + "\r\n" per header.
    return 12 + 4 * len(headers) + len(text.encode())


def header_value_problem(name: str, value: str) -> str | None:
    """Why ``value`` cannot be sent as a header value (nats-py turns CR/LF into spaces)."""
    if _BAD_VALUE.search(value):
        return f"header {name!r} contains CR, LF or NUL"
    return None


def reserved_header(headers: Mapping[str, object]) -> str | None:
    """The first header name in ``headers`` no producer may set (``Nats-*``,
    ``Vertector-Replay``), or ``None``; producers' libraries name it in their errors.

    >>> reserved_header({"Vertector-Event-Type": "a.b", "Nats-Rollup": "all"})
    'Nats-Rollup'
    """
    names = tuple(headers) if type(headers) is dict else None
    if names in _unreserved_names:  # every enqueue asks: a producer has few sets of names
        return None
    for name in headers:
        lower = str(name).lower()
        if lower.startswith(RESERVED_HEADER_PREFIX) or lower in RELAY_ONLY_HEADERS:
            return str(name)
    if names is not None and all(type(name) is str for name in names):
        if len(_unreserved_names) >= _REMEMBERED_NAME_SETS:
            _unreserved_names.clear()
        if sum(len(name) for name in names) <= _REMEMBERED_NAMES_LENGTH:
            _unreserved_names.add(names)
    return None


#: Tuples of header names (all ``str``) none of which is reserved.
_unreserved_names: set[tuple[str, ...]] = set()


def headers_problem(headers: object, *, reserved_allowed: bool = False) -> str | None:
    """Why ``headers`` (as stored by a producer) cannot be sent, or ``None``.

    ``reserved_allowed`` is for the relay's own outgoing block, which carries ``Nats-Msg-Id``.

    The relay asks this of every row it sends, ``enqueue`` of every event (with
    ``reserved_allowed``, for the block the relay will send), and a producer's rows carry few
    distinct sets of header names: a set of names already found acceptable is remembered (apart
    for each ``reserved_allowed``), so that such a row costs a look-up and one scan of its
    values; anything else takes the full walk, which names the problem.
    """
    accepted = _accepted_names_with_reserved if reserved_allowed else _accepted_names
    if type(headers) is dict:
        names = tuple(headers)
        names_bytes = accepted.get(names)
        if names_bytes is not None:
            try:
                values = "".join(headers.values())
            except TypeError:  # a value that is not a string: the walk names it
                pass
            else:
                size = 12 + 4 * len(names) + names_bytes + len(values.encode())
                if size <= MAX_HEADER_BLOCK and _BAD_VALUE.search(values) is None:
                    return None
    problem = _headers_walk(headers, reserved_allowed)
    if problem is None:
        _remember_names(headers, accepted, reserved_allowed)
    return problem


#: Tuples of header names that passed every name check (none reserved, whoever asked), with
#: their encoded length; cleared when full (hostile rows may bring many distinct names).
_accepted_names: dict[tuple[str, ...], int] = {}
#: The same for the checks with ``reserved_allowed`` (the relay's outgoing block, which the
#: producer checks too): names that passed those, ``Nats-*`` ones among them. Kept apart, so
#: that such names are never taken as accepted for a block without the allowance.
_accepted_names_with_reserved: dict[tuple[str, ...], int] = {}
_REMEMBERED_NAME_SETS = 4096
#: Longest names tuple remembered (in characters), so that the memory stays small.
_REMEMBERED_NAMES_LENGTH = 1024


def _remember_names(
    headers: object, accepted: dict[tuple[str, ...], int], reserved_allowed: bool
) -> None:
    if type(headers) is not dict:
        return
    if not reserved_allowed and reserved_header(headers) is not None:
        return
    names = tuple(headers)
    length = sum(len(name) for name in names)  # names are ASCII tokens: bytes = characters
    if length > _REMEMBERED_NAMES_LENGTH:
        return
    if len(accepted) >= _REMEMBERED_NAME_SETS:
        accepted.clear()
    accepted[names] = length


def _headers_walk(headers: object, reserved_allowed: bool) -> str | None:
    if not isinstance(headers, Mapping):
        return (
            f"headers of type {type(headers).__name__}: headers must be a JSON object "
            "of string to string"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            return f"header name {name!r} is not a token (printable ASCII, no ':' or spaces)"
        if not isinstance(value, str):
            return (
                f"header {name!r} has a value of type {type(value).__name__}: "
                "header values must be strings"
            )
        if not reserved_allowed and name.lower().startswith(RESERVED_HEADER_PREFIX):
            return f"header {name!r} is reserved for the server and the relay (Nats-*)"
        if name.lower() in RELAY_ONLY_HEADERS:
            return f"header {name!r} is {RELAY_ONLY_HEADERS[name.lower()]}"
        problem = header_value_problem(name, value)
        if problem:
            return problem
    size = header_block_size(headers)
    if size > MAX_HEADER_BLOCK:
        return f"header block of {size} bytes (limit {MAX_HEADER_BLOCK})"
    return None
