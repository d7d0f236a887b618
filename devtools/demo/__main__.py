"""``python -m devtools.demo [--events N]`` (what ``make demo`` runs): the whole system on
throw-away servers. Ctrl-C stops it cleanly; a second Ctrl-C exits at once."""

from __future__ import annotations

import argparse
import sys

from devtools.demo import run_demo
from relay.cli import run_until_signalled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", description="The whole system on throw-away servers from the wheels."
    )
    parser.add_argument("--events", type=int, default=5000, help="events to produce (default 5000)")
    args = parser.parse_args(argv)
    return run_until_signalled(lambda stop: run_demo(events=args.events, stop=stop))


if __name__ == "__main__":
    sys.exit(main())
