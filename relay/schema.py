"""Schema migrations from code: what `vertector-relay migrate` runs, same as `alembic upgrade`."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from vertector_migrations import SCRIPT_LOCATION

#: Seconds to reach PostgreSQL before a migration fails (asyncpg would wait 60).
CONNECT_TIMEOUT = 10.0


def alembic_config(url: str) -> Config:
    """An Alembic config for the packaged migrations and ``url`` (any postgresql:// form)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("version_table", "outbox_alembic_version")
    config.attributes["url"] = url
    config.attributes["connect_timeout"] = CONNECT_TIMEOUT
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``. Blocking: call it outside an event loop
    (or through ``asyncio.to_thread``)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` removes everything the outbox created)."""
    command.downgrade(alembic_config(url), revision)
