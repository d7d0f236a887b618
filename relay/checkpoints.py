"""Named points in a relay batch's life where a fault test may act (``devtools.crash`` kills
the process there, like a power cut). Production passes :data:`NO_CHECKPOINTS`, which does
nothing; the relay never reads the environment for them."""

from __future__ import annotations

from outbox_client.checkpoints import NO_CHECKPOINTS, Checkpoints

#: Where a batch can be interrupted: the fault suite proves no loss and no duplicate at each.
POINTS = ("after_claim", "after_publish_before_ack", "after_ack_before_mark", "mid_mark")
#: Reached only with atomic batches (WAL capture, a stream with allow_atomic): the first
#: messages of a transaction's batch are on the server, its commit is not.
ATOMIC_POINTS = ("mid_atomic_batch",)

__all__ = ["ATOMIC_POINTS", "NO_CHECKPOINTS", "POINTS", "Checkpoints"]
