"""Named retry policies, in one place: the loop asks a policy how long to wait, so that a stop
request can interrupt any wait. (EventPublisher's fixed retry budget uses tenacity.)"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt 1 waits ~``initial``, then doubles.

    >>> Backoff("x", 0.1, 1.0, jitter=False).delay(3)
    0.4
    >>> Backoff("x", 0.1, 1.0, jitter=False).delay(30)
    1.0
    """

    name: str
    initial: float
    maximum: float
    jitter: bool = True

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(0, min(attempt - 1, 60)))
        # Full jitter in [base/2, base]: spreads out relays that failed together.
        return float(base * random.uniform(0.5, 1.0) if self.jitter else base)


@dataclass(frozen=True, slots=True)
class RetryPolicies:
    """The relay's policies, named for what they retry."""

    event_publish: Backoff
    nats_unavailable: Backoff
    postgres_unavailable: Backoff

    @classmethod
    def from_bounds(cls, initial: float, maximum: float) -> RetryPolicies:
        return cls(
            event_publish=Backoff("event_publish", initial, maximum),
            nats_unavailable=Backoff("nats_unavailable", initial, maximum),
            postgres_unavailable=Backoff("postgres_unavailable", initial, maximum),
        )
