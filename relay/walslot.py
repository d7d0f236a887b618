"""WAL capture's database objects: a publication and a logical replication slot (pgoutput).

``vertector-relay wal setup|teardown|status`` are a few lines over these; the relay calls
:func:`ensure_usable` before it reads. The slot holds back WAL until the relay confirms it:
a relay down for long keeps WAL on disk, up to ``max_slot_wal_keep_size`` (then PostgreSQL
invalidates the slot and the events not yet read are gone). An invalidated slot is reported
loudly and the relay refuses to run unless told to accept the loss
(``RELAY_WAL_ACCEPT_LOST_EVENTS=true``), which recreates the slot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from relay.errors import ConfigError, StoreError
from relay.log import log_event
from relay.pgoutput import transactions
from relay.pgstore import DRIVER_ERRORS, PgStore
from relay.queries import query

logger = logging.getLogger("relay.walslot")

MIN_VERSION = 140000  # pgoutput's messages option


class WalCaptureError(ConfigError):
    """The server or the slot cannot serve WAL capture; the message names the fix."""


class SlotInvalidatedError(WalCaptureError):
    """The slot lost WAL it needed: events committed while the relay was down may be lost."""


async def check_server(store: PgStore) -> dict[str, Any]:
    """wal_level and version, or :class:`WalCaptureError` naming the setting to change."""
    server = dict(await store._call("fetchrow", "wal_server"))
    if server["wal_level"] != "logical":
        raise WalCaptureError(
            f"WAL capture needs wal_level=logical, this server has wal_level="
            f"{server['wal_level']}: set wal_level = logical (ALTER SYSTEM SET wal_level = "
            "logical) and restart PostgreSQL, or use OUTBOX_CAPTURE=table"
        )
    if server["version_num"] < MIN_VERSION:
        raise WalCaptureError(
            f"WAL capture needs PostgreSQL 14 or later (server_version_num "
            f"{server['version_num']}); use OUTBOX_CAPTURE=table"
        )
    return server


def _invalidated(slot: str) -> SlotInvalidatedError:
    return SlotInvalidatedError(
        f"replication slot {slot} was invalidated (wal_status=lost: it fell more than "
        "max_slot_wal_keep_size behind, e.g. while the relay was down): events committed since "
        "its last confirmed position may be LOST and cannot be read. Find them from the "
        "producers' side; then start with RELAY_WAL_ACCEPT_LOST_EVENTS=true (or run "
        "`vertector-relay wal setup --recreate`) to drop and recreate the slot"
    )


async def _ddl(store: PgStore, name: str, publication: str) -> None:
    # DDL takes no parameters: the name is validated ([a-z0-9_], RELAY_WAL_PUBLICATION).
    try:
        await store.pool.execute(query(name).format(publication=publication))
    except DRIVER_ERRORS as exc:
        raise StoreError(f"{name} failed: {type(exc).__name__}: {exc}") from exc


async def setup(
    store: PgStore, slot: str, publication: str, *, recreate: bool = False
) -> list[str]:
    """Create the publication and the slot when missing (idempotent); ``recreate`` replaces
    an invalidated slot (accepting the loss)."""
    await check_server(store)
    done: list[str] = []
    if not await store._call("fetchval", "wal_publication_exists", publication):
        await _ddl(store, "wal_create_publication", publication)
        done.append(f"publication {publication}: created")
    else:
        done.append(f"publication {publication}: exists")
    row = await store._call("fetchrow", "wal_slot", slot)
    if row is not None and row["wal_status"] == "lost":
        if not recreate:
            raise _invalidated(slot)
        await store._call("execute", "wal_drop_slot", slot)
        log_event(logger, "relay.wal.slot_recreated", level=logging.ERROR, slot=slot,
                  detail="the invalidated slot was dropped: events it had not delivered are "
                  "lost")  # fmt: skip
        row = None
        done.append(f"slot {slot}: invalidated, dropped (events it held are lost)")
    if row is None:
        await store._call("fetchval", "wal_create_slot", slot)
        done.append(f"slot {slot}: created (pgoutput)")
    elif row["plugin"] != "pgoutput":
        raise WalCaptureError(
            f"replication slot {slot} exists with plugin {row['plugin']}, not pgoutput: drop it "
            "or choose another name (RELAY_WAL_SLOT)"
        )
    else:
        done.append(f"slot {slot}: exists")
    await store._call("execute", "wal_register", slot)  # the relay's functions may read it
    return done


async def teardown(store: PgStore, slot: str, publication: str) -> list[str]:
    """Drop the slot (the WAL it held is released) and the publication."""
    row = await store._call("fetchrow", "wal_slot", slot)
    done = []
    if row is not None:
        if row["active"]:
            raise WalCaptureError(
                f"replication slot {slot} is in use right now: stop the relays first"
            )
        await store._call("execute", "wal_drop_slot", slot)
        done.append(f"slot {slot}: dropped")
    else:
        done.append(f"slot {slot}: absent")
    await store._call("execute", "wal_unregister", slot)
    await _ddl(store, "wal_drop_publication", publication)
    done.append(f"publication {publication}: dropped")
    return done


async def ensure_usable(
    store: PgStore, slot: str, publication: str, *, accept_lost: bool, stream: bool = False
) -> None:
    """Before the relay reads: the server can, the slot exists and is not invalidated, and
    with ``stream`` (RELAY_WAL_READ=stream) the relay's role may open a replication
    connection."""
    await check_server(store)
    if stream:
        role = await store._call("fetchrow", "wal_role")
        if not (role["rolreplication"] or role["rolsuper"]):
            raise WalCaptureError(
                f"RELAY_WAL_READ=stream needs a role with the REPLICATION attribute and "
                f"{role['rolname']} has none: ALTER ROLE {role['rolname']} REPLICATION (as a "
                "superuser), or use RELAY_WAL_READ=functions (the default, no REPLICATION)"
            )
    row = await store._call("fetchrow", "wal_slot", slot)
    if row is None:
        raise WalCaptureError(
            f"replication slot {slot} does not exist: run `vertector-relay wal setup` before "
            "producers switch to OUTBOX_CAPTURE=wal (events emitted before it are not captured)"
        )
    if row["wal_status"] == "lost":
        log_event(logger, "relay.wal.slot_invalidated", level=logging.ERROR, slot=slot,
                  accepted=accept_lost, detail="events may have been lost")  # fmt: skip
        if not accept_lost:
            raise _invalidated(slot)
        await setup(store, slot, publication, recreate=True)
    elif not await store._call("fetchval", "wal_publication_exists", publication):
        raise WalCaptureError(
            f"publication {publication} does not exist: run `vertector-relay wal setup`"
        )
    if not await store._call("fetchval", "wal_registered", slot):
        raise WalCaptureError(
            f"replication slot {slot} is not registered for the outbox (no row in "
            "outbox_wal_readers): run `vertector-relay wal setup` as the schema's owner "
            "(idempotent; slots set up before migration 0007 need it once)"
        )


async def slot_status(store: PgStore, slot: str, publication: str) -> dict[str, Any]:
    """What ``wal status`` shows: the server, the slot's state, lag and the reader."""
    server = dict(await store._call("fetchrow", "wal_server"))
    row = await store._call("fetchrow", "wal_slot", slot)
    report: dict[str, Any] = {
        "slot": slot,
        "publication": publication,
        "wal_level": server["wal_level"],
        "max_slot_wal_keep_size": server["max_slot_wal_keep_size"],
        "exists": row is not None,
    }
    if row is None:
        return report
    lease = await store._call("fetchrow", "wal_lease_status", slot)
    reader = None
    if lease is not None and lease["owner"] is not None and (lease["expires_in"] or 0) > 0:
        reader = lease["owner"]
    report |= {
        "active": row["active"],
        "wal_status": row["wal_status"],
        "invalidated": row["wal_status"] == "lost",
        "lag_bytes": row["lag_bytes"],
        "retained_bytes": row["retained_bytes"],
        "safe_wal_size": row["safe_wal_size"],
        "reader": reader,
        "oldest_unconfirmed_age_seconds": None,
    }
    if row["wal_status"] != "lost" and not row["active"]:
        report["oldest_unconfirmed_age_seconds"] = await _oldest_age(store, slot, publication)
    return report


async def _oldest_age(store: PgStore, slot: str, publication: str) -> float | None:
    """Age of the oldest transaction not yet confirmed (a peek of one transaction)."""
    try:
        records = await store._call("fetch", "wal_peek", slot, 1, publication)
    except StoreError:  # the relay took the slot meanwhile: no answer now
        return None
    for txn in transactions((r["lsn"], r["data"]) for r in records):
        return round((datetime.now(UTC) - txn.committed_at).total_seconds(), 3)
    return 0.0


def format_status(report: dict[str, Any]) -> str:
    lines = [f"slot {report['slot']} (publication {report['publication']}), "
             f"wal_level={report['wal_level']}"]  # fmt: skip
    if not report["exists"]:
        return "\n".join([*lines, "slot does not exist: run `vertector-relay wal setup`"])
    if report["invalidated"]:
        lines.append("SLOT INVALIDATED (wal_status=lost): events may be lost; see --help")
    age = report["oldest_unconfirmed_age_seconds"]
    lines += [
        f"lag                     {report['lag_bytes']} bytes",
        f"oldest unconfirmed age  {'n/a (slot busy)' if age is None else f'{age} s'}",
        f"WAL retained            {report['retained_bytes']} bytes "
        f"(max_slot_wal_keep_size {report['max_slot_wal_keep_size']})",
        f"reader                  {report['reader'] or '(none)'}",
    ]
    return "\n".join(lines)


async def setup_database(database_url: str) -> list[str]:
    """:func:`setup` for the database at ``database_url`` with the default slot and
    publication names (tests, benchmarks)."""
    return await _on_database(database_url, setup)


async def teardown_database(database_url: str) -> list[str]:
    """:func:`teardown` of the default slot and publication (benchmarks: each WAL
    measurement starts from a fresh slot, not behind the WAL of the ones before)."""
    return await _on_database(database_url, teardown)


async def _on_database(
    database_url: str, command: Callable[[PgStore, str, str], Awaitable[list[str]]]
) -> list[str]:
    from relay.settings import RelaySettings

    settings = RelaySettings(database_url=database_url)
    store = PgStore(settings.dsn, pool_size=2)
    await store.open()
    try:
        return await command(store, settings.slot_name, settings.wal_publication)
    finally:
        await store.close()
