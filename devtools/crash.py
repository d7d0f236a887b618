"""``python -m devtools.crash POINT``: ``vertector-relay run`` (settings from the environment)
that SIGKILLs itself when a batch reaches the named checkpoint, for the fault suite."""

from __future__ import annotations

import os
import signal
import sys

from relay import commands
from relay.checkpoints import ATOMIC_POINTS, POINTS, Checkpoints
from relay.cli import run_until_signalled
from relay.log import setup_logging


class CrashAt(Checkpoints):
    """Die at ``point`` (one of ``points``) as a power cut would: no cleanup, no flush."""

    def __init__(self, point: str, points: tuple[str, ...] = POINTS + ATOMIC_POINTS) -> None:
        if point not in points:
            raise ValueError(f"unknown crash point {point!r}: one of {', '.join(points)}")
        self.point = point

    def armed(self, point: str) -> bool:
        return point == self.point

    def reached(self, point: str) -> None:
        if point == self.point:
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            f"usage: python -m devtools.crash {{{','.join(POINTS + ATOMIC_POINTS)}}}",
            file=sys.stderr,
        )
        return 2
    setup_logging("json", "info")
    crash = CrashAt(argv[0])
    return run_until_signalled(lambda stop: commands.run({}, stop, checkpoints=crash))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
