"""Fixtures: real servers (see tests/harness.py), a clean database and clean streams per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js.errors import NotFoundError

from relay import schema
from tests.harness import (
    TEMPLATE_DB,
    NatsTarget,
    PgTarget,
    create_database,
    drop_database,
    nats_target,
    postgres_target,
)

# The product's streams and the schema registry's bucket (a test publishes contracts into it).
SUITE_STREAMS = {"ACADEMIC_EVENTS", "NOTES_EVENTS", "DEAD_LETTERS", "KV_VERTECTOR_SCHEMAS"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tiers by folder: tests/unit needs no server; the rest do.
    for item in items:
        path = str(item.path)
        for tier in ("unit", "integration", "acceptance"):
            if f"/tests/{tier}/" in path:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def pg() -> Iterator[PgTarget]:
    with postgres_target() as target:
        yield target


@pytest.fixture(scope="session")
async def pg_template(pg: PgTarget) -> str:
    """A database migrated to head once; every test clones it."""
    import asyncpg

    from tests.harness import asyncpg_url

    conn = await asyncpg.connect(asyncpg_url(pg.admin_url))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    await asyncio.to_thread(schema.upgrade, pg.url(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
async def database_url(pg: PgTarget, pg_template: str) -> AsyncIterator[str]:
    """``postgresql://`` URL of a fresh database already migrated to head."""
    name = await create_database(pg, pg_template)
    yield pg.url(name)
    await drop_database(pg, name)


@pytest.fixture
async def empty_database_url(pg: PgTarget) -> AsyncIterator[str]:
    """``postgresql://`` URL of a fresh database with no outbox schema."""
    name = await create_database(pg, "template0")
    yield pg.url(name)
    await drop_database(pg, name)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsTarget]:
    with nats_target() as target:
        yield target


@pytest.fixture
async def nats_url(nats_server: NatsTarget) -> str:
    """URL of the suite's nats-server, with the suite's streams deleted first.

    On a server the suite started, every stream goes; on a shared one (OUTBOX_TEST_NATS_URL)
    only the product's stream names and ``T_``-prefixed test streams do.
    """
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            ours = name in SUITE_STREAMS or name.startswith("T_")
            if nats_server.server is not None or ours:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(name)
    finally:
        await nc.close()
    return nats_server.url


@pytest.fixture(scope="session")
async def wal_level(pg: PgTarget) -> str:
    import asyncpg

    from tests.harness import asyncpg_url

    conn = await asyncpg.connect(asyncpg_url(pg.admin_url))
    try:
        return str(await conn.fetchval("SHOW wal_level"))
    finally:
        await conn.close()


@pytest.fixture(params=["functions", "stream"])
async def wal_database_url(
    request: pytest.FixtureRequest,
    wal_level: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[str]:
    """A fresh migrated database with WAL capture set up (slot and publication), producers
    and relay processes switched to ``OUTBOX_CAPTURE=wal`` for the test, once for each way of
    reading the slot (``RELAY_WAL_READ``). Skipped, with one reason, on a server whose
    wal_level is not logical."""
    from tests.walsupport import skip_unless_logical, wal_mode

    skip_unless_logical(wal_level)
    async with wal_mode(database_url, monkeypatch, read=request.param):
        yield database_url
