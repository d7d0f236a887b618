"""``python -m devtools.demo [--events N]`` (what ``make demo`` runs): the whole system on
throw-away servers. Ctrl-C stops it cleanly; a second Ctrl-C exits at once."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from devtools.demo import run_demo


async def _main(events: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return await run_demo(events=events, stop=stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", description="The whole system on throw-away servers from the wheels."
    )
    parser.add_argument("--events", type=int, default=5000, help="events to produce (default 5000)")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.events))


if __name__ == "__main__":
    sys.exit(main())
