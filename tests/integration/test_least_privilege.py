"""The relay runs under least-privilege PostgreSQL and NATS identities; the rest is denied."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError
from sqlalchemy.exc import DBAPIError

from devtools.servers import EmbeddedNats, server_dir
from outbox_client import CourseUpdatedEvent, Inbox
from outbox_client.nats_config import NATSConfig
from outbox_client.walframe import WAL_PREFIX, encode
from relay import walslot
from relay.app import RelayApp
from relay.pgstore import PgStore
from relay.settings import RELAY_NATS_DEFAULTS, RelaySettings
from relay.walstore import WalStore
from tests.harness import asyncpg_url
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    produce,
    running_relay,
    stream_messages,
    wait_for_messages,
)
from tests.walsupport import skip_unless_logical, wal_mode

ROOT = Path(__file__).resolve().parents[2]


LOGINS = (
    ("relay_svc", "vertector_relay"),
    ("schedule_svc", "vertector_producer"),
    # Consumers log in under their inbox consumer's name, or as a member of a role of that name.
    ("notes-service", "vertector_consumer"),
    ("grades-service", "vertector_consumer"),
    ("notes_rotated", '"notes-service", vertector_consumer'),
)


async def setup_roles(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        await conn.execute((ROOT / "deploy/postgres/roles.sql").read_text())
        await conn.execute((ROOT / "deploy/postgres/roles.sql").read_text())  # idempotent
        for user, roles in LOGINS:  # roles are cluster-wide: earlier tests may have made them
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
            if not exists:
                await conn.execute(f'CREATE ROLE "{user}" LOGIN IN ROLE {roles}')
    finally:
        await conn.close()


def as_user(database_url: str, user: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"{scheme}://{user}@{rest.split('@', 1)[1]}"


async def connect_as(database_url: str, user: str) -> asyncpg.Connection:
    return await asyncpg.connect(asyncpg_url(as_user(database_url, user)))


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


async def test_relay_role_cannot_delete_unsent_rows(database_url: str, nats_url: str) -> None:
    await setup_roles(database_url)
    await apply_default_streams(nats_url)
    async with engine(as_user(database_url, "schedule_svc")) as eng:
        await produce(eng, [CourseUpdatedEvent(course_code=f"UD{i}", credits=1) for i in range(5)])
    relay = await connect_as(database_url, "relay_svc")
    try:
        for statement in (
            "DELETE FROM outbox_events",
            "DELETE FROM outbox_events WHERE sent_at IS NULL",
            "TRUNCATE outbox_events",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await relay.execute(statement)
        # The two deleting functions it may call leave unsent rows alone: the purge takes only
        # rows marked sent, the PubAck delete only rows of partitions it holds a live lease on.
        ids = [r["id"] for r in await relay.fetch("SELECT id FROM outbox_events")]
        assert await relay.fetchval("SELECT outbox_purge_sent(0, 1000)") == 0
        assert await relay.fetchval("SELECT outbox_delete_acked($1, 'relay_svc')", ids) == 0
        assert await relay.fetchval("SELECT count(*) FROM outbox_events") == 5
    finally:
        await relay.close()
    # What it needs still works: a relay that keeps sent rows marks them, then purges them.
    relay_url = as_user(database_url, "relay_svc")
    async with running_relay(
        relay_url, nats_url, retention_seconds=0.2, purge_interval_seconds=0.2
    ):
        assert await wait_for_messages(nats_url, 5) == 5
        assert await wait_for_rows(database_url, 0)


async def wait_for_rows(database_url: str, count: int, timeout: float = 30) -> bool:
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if await conn.fetchval("SELECT count(*) FROM outbox_events") == count:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await conn.close()


async def test_relay_role_in_wal_mode_relays_without_replication_and_is_denied_the_rest(
    database_url: str, nats_url: str, wal_level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OUTBOX_CAPTURE=wal under the same roles: the producer emits events with no new grant,
    the relay (no REPLICATION) reads, advances and quarantines through migration 0007's
    functions only for the slot `wal setup` registered; the slot functions themselves, other
    slots, a publication of tables and the lease of another reader are refused."""
    skip_unless_logical(wal_level)
    await setup_roles(database_url)
    await apply_default_streams(nats_url)
    producer_url = as_user(database_url, "schedule_svc")
    relay_url = as_user(database_url, "relay_svc")
    settings = RelaySettings(database_url=database_url)
    slot, publication = settings.slot_name, settings.wal_publication
    owner = await asyncpg.connect(asyncpg_url(database_url))
    relay = await connect_as(database_url, "relay_svc")
    async with wal_mode(database_url, monkeypatch):  # `wal setup` as the owner
        try:
            events = [CourseUpdatedEvent(course_code=f"WP{i}", credits=1) for i in range(20)]
            async with engine(producer_url) as eng:
                await produce(eng, events[:10])
            producer = await asyncpg.connect(asyncpg_url(producer_url))
            try:  # a poison frame, as a producer in another language could write it
                poison = uuid.uuid4()
                frame = encode(poison, "x", "academic.course.*", "WP0", b"{}", {})
                await producer.execute(
                    "SELECT pg_logical_emit_message(true, $1, $2::bytea)", WAL_PREFIX, frame
                )
            finally:
                await producer.close()
            async with engine(producer_url) as eng:
                await produce(eng, events[10:])
            async with running_relay(relay_url, nats_url, capture="wal"):
                assert await wait_for_messages(nats_url, 20) == 20
                for _ in range(100):
                    if await owner.fetchval("SELECT count(*) FROM outbox_events"):
                        break
                    await asyncio.sleep(0.1)
            assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in events]
            [row] = await owner.fetch("SELECT event_id, quarantined_at, last_error FROM"
                                      " outbox_events")  # fmt: skip
            assert row["event_id"] == poison and row["quarantined_at"] is not None
            assert "wildcard" in row["last_error"]
            # The slot moved past everything (the relay stopped gracefully after its PubAcks).
            left = await owner.fetch("SELECT * FROM outbox_wal_peek($1, NULL, $2)", slot,
                                     publication)  # fmt: skip
            assert not any(WAL_PREFIX.encode() in r["data"] for r in left)

            assert not await relay.fetchval(
                "SELECT rolreplication FROM pg_roles WHERE rolname = 'vertector_relay'"
            )
            await owner.execute("SELECT pg_create_logical_replication_slot('lp_other', 'pgoutput')")
            await owner.execute("CREATE PUBLICATION lp_leaky FOR TABLE outbox_inbox")
            denied = (
                # The slot functions themselves (REPLICATION only).
                ("SELECT * FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,"
                 " 'proto_version', '1', 'publication_names', 'lp_leaky')", slot),
                ("SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())", slot),
                ("SELECT pg_drop_replication_slot($1)", slot),
                ("SELECT pg_create_logical_replication_slot('lp_rogue', 'test_decoding')",),
                ("SELECT pg_log_standby_snapshot()",),  # only through outbox_wal_snapshot
                # The outbox's functions, on a slot `wal setup` did not register or through a
                # publication that would hand over a table's rows.
                ("SELECT * FROM outbox_wal_peek('lp_other', NULL, $1)", publication),
                ("SELECT * FROM outbox_wal_peek($1, NULL, 'lp_leaky')", slot),
                # Registering a slot, or an event that would be published.
                ("INSERT INTO outbox_wal_readers (slot) VALUES ('lp_other')",),
                ("UPDATE outbox_wal_readers SET slot = 'lp_other'",),
                ("INSERT INTO outbox_events (event_id, event_type, subject, partition_key,"
                 " payload) VALUES (gen_random_uuid(), 't', 'academic.x', 'k', '')",),
                ("DELETE FROM outbox_events",),
            )  # fmt: skip
            for statement, *args in denied:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await relay.execute(statement, *args)
            # Fenced by the reader lease: another owner name moves nothing, writes nothing.
            before = await owner.fetchval(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot
            )
            await owner.execute("SELECT pg_logical_emit_message(true, 'lp', 'x')")
            assert await relay.fetchval(
                "SELECT outbox_wal_advance($1, (pg_current_wal_lsn() - '0/0')::bigint,"
                " 'intruder')", slot,
            ) is None  # fmt: skip
            assert await relay.fetchval(
                "SELECT outbox_wal_quarantine(ARRAY[gen_random_uuid()], '{t}', '{academic.x}',"
                " '{k}', ARRAY[''::bytea], '{\"{}\"}', '{1}', '{r}', ARRAY[now()], $1,"
                " 'intruder')", slot,
            ) == 0  # fmt: skip
            assert await relay.fetchval("SELECT outbox_wal_snapshot($1, 'intruder')", slot) is False
            after = await owner.fetchval(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1", slot
            )
            assert after == before
            assert await owner.fetchval("SELECT count(*) FROM outbox_events") == 1
        finally:
            await relay.close()
            await owner.execute("DROP PUBLICATION IF EXISTS lp_leaky")
            await owner.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = 'lp_other'"
            )
            await owner.close()


async def test_relay_role_streams_the_slot_only_with_replication(
    database_url: str, nats_url: str, wal_level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RELAY_WAL_READ=stream under the least-privilege login: refused at start in one line
    naming the REPLICATION attribute and the alternative; with the attribute on the login (it
    is not inherited), the relay streams, confirms and leaves nothing behind."""
    skip_unless_logical(wal_level)
    await setup_roles(database_url)
    await apply_default_streams(nats_url)
    relay_url = as_user(database_url, "relay_svc")
    settings = RelaySettings(database_url=database_url)
    owner = await asyncpg.connect(asyncpg_url(database_url))
    async with wal_mode(database_url, monkeypatch, read="stream"):
        store = PgStore(asyncpg_url(relay_url))
        await store.open()
        try:
            with pytest.raises(walslot.WalCaptureError) as refused:
                await walslot.ensure_usable(
                    store, settings.slot_name, settings.wal_publication, accept_lost=False,
                    stream=True,
                )  # fmt: skip
            assert str(refused.value) == (
                "RELAY_WAL_READ=stream needs a role with the REPLICATION attribute and relay_svc "
                "has none: ALTER ROLE relay_svc REPLICATION (as a superuser), or use "
                "RELAY_WAL_READ=functions (the default, no REPLICATION)"
            )
            await owner.execute("ALTER ROLE relay_svc REPLICATION")
            events = [CourseUpdatedEvent(course_code=f"WS{i}", credits=1) for i in range(10)]
            async with engine(as_user(database_url, "schedule_svc")) as eng:
                await produce(eng, events)
            async with running_relay(relay_url, nats_url, capture="wal") as app:
                assert isinstance(app.store, WalStore) and app.store.stream_target is not None
                assert await wait_for_messages(nats_url, 10) == 10
            assert event_ids(await stream_messages(nats_url)) == [e.event_id for e in events]
            left = await owner.fetch(
                "SELECT * FROM outbox_wal_peek($1, NULL, $2)", settings.slot_name,
                settings.wal_publication,
            )  # fmt: skip
            assert not any(WAL_PREFIX.encode() in r["data"] for r in left)
        finally:
            await store.close()
            await owner.execute("ALTER ROLE relay_svc NOREPLICATION")
            await owner.close()


async def test_consumer_role_reaches_only_its_own_inbox_rows(database_url: str) -> None:
    await setup_roles(database_url)
    owner = await asyncpg.connect(asyncpg_url(database_url))
    grades_event = uuid.uuid4()
    await owner.execute(
        "INSERT INTO outbox_inbox (consumer, event_id, event_type) VALUES ($1, $2, 't')",
        "grades-service", grades_event,
    )  # fmt: skip
    notes = await connect_as(database_url, "notes-service")
    try:
        event = CourseUpdatedEvent(course_code="IN1", credits=1)
        applied: list[str] = []

        async def effect(conn: object, e: object) -> None:
            applied.append("notes")

        async with engine(as_user(database_url, "notes-service")) as eng:
            assert await Inbox(eng, "notes-service").apply(event, effect)
            assert not await Inbox(eng, "notes-service").apply(event, effect)
            # Posing as another consumer: recording for it (so it would skip an event) fails.
            with pytest.raises(DBAPIError, match="row-level security"):
                await Inbox(eng, "grades-service").apply(event, effect)
        assert applied == ["notes"]
        assert [r["consumer"] for r in await notes.fetch("SELECT * FROM outbox_inbox")] == [
            "notes-service"
        ]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            await notes.execute(
                "INSERT INTO outbox_inbox (consumer, event_id, event_type)"
                " VALUES ('grades-service', gen_random_uuid(), 't')"
            )
        # Deleting another consumer's record (so it would re-apply the event) reaches nothing.
        assert await notes.execute("DELETE FROM outbox_inbox") == "DELETE 1"
    finally:
        await notes.close()
    try:
        left = await owner.fetch("SELECT consumer, event_id FROM outbox_inbox")
        assert [(r["consumer"], r["event_id"]) for r in left] == [("grades-service", grades_event)]
        # A login in the role named like the consumer (password rotation) shares its rows.
        rotated = await connect_as(database_url, "notes_rotated")
        try:
            await rotated.execute(
                "INSERT INTO outbox_inbox (consumer, event_id, event_type)"
                " VALUES ('notes-service', gen_random_uuid(), 't')"
            )
            assert await rotated.fetchval("SELECT count(*) FROM outbox_inbox") == 1
        finally:
            await rotated.close()
    finally:
        await owner.close()


async def test_relay_nats_user_may_publish_events_and_nothing_else(database_url: str) -> None:
    base = server_dir("vertector-perm-")
    config = (ROOT / "deploy/nats/relay-permissions.conf").read_text()
    config = config.replace("$ADMIN_PASSWORD", "admin-pw").replace("$RELAY_PASSWORD", "relay-pw")
    server = EmbeddedNats(base / "nats", config=config)
    server.start()
    try:
        admin_url = f"nats://admin:admin-pw@127.0.0.1:{server.port}"
        await apply_default_streams(admin_url)
        # The relay's NATS settings as `vertector-relay run` builds them (its private inbox).
        relay_nats = NATSConfig(
            servers=[server.url], enable_auth=True, username="relay", password="relay-pw",
            **RELAY_NATS_DEFAULTS,
        )  # fmt: skip
        app = RelayApp(RelaySettings(database_url=database_url, metrics_port=-1), relay_nats)
        stop = asyncio.Event()
        task = asyncio.create_task(app.run(stop))
        async with engine(database_url) as eng:
            await produce(eng, [CourseUpdatedEvent(course_code="NP", credits=1)])
            assert await wait_for_messages(admin_url, 1) == 1
        stop.set()
        await asyncio.wait_for(task, 30)
        assert app.stats.published == 1

        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        nc = await nats.connect(f"nats://relay:relay-pw@127.0.0.1:{server.port}", error_cb=on_error)
        admin = await nats.connect(admin_url)
        try:
            js = nc.jetstream()
            with pytest.raises((APIError, nats.errors.TimeoutError)):
                await js.delete_stream("ACADEMIC_EVENTS")
            await nc.publish("payroll.salaries", b"x")
            # Another client's replies come back on _INBOX.>: the relay's user may not listen.
            overheard: list[str] = []

            async def overhear(msg: Msg) -> None:
                overheard.append(msg.subject)

            await nc.subscribe("_INBOX.>", cb=overhear)
            await nc.flush()
            await admin.jetstream().stream_info("ACADEMIC_EVENTS")  # answered on admin's inbox
            await admin.request("$JS.API.INFO", b"", timeout=5)
            await nc.flush()
            expected = (
                'permissions violation for publish to "payroll.salaries"',
                "stream.delete",
                'permissions violation for subscription to "_inbox.>"',
            )
            deadline = asyncio.get_running_loop().time() + 20
            while asyncio.get_running_loop().time() < deadline:
                violations = " ".join(str(e).lower() for e in errors)
                if all(text in violations for text in expected):
                    break
                await asyncio.sleep(0.05)
            for text in expected:
                assert text in violations
            assert overheard == []
        finally:
            await admin.close()
            await nc.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
