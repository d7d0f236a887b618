"""Named points in a batch's life where a fault test may act (``devtools.crash`` kills the
process there, like a power cut). Production passes :data:`NO_CHECKPOINTS`, which does nothing;
the relay never reads the environment for them."""

from __future__ import annotations

#: Where a batch can be interrupted: the fault suite proves no loss and no duplicate at each.
POINTS = ("after_claim", "after_publish_before_ack", "after_ack_before_mark", "mid_mark")


class Checkpoints:
    """Does nothing. A fault test passes a subclass that acts when a point is reached."""

    def armed(self, point: str) -> bool:
        """Whether :meth:`reached` will act at ``point`` (lets a caller set the scene first)."""
        return False

    def reached(self, point: str) -> None:
        """Called when the batch passes ``point``."""


NO_CHECKPOINTS = Checkpoints()
