"""Database URL forms: users give ``postgresql://``; SQLAlchemy and asyncpg each want their own."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from outbox_client.errors import OutboxError


def _parse(url: str) -> tuple[str, str]:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise OutboxError(f"not a database URL: {exc}; expected postgresql://user@host/db") from exc
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "postgres"):
        raise OutboxError(
            f"the outbox needs PostgreSQL, got a {backend!r} URL; "
            "use postgresql://user@host:5432/db"
        )
    return parsed.drivername, parsed.render_as_string(hide_password=False)


def asyncpg_sqlalchemy_url(url: str) -> str:
    """``postgresql[+driver]://...`` -> ``postgresql+asyncpg://...``."""
    _, rendered = _parse(url)
    return "postgresql+asyncpg://" + rendered.split("://", 1)[1]


def asyncpg_dsn(url: str) -> str:
    """``postgresql[+driver]://...`` -> ``postgresql://...`` as asyncpg.connect() takes it."""
    _, rendered = _parse(url)
    return "postgresql://" + rendered.split("://", 1)[1]
