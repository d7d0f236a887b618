"""Runs migrations on an async engine; the URL comes from OUTBOX_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from outbox_client.dburl import asyncpg_sqlalchemy_url
from outbox_client.table import metadata as target_metadata

config = context.config
VERSION_TABLE = config.get_main_option("version_table") or "outbox_alembic_version"


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("OUTBOX_DATABASE_URL")
    if not url:
        raise SystemExit(
            "OUTBOX_DATABASE_URL is not set: export it, e.g. "
            "OUTBOX_DATABASE_URL=postgresql://user@127.0.0.1:5432/app"
        )
    return asyncpg_sqlalchemy_url(url)


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        compare_type=True,
        include_object=_ours,
        literal_binds=connection is None,
    )


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # Only our tables are compared: an application database holds others.
    if type_ == "table":
        return name in target_metadata.tables
    return True


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    # A server that does not answer fails the migration in 10 s rather than asyncpg's 60.
    timeout = float(config.attributes.get("connect_timeout", 10.0))
    engine = create_async_engine(_url(), poolclass=pool.NullPool, connect_args={"timeout": timeout})
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
