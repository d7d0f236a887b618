"""The relay's start-up check of its configured streams: only "not found" means missing."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js.errors import NotFoundError, ServiceUnavailableError

from outbox_client.streams import StreamConfig
from relay.errors import MissingStreamError
from relay.natsstreams import check_configured

SPECS = [
    StreamConfig(name="ACADEMIC_EVENTS", subjects=("academic.>",)),
    StreamConfig(name="NOTES_EVENTS", subjects=("notes.>",)),
]


class JetStream:
    """Answers STREAM.INFO by name; its STREAM.LIST, like nats-server's, leaves out a stream
    whose leader did not answer in time (an election)."""

    def __init__(self, answers: dict[str, Exception | None]) -> None:
        self.answers = answers

    async def stream_info(self, name: str) -> Any:
        answer = self.answers.get(name, NotFoundError(code=404, err_code=10059))
        if answer is not None:
            raise answer
        return object()

    async def streams_info(self) -> list[Any]:
        return []  # every stream "missing" from the list while its leader is being elected


async def test_a_stream_left_out_of_the_list_but_answering_by_name_is_not_missing() -> None:
    await check_configured(
        JetStream({"ACADEMIC_EVENTS": None, "NOTES_EVENTS": None}),  # type: ignore[arg-type]
        SPECS,
    )


async def test_a_stream_not_found_by_name_is_named_missing() -> None:
    with pytest.raises(MissingStreamError, match=r"^configured stream\(s\) NOTES_EVENTS do not"):
        await check_configured(JetStream({"ACADEMIC_EVENTS": None}), SPECS)  # type: ignore[arg-type]


async def test_an_unavailable_or_silent_jetstream_is_raised_to_be_waited_out() -> None:
    for error in (TimeoutError(), ServiceUnavailableError(code=503)):
        with pytest.raises(type(error)):
            await check_configured(
                JetStream({"ACADEMIC_EVENTS": error, "NOTES_EVENTS": None}),  # type: ignore[arg-type]
                SPECS,
            )
