"""``vertector-relay schemas ...``: the event contracts' commands, a few lines each over
``outbox_client.schemas``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from outbox_client.client import NATSClient, NATSConnectionError
from outbox_client.schemas import (
    Contract,
    ContractError,
    Review,
    catalog,
    read_snapshot,
    review,
    write_snapshot,
)
from outbox_client.schemas import registry as kv_registry
from outbox_client.schemas.asyncapi import asyncapi_document
from relay.errors import ConfigError
from relay.settings import load_nats

DEFAULT_DIR = Path("schemas")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas = sub.add_parser(
        "schemas", help="event contracts: snapshot, compatibility check, registry, AsyncAPI"
    )
    actions = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                       help="the committed snapshot (default ./schemas)")  # fmt: skip
    actions.add_parser(
        "snapshot", parents=[where], help="write the classes' contracts; refuses breaks"
    )
    check = actions.add_parser("check", parents=[where], help="exit 1 naming each break (or "
                               "each contract missing from the snapshot); for CI")  # fmt: skip
    check.add_argument(
        "--registry", action="store_true", help="compare with the JetStream registry instead"
    )
    actions.add_parser("publish", help="store every contract in the JetStream bucket "
                       f"{kv_registry.BUCKET}; refuses incompatible versions")  # fmt: skip
    asyncapi = actions.add_parser("asyncapi", help="the catalog as an AsyncAPI 3 document")
    asyncapi.add_argument("-o", "--output", type=Path, help="write here instead of stdout")


def main(args: argparse.Namespace) -> int:
    try:
        if args.schemas_command == "snapshot":
            return snapshot(args.dir)
        if args.schemas_command == "check":
            return check(args.dir, registry=args.registry)
        if args.schemas_command == "publish":
            for key in asyncio.run(publish()):
                print(f"published {key}")
            return 0
        text = asyncapi_document_text()
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    except (ContractError, NATSConnectionError, ConfigError) as exc:
        print(f"vertector-relay schemas {args.schemas_command}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, NATSConnectionError | ConfigError) else 1


def snapshot(directory: Path) -> int:
    contracts = catalog()
    result = review(contracts, read_snapshot(directory))
    if not result.ok:
        _print_breaks(result, "snapshot refused")
        return 1
    written = write_snapshot(directory, contracts)
    for path in written:
        print(f"wrote {path}")
    print(f"{len(contracts)} contracts in {directory} ({len(written)} written)")
    return 0


def check(directory: Path, *, registry: bool = False) -> int:
    published = asyncio.run(_registry_contracts()) if registry else read_snapshot(directory)
    where = f"the registry bucket {kv_registry.BUCKET}" if registry else str(directory)
    result = review(catalog(), published)
    if not result.ok:
        _print_breaks(result, "incompatible")
        return 1
    if result.new:
        fix = "vertector-relay schemas " + ("publish" if registry else "snapshot")
        for contract in result.new:
            print(f"{contract.key}: compatible, but not in {where} yet")
        print(f"run `{fix}` (and commit) to add them", file=sys.stderr)
        return 1
    print(f"ok: the classes match the {len(published)} contracts in {where}")
    return 0


def _print_breaks(result: Review, what: str) -> None:
    print(f"{what}: {len(result.breaks)} breaking change(s)", file=sys.stderr)
    for line in result.breaks:
        print(f"  {line}", file=sys.stderr)


def _nats_client() -> NATSClient:
    return NATSClient(load_nats())


async def publish() -> list[str]:
    async with _nats_client() as client:
        return await kv_registry.publish(client.js, catalog())


async def _registry_contracts() -> dict[str, Contract]:
    async with _nats_client() as client:
        return await kv_registry.published(client.js)


def asyncapi_document_text() -> str:
    return json.dumps(asyncapi_document(), indent=2) + "\n"
