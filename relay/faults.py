"""Named crash points for the fault suite (tests/faults): the relay SIGKILLs itself at the
point named by ``VERTECTOR_RELAY_CRASH_AT``. Unset in production: one string comparison per
batch."""

from __future__ import annotations

import os
import signal

_CRASH_AT = os.environ.get("VERTECTOR_RELAY_CRASH_AT", "")
POINTS = ("after_claim", "after_publish_before_ack", "after_ack_before_mark", "mid_mark")


def crash_point(name: str) -> None:
    """Die here, like a power cut, when the environment names this point."""
    if name == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
