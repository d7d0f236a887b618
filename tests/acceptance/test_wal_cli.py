"""``vertector-relay wal setup|teardown|status`` and the relay's refusals in WAL capture mode,
as a user meets them: one line naming the problem and the fix, exit status 2, no traceback."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator

import asyncpg
import pytest

from devtools.servers import EmbeddedPostgres, server_dir
from relay import schema, walslot
from relay.pgstore import PgStore
from relay.settings import RelaySettings
from tests.acceptance.test_cli_config import clean_env, cli
from tests.harness import asyncpg_url
from tests.walsupport import skip_unless_logical


def one_line_error(result: object, *words: str) -> str:
    """Exit status 2 and one line on stderr besides the JSON log entries, naming ``words``."""
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, (result.returncode, stderr)  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if not line.startswith('{"ts"')]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    err = lines[0]
    for word in words:
        assert word in err, err
    return str(err)


async def test_setup_status_teardown(database_url: str, wal_level: str) -> None:
    skip_unless_logical(wal_level)
    env = clean_env(OUTBOX_DATABASE_URL=database_url)
    slot = RelaySettings(database_url=database_url).slot_name
    first = await asyncio.to_thread(cli, "wal", "setup", env=env)
    assert first.returncode == 0, first.stderr
    assert f"slot {slot}: created (pgoutput)" in first.stdout
    assert "publication vertector_outbox: created" in first.stdout
    again = await asyncio.to_thread(cli, "wal", "setup", env=env)
    assert f"slot {slot}: exists" in again.stdout  # idempotent
    status = await asyncio.to_thread(cli, "wal", "status", "--json", env=env)
    report = json.loads(status.stdout)
    assert report["exists"] and not report["invalidated"] and report["reader"] is None
    assert isinstance(report["lag_bytes"], int) and report["oldest_unconfirmed_age_seconds"] == 0
    human = await asyncio.to_thread(cli, "wal", "status", env=env)
    assert "lag" in human.stdout and "bytes" in human.stdout
    down = await asyncio.to_thread(cli, "wal", "teardown", env=env)
    assert f"slot {slot}: dropped" in down.stdout
    gone = await asyncio.to_thread(cli, "wal", "status", env=env)
    assert "slot does not exist: run `vertector-relay wal setup`" in gone.stdout


async def test_run_without_a_slot_refuses_naming_the_setup_command(
    database_url: str, wal_level: str
) -> None:
    skip_unless_logical(wal_level)
    env = clean_env(OUTBOX_DATABASE_URL=database_url, OUTBOX_CAPTURE="wal",
                    RELAY_METRICS_PORT="-1", NATS_SERVERS="nats://127.0.0.1:1")  # fmt: skip
    result = await asyncio.to_thread(cli, "run", env=env)
    one_line_error(result, "does not exist", "vertector-relay wal setup")


@pytest.fixture(scope="module")
def small_pg() -> Iterator[tuple[EmbeddedPostgres, EmbeddedPostgres]]:
    """Two private servers: one without logical decoding, one that invalidates slots past
    1 MB of retained WAL (the suite's shared server is never reconfigured)."""
    base = server_dir("vertector-wal-")
    replica = EmbeddedPostgres(base / "replica", settings={"wal_level": "replica",
                                                           "max_wal_senders": "4"})  # fmt: skip
    tight = EmbeddedPostgres(base / "tight", settings={"max_slot_wal_keep_size": "1MB"})
    replica.start()
    tight.start()
    try:
        yield replica, tight
    finally:
        replica.stop()
        tight.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_wal_level_not_logical_is_one_line_naming_the_setting(
    small_pg: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    replica, _ = small_pg
    url = replica.url()
    await asyncio.to_thread(schema.upgrade, url)
    env = clean_env(OUTBOX_DATABASE_URL=url)
    one_line_error(await asyncio.to_thread(cli, "wal", "setup", env=env),
                   "wal_level=logical", "wal_level=replica")  # fmt: skip
    run_env = env | {"OUTBOX_CAPTURE": "wal", "RELAY_METRICS_PORT": "-1",
                     "NATS_SERVERS": "nats://127.0.0.1:1"}  # fmt: skip
    one_line_error(await asyncio.to_thread(cli, "run", env=run_env), "wal_level=logical")


async def test_slot_invalidated_while_the_relay_was_down_is_refused_until_acknowledged(
    small_pg: tuple[EmbeddedPostgres, EmbeddedPostgres],
) -> None:
    _, tight = small_pg
    url = tight.url()
    await asyncio.to_thread(schema.upgrade, url)
    env = clean_env(OUTBOX_DATABASE_URL=url)
    assert (await asyncio.to_thread(cli, "wal", "setup", env=env)).returncode == 0
    # The relay is down; WAL piles up past max_slot_wal_keep_size and a checkpoint drops it.
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        await conn.execute("CREATE TABLE filler (x text)")
        for _ in range(4):
            await conn.execute(
                "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 3000)"
            )
            await conn.execute("SELECT pg_switch_wal()")
        await conn.execute("CHECKPOINT")
        slot = RelaySettings(database_url=url).slot_name
        state = await conn.fetchval(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", slot
        )
    finally:
        await conn.close()
    assert state == "lost"
    run_env = env | {"OUTBOX_CAPTURE": "wal", "RELAY_METRICS_PORT": "-1",
                     "NATS_SERVERS": "nats://127.0.0.1:1"}  # fmt: skip
    refused = await asyncio.to_thread(cli, "run", env=run_env)
    one_line_error(refused, "invalidated", "LOST", "RELAY_WAL_ACCEPT_LOST_EVENTS=true")
    assert '"level": "error", "logger": "relay.walslot", "event": "relay.wal.slot_invalidated"' in (
        refused.stderr
    )  # the loud log entry, too
    status = await asyncio.to_thread(cli, "wal", "status", env=env)
    assert "SLOT INVALIDATED" in status.stdout
    # The explicit acknowledgement: the slot is recreated and usable again.
    store = PgStore(RelaySettings(database_url=url).dsn, pool_size=2)
    await store.open()
    try:
        await walslot.ensure_usable(store, slot, "vertector_outbox", accept_lost=True)
        report = await walslot.slot_status(store, slot, "vertector_outbox")
    finally:
        await store.close()
    assert report["exists"] and not report["invalidated"]


async def test_status_shows_the_slot_in_wal_mode(wal_database_url: str, nats_url: str) -> None:
    from tests.relayrun import apply_default_streams

    await apply_default_streams(nats_url)
    env = clean_env(OUTBOX_DATABASE_URL=wal_database_url, NATS_SERVERS=nats_url,
                    OUTBOX_CAPTURE="wal")  # fmt: skip
    human = await asyncio.to_thread(cli, "status", env=env)
    assert human.returncode == 0, human.stderr
    assert "WAL capture:" in human.stdout and "  lag " in human.stdout, human.stdout
    report = json.loads((await asyncio.to_thread(cli, "status", "--json", env=env)).stdout)
    assert report["wal"]["exists"] and report["wal"]["invalidated"] is False
    table = await asyncio.to_thread(cli, "status", env=env | {"OUTBOX_CAPTURE": "table"})
    assert "WAL capture:" not in table.stdout
