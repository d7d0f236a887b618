"""The relay runs under least-privilege PostgreSQL and NATS identities; the rest is denied."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
from nats.js.errors import APIError

from devtools.servers import EmbeddedNats, server_dir
from outbox_client import CourseUpdatedEvent
from outbox_client.nats_config import NATSConfig
from relay.app import RelayApp
from relay.settings import RelaySettings
from tests.harness import asyncpg_url
from tests.relayrun import apply_default_streams, engine, produce, running_relay, wait_for_messages

ROOT = Path(__file__).resolve().parents[2]


async def setup_roles(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        await conn.execute((ROOT / "deploy/postgres/roles.sql").read_text())
        for user, role in (
            ("relay_svc", "vertector_relay"),
            ("schedule_svc", "vertector_producer"),
        ):
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
            if not exists:
                await conn.execute(f"CREATE ROLE {user} LOGIN IN ROLE {role}")
    finally:
        await conn.close()


def as_user(database_url: str, user: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"{scheme}://{user}@{rest.split('@', 1)[1]}"


async def test_relay_and_producer_roles_have_only_what_they_need(
    database_url: str, nats_url: str
) -> None:
    await setup_roles(database_url)
    await apply_default_streams(nats_url)
    producer_url = as_user(database_url, "schedule_svc")
    relay_url = as_user(database_url, "relay_svc")

    async with engine(producer_url) as eng:
        await produce(eng, [CourseUpdatedEvent(course_code=f"LP{i}", credits=1) for i in range(20)])
    async with running_relay(relay_url, nats_url, retention_seconds=0):
        assert await wait_for_messages(nats_url, 20) == 20

    producer = await asyncpg.connect(asyncpg_url(producer_url))
    relay = await asyncpg.connect(asyncpg_url(relay_url))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await producer.fetch("SELECT * FROM outbox_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await producer.execute("DELETE FROM outbox_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay.execute(
                "INSERT INTO outbox_events (event_id, event_type, subject, partition_key, payload)"
                " VALUES (gen_random_uuid(), 't', 's', 'k', '')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay.execute("UPDATE outbox_events SET payload = ''")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay.execute("DROP TABLE outbox_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await relay.fetch("SELECT * FROM outbox_inbox")
    finally:
        await producer.close()
        await relay.close()


async def test_relay_nats_user_may_publish_events_and_nothing_else(database_url: str) -> None:
    base = server_dir("vertector-perm-")
    config = (ROOT / "deploy/nats/relay-permissions.conf").read_text()
    config = config.replace("$ADMIN_PASSWORD", "admin-pw").replace("$RELAY_PASSWORD", "relay-pw")
    server = EmbeddedNats(base / "nats", config=config)
    server.start()
    try:
        admin_url = f"nats://admin:admin-pw@127.0.0.1:{server.port}"
        await apply_default_streams(admin_url)
        relay_nats = NATSConfig(
            servers=[server.url], enable_auth=True, username="relay", password="relay-pw"
        )
        app = RelayApp(RelaySettings(database_url=database_url, metrics_port=-1), relay_nats)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        async with engine(database_url) as eng:
            await produce(eng, [CourseUpdatedEvent(course_code="NP", credits=1)])
            assert await wait_for_messages(admin_url, 1) == 1
        stop.set()
        await asyncio.wait_for(task, 30)

        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(f"nats://relay:relay-pw@127.0.0.1:{server.port}", error_cb=on_error)
        try:
            js = nc.jetstream()
            with pytest.raises((APIError, nats.errors.TimeoutError)):
                await js.delete_stream("ACADEMIC_EVENTS")
            await nc.publish("payroll.salaries", b"x")
            await nc.flush()
            await asyncio.sleep(0.3)
            violations = " ".join(str(e).lower() for e in errors)
            assert 'permissions violation for publish to "payroll.salaries"' in violations
            assert "stream.delete" in violations
        finally:
            await nc.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
