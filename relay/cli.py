"""``vertector-relay``: a thin CLI over the relay's library API."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn, cast

from outbox_client.errors import OutboxError
from outbox_client.nats_config import NATSConfig
from outbox_client.redact import redact
from relay import schemacmd, walcmd
from relay.errors import RelayError
from relay.log import FORMATS, LEVELS, setup_logging
from relay.settings import (
    ENV_FILE,
    RELAY_NATS_DEFAULTS,
    CommonSettings,
    RelaySettings,
    env_name,
    load_common,
)


def _env_help() -> str:
    lines = [f"environment (flags override; also read from {ENV_FILE}; blank means unset):"]
    for name, info in (CommonSettings.model_fields | RelaySettings.model_fields).items():
        default = "host-pid" if info.default_factory else info.default
        shown = "" if name == "database_url" else f" (default {default})"
        lines.append(f"  {env_name(name):34} {info.description or ''}{shown}")
    for name, info in NATSConfig.model_fields.items():
        default = RELAY_NATS_DEFAULTS.get(name, info.get_default(call_default_factory=True))
        shown = "" if name in ("password", "token") else f" (default {default})"
        lines.append(f"  NATS_{name.upper():29} {name.replace('_', ' ')}{shown}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _version() -> str:
    try:
        return f"vertector-relay {version('vertector-outbox')}"
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "vertector-relay (not installed)"


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name. Only the top level sets
    defaults (None: the setting's), so a subcommand's absent flag never overwrites one given
    before the command name."""
    default = None if defaults else argparse.SUPPRESS
    parser.add_argument("--log-format", choices=FORMATS, default=default,
                        help="[RELAY_LOG_FORMAT]")  # fmt: skip
    parser.add_argument("--log-level", choices=LEVELS, type=str.upper, default=default,
                        help="[RELAY_LOG_LEVEL]")  # fmt: skip


def _every_subparser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += [child, *_every_subparser(child)]
    return found


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vertector-relay",
        description="Move committed outbox events from PostgreSQL to NATS JetStream.",
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, defaults=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    run = sub.add_parser("run", help="relay events until SIGTERM/SIGINT", epilog=_env_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    for name in ("batch_size", "max_in_flight", "poll_interval_seconds", "instance_name",
                 "retention_seconds", "publish_timeout_seconds"):  # fmt: skip
        info = RelaySettings.model_fields[name]
        kind = str if name == "instance_name" else float if "seconds" in name else int
        run.add_argument(f"--{name.replace('_', '-')}", type=kind, dest=name,
                         help=f"{info.description} [{env_name(name)}]")  # fmt: skip

    check = sub.add_parser("check", help="exit 0 when the running relay is ready, else 1 "
                           "(for container health checks)")  # fmt: skip
    mode = check.add_mutually_exclusive_group()
    mode.add_argument("--live", action="store_true", help="only: is the relay process alive")
    mode.add_argument("--direct", action="store_true", help="no relay needed: can PostgreSQL "
                      "and NATS be reached and do the configured streams exist")  # fmt: skip
    status = sub.add_parser("status", help="backlog, oldest unsent event, quarantined, streams")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    streams = sub.add_parser("streams", help="manage JetStream streams")
    streams_sub = streams.add_subparsers(dest="streams_command", required=True, metavar="ACTION")
    apply = streams_sub.add_parser("apply", help="create or update the streams (idempotent)")
    source = apply.add_mutually_exclusive_group()
    source.add_argument(
        "--file", type=Path, default=None, help="JSON list of streams [RELAY_STREAMS_FILE]"
    )
    source.add_argument(
        "--profile", choices=("default", "fanout"), default=None,
        help="default: the product's (ACADEMIC_EVENTS a work queue: one service); fanout: "
        "ACADEMIC_EVENTS with limits retention, for several services with their own durables",
    )  # fmt: skip
    apply.add_argument(
        "--allow-atomic", action="store_true",
        help="turn on atomic batch publish on every stream applied (nats-server 2.12.1+): WAL "
        "capture then publishes each transaction all at once",
    )  # fmt: skip

    migrate = sub.add_parser("migrate", help="upgrade the schema (same as `alembic upgrade head`)")
    migrate.add_argument("--revision", default="head")

    dead = sub.add_parser(
        "dead-letters", help="quarantined outbox events: list, show, requeue, purge"
    )
    dead_sub = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    listing = dead_sub.add_parser("list", help="newest quarantined events")
    listing.add_argument("--event-type")
    listing.add_argument("--reason", help="substring of the quarantine reason")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    show = dead_sub.add_parser("show", help="one quarantined event, headers included")
    show.add_argument("event_id", type=uuid.UUID)
    for name, text in (("requeue", "give events back to the relay"), ("purge", "delete them")):
        action = dead_sub.add_parser(name, help=f"{text}: by id, by type, or --all (one of them)")
        which = action.add_mutually_exclusive_group(required=True)
        which.add_argument("--event-id", type=uuid.UUID, action="append", dest="event_ids")
        which.add_argument("--event-type")
        if name == "requeue":
            which.add_argument("--all", action="store_true", help="every quarantined event")

    replay = sub.add_parser("replay", help="re-publish retained, already-sent events "
                            "(needs RELAY_RETENTION_SECONDS > 0)")  # fmt: skip
    replay.add_argument("--since", type=datetime.fromisoformat, help="ISO time, inclusive")
    replay.add_argument("--until", type=datetime.fromisoformat, help="ISO time, exclusive")
    replay.add_argument("--from-id", type=int)
    replay.add_argument("--to-id", type=int)
    replay.add_argument("--event-type")
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed, "
                        "and what JetStream would drop as duplicates; change nothing")  # fmt: skip
    replay.add_argument("--fresh-ids", action="store_true", help="send with new Nats-Msg-Ids "
                        "(<event_id>:<replay>) so that JetStream stores them even inside its "
                        "duplicate window; consumers' inboxes still skip what they "
                        "applied")  # fmt: skip
    replay.add_argument("--batch-size", type=int, default=10_000, help="rows marked per "
                        "statement (default 10000)")  # fmt: skip

    cdl = sub.add_parser("consumer-dead-letters", help="the consumers' DEAD_LETTERS stream")
    cdl_sub = cdl.add_subparsers(dest="cdl_command", required=True, metavar="ACTION")
    cdl_list = cdl_sub.add_parser("list", help="oldest dead letters, with reasons")
    cdl_list.add_argument("--limit", type=int, default=100)
    cdl_replay = cdl_sub.add_parser("replay", help="send dead letters back to their subject")
    cdl_replay.add_argument("seq", type=int, nargs="+")

    schemacmd.add_parser(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub))
    walcmd.add_parser(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub))
    for child in _every_subparser(parser):
        _global_options(child, defaults=False)
    return parser


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(stop)``; SIGTERM/SIGINT set ``stop`` (a second one exits at once)."""

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                raise SystemExit(130)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await main(stop)

    return asyncio.run(wrapper())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        common = load_common(log_format=args.log_format, log_level=args.log_level)
    except RelayError as exc:
        print(f"vertector-relay: {exc}", file=sys.stderr)
        return 2
    setup_logging(common.log_format, common.log_level)
    from relay import commands

    try:
        if args.command == "run":
            overrides = {k: getattr(args, k, None) for k in RelaySettings.model_fields}
            return run_until_signalled(lambda stop: commands.run(overrides, stop))
        if args.command == "check":
            if args.direct:
                return asyncio.run(commands.check())
            return commands.probe("/healthz" if args.live else "/readyz")
        if args.command == "status":
            report = asyncio.run(commands.status())
            print(
                json.dumps(report, indent=2, default=str)
                if args.json
                else commands.format_status(report)
            )
            return 0
        if args.command == "streams":
            for line in asyncio.run(
                commands.streams_apply(args.file, args.profile, allow_atomic=args.allow_atomic)
            ):
                print(line)
            return 0
        if args.command == "migrate":
            commands.migrate(args.revision)
            print(f"schema at {args.revision}")
            return 0
        if args.command == "dead-letters":
            return asyncio.run(commands.dead_letters(args))
        if args.command == "replay":
            return asyncio.run(commands.replay(args))
        if args.command == "consumer-dead-letters":
            return asyncio.run(commands.consumer_dead_letters(args))
        if args.command == "schemas":
            return schemacmd.main(args)
        if args.command == "wal":
            return walcmd.main(args)
    except (RelayError, OutboxError) as exc:
        print(f"vertector-relay {args.command}: {redact(str(exc))}", file=sys.stderr)
        return 2
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
