"""Keys backing off: for each partition key whose event failed, its head (the failed row), when
to try it again, and the stream it waits for.

Claims skip a retrying key's rows altogether; when its backoff is due only its head is claimed
again, by id; once that goes, the key rejoins the ordinary claims (``relay/worker.py`` tells
the whole story). A key that failed because its stream was *unreachable* (not because the
stream refused) is due at once when that stream acknowledges something again: the subject ->
stream answers of earlier PubAcks say which stream that is.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.ports import OutboxRow, Stored

#: How many keys may be backing off before the relay stops taking on new rows (see
#: :meth:`RetryingKeys.full`).
MAX_RETRYING = 10_000
#: How many subject -> stream answers are remembered (subjects are few in practice).
_KNOWN_SUBJECTS = 10_000


@dataclass(slots=True)
class Retry:
    """A key backing off: its head row, when to try it again, and the stream it waits for
    when that stream was unreachable (None when it refused)."""

    at: float
    head: int
    stream: str | None


class RetryingKeys:
    """The keys backing off, and the subject -> stream answers that let a stream's next
    acknowledgement wake the keys waiting for it."""

    def __init__(self) -> None:
        self._retries: dict[str, Retry] = {}  # partition key -> its retry
        self._stream_of: dict[str, str] = {}  # subject -> stream, learned from PubAcks

    def __len__(self) -> int:
        return len(self._retries)

    def full(self) -> bool:
        """Past :data:`MAX_RETRYING` keys something systemic is wrong (a stream full for hours
        with a key per event): retry those, but take on no new keys to fail, so memory and the
        held-keys list stay bounded."""
        return len(self._retries) >= MAX_RETRYING

    def keys(self) -> list[str]:
        """The keys backing off, sorted: a claim skips all of their rows."""
        return sorted(self._retries)

    def due(self, now: float, limit: int) -> set[int]:
        """Heads whose backoff has expired, at most ``limit``, the longest due first."""
        due = sorted((r.at, r.head) for r in self._retries.values() if r.at <= now)
        return {head for _, head in due[:limit]}

    def blocked(self, in_batch: set[int]) -> set[str]:
        """Keys whose head is not in the batch: none of their rows may go now."""
        return {key for key, r in self._retries.items() if r.head not in in_batch}

    def soonest(self) -> float | None:
        """When the next backoff expires; None when no key is backing off."""
        return min((r.at for r in self._retries.values()), default=None)

    def forget_heads(self, heads: set[int]) -> None:
        """Stop retrying these heads: another relay sent them, their partition moved, or the
        loop takes them up again as ordinary rows (after an outage)."""
        if heads:
            self._retries = {k: r for k, r in self._retries.items() if r.head not in heads}

    def acked(self, row: OutboxRow, stored: Stored) -> None:
        """``row`` was stored: its key no longer waits, and its subject's stream is known."""
        self._retries.pop(row.partition_key, None)
        if row.subject not in self._stream_of:
            if len(self._stream_of) >= _KNOWN_SUBJECTS:
                self._stream_of.clear()
            self._stream_of[row.subject] = stored.stream

    def hold(self, row: OutboxRow, at: float, *, unreachable: bool) -> None:
        """``row`` failed: its key waits until ``at``, or until its stream acknowledges again
        when the stream was ``unreachable``."""
        stream = self._stream_of.get(row.subject) if unreachable else None
        self._retries[row.partition_key] = Retry(at, row.id, stream)

    def release(self, key: str) -> None:
        """The key's head was settled without a PubAck (quarantined): the key goes on."""
        self._retries.pop(key, None)

    def wake(self, streams: set[str], now: float) -> None:
        """Streams that acknowledged again are back: the keys waiting for them are due now."""
        for retry in self._retries.values():
            if retry.stream in streams and retry.at > now:
                retry.at = now
