from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.table import metadata
from relay import schema
from tests.harness import asyncpg_url

ROOT = Path(__file__).resolve().parents[2]


async def _objects(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
        triggers = await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        functions = await conn.fetch(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        )
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {
        "tables": [r[0] for r in tables],
        "triggers": [r[0] for r in triggers],
        "functions": [r[0] for r in functions],
        "indexes": sorted(r[0] for r in indexes),
    }


async def _diff(url: str) -> list[object]:
    engine = create_async_engine(asyncpg_sqlalchemy_url(url))

    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "outbox_alembic_version"}
        )
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_upgrade_on_an_empty_database_creates_everything(empty_database_url: str) -> None:
    await asyncio.to_thread(schema.upgrade, empty_database_url)
    objects = await _objects(empty_database_url)
    assert "outbox_events" in objects["tables"]
    assert "outbox_events_notify_v1" in objects["triggers"]
    assert "outbox_notify_v1" in objects["functions"]
    assert "outbox_events_pending_idx" in objects["indexes"]


async def test_migrated_schema_matches_the_declared_table(empty_database_url: str) -> None:
    await asyncio.to_thread(schema.upgrade, empty_database_url)
    assert await _diff(empty_database_url) == []


async def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    await asyncio.to_thread(schema.upgrade, empty_database_url)
    await asyncio.to_thread(schema.downgrade, empty_database_url, "base")
    objects = await _objects(empty_database_url)
    assert objects["tables"] == ["outbox_alembic_version"]
    assert objects["functions"] == [] and objects["triggers"] == []
    await asyncio.to_thread(schema.upgrade, empty_database_url)
    assert await _diff(empty_database_url) == []


@pytest.mark.parametrize("form", ["postgresql://", "postgresql+asyncpg://"])
async def test_alembic_cli_from_the_repo_root_reads_outbox_database_url(
    empty_database_url: str, form: str
) -> None:
    url = form + empty_database_url.split("://", 1)[1]
    env = os.environ | {"OUTBOX_DATABASE_URL": url}
    alembic = str(Path(sys.executable).parent / "alembic")
    result = await asyncio.to_thread(
        subprocess.run, [alembic, "upgrade", "head"], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "outbox_events" in (await _objects(empty_database_url))["tables"]


def test_alembic_cli_without_the_url_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTBOX_DATABASE_URL"}
    alembic = str(Path(sys.executable).parent / "alembic")
    result = subprocess.run(
        [alembic, "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "OUTBOX_DATABASE_URL is not set" in result.stderr


async def test_sql_partition_matches_the_python_formula(database_url: str) -> None:
    from outbox_client import partition_of

    keys = ["CS101", "hw-1", "", "ü-ñ", "x" * 200] + [f"k{i}" for i in range(200)]
    conn = await asyncpg.connect(asyncpg_url(database_url))
    try:
        rows = await conn.fetch(
            "SELECT k, ((('x' || substr(md5(k), 1, 8))::bit(32)::bigint % 64))::int AS p "
            "FROM unnest($1::text[]) AS k",
            keys,
        )
    finally:
        await conn.close()
    assert {r["k"]: r["p"] for r in rows} == {k: partition_of(k) for k in keys}
