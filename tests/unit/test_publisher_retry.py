from __future__ import annotations

from typing import Any

import nats.errors
import pytest

from outbox_client import CourseUpdatedEvent, EventPublisher, NATSConfig, PublishFailedError


class FlakyJetStream:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise nats.errors.TimeoutError
        return type("Ack", (), {"stream": "S", "seq": self.calls, "duplicate": None})()


class Client:
    def __init__(self, js: FlakyJetStream) -> None:
        self.js = js
        self.config = NATSConfig()


async def test_retries_with_the_described_budget_then_fails_clearly() -> None:
    event = CourseUpdatedEvent(course_code="R", credits=1)
    js = FlakyJetStream(failures=2)
    publisher = EventPublisher(Client(js), max_retries=3, retry_backoff_base=1.0)  # type: ignore[arg-type]
    ack = await publisher.publish(event)
    assert (ack.seq, ack.duplicate, js.calls) == (3, False, 3)

    js = FlakyJetStream(failures=10)
    publisher = EventPublisher(Client(js), max_retries=2, retry_backoff_base=1.0)  # type: ignore[arg-type]
    with pytest.raises(PublishFailedError, match="not published after 3 attempts: TimeoutError"):
        await publisher.publish(event)
    assert js.calls == 3
