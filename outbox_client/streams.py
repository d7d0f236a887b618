"""``StreamConfig``: the streams of the product description, as code.

>>> [s.name for s in DEFAULT_STREAMS]
['ACADEMIC_EVENTS', 'NOTES_EVENTS']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

ACADEMIC_ENTITIES = (
    "course",
    "assignment",
    "exam",
    "quiz",
    "lab",
    "study",
    "challenge",
    "schedule",
)


class StreamConfig(BaseModel):
    """One JetStream stream. ``duplicate_window_seconds`` bounds JetStream's dedup by
    ``Nats-Msg-Id``: a re-publish later than that is stored again (the consumer inbox drops it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    subjects: tuple[str, ...] = Field(min_length=1)
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    max_age_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    duplicate_window_seconds: float = Field(default=600, gt=0)
    replicas: int = Field(default=1, ge=1, le=5)
    max_msgs: int = -1
    max_bytes: int = -1
    discard: Literal["old", "new"] = "old"
    #: Atomic batch publish (nats-server 2.12+): WAL capture then publishes each transaction's
    #: events all at once or none.
    allow_atomic: bool = False

    def captures(self, subject: str) -> bool:
        """Whether a message on ``subject`` lands in this stream."""
        return any(subject_matches(pattern, subject) for pattern in self.subjects)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, ``>`` one or more trailing tokens.

    >>> subject_matches("academic.course.*", "academic.course.created")
    True
    >>> subject_matches("notes.>", "notes")
    False
    """
    ptoks, stoks = pattern.split("."), subject.split(".")
    for i, ptok in enumerate(ptoks):
        if ptok == ">":
            return len(stoks) > i
        if i >= len(stoks) or (ptok != "*" and ptok != stoks[i]):
            return False
    return len(ptoks) == len(stoks)


ACADEMIC_STREAM = StreamConfig(
    name="ACADEMIC_EVENTS",
    subjects=tuple(f"academic.{entity}.*" for entity in ACADEMIC_ENTITIES),
    retention="workqueue",
)
NOTES_STREAM = StreamConfig(name="NOTES_EVENTS", subjects=("notes.*",), retention="interest")
DEFAULT_STREAMS: tuple[StreamConfig, ...] = (ACADEMIC_STREAM, NOTES_STREAM)
#: Several services on the academic events (notes, search, analytics), each with its own
#: durable: limits retention keeps every event for max_age, whoever has read it. A work queue
#: gives each message to one consumer only (JetStream error 10100 for a second service), and
#: interest retention would drop events published before a service's durable exists.
FANOUT_STREAMS: tuple[StreamConfig, ...] = (
    ACADEMIC_STREAM.model_copy(update={"retention": "limits"}),
    NOTES_STREAM,
)
#: What ``vertector-relay streams apply --profile`` offers.
STREAM_PROFILES: dict[str, tuple[StreamConfig, ...]] = {
    "default": DEFAULT_STREAMS,
    "fanout": FANOUT_STREAMS,
}

_STREAM_LIST = TypeAdapter(tuple[StreamConfig, ...])


def load_streams(path: Path | None) -> tuple[StreamConfig, ...]:
    """Streams from a JSON file (a list of StreamConfig objects), or the defaults."""
    if path is None:
        return DEFAULT_STREAMS
    return _STREAM_LIST.validate_python(json.loads(Path(path).read_text()))
