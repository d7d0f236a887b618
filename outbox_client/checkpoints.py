"""Named points where a fault test may act (``devtools`` kills the process there, like a power
cut). Production code is given :data:`NO_CHECKPOINTS`, which does nothing; the library never
reads the environment for them. The relay and the consumer each name their own points."""

from __future__ import annotations

#: Where a consumer's batch can be interrupted: the crash tests prove no loss, no double effect
#: and per-key order at each.
CONSUMER_POINTS = ("after_effect_before_commit", "after_commit_before_ack", "mid_batch")


class Checkpoints:
    """Does nothing. A fault test passes a subclass that acts when a point is reached."""

    def armed(self, point: str) -> bool:
        """Whether :meth:`reached` will act at ``point`` (lets a caller set the scene first)."""
        return False

    def reached(self, point: str) -> None:
        """Called when a batch passes ``point``."""


NO_CHECKPOINTS = Checkpoints()
