"""Which capture mode ``enqueue`` writes for: ``table`` or ``wal`` (``OUTBOX_CAPTURE``).

- ``table`` (the default): each event is a row of ``outbox_events``, claimed by the relay,
  deleted (or marked) after its PubAck.
- ``wal``: each event is a transactional logical decoding message,
  ``pg_logical_emit_message(true, 'vertector.outbox.v1', <frame>)``, written in the caller's
  transaction: it exists only if that transaction commits, and the relay reads it from a
  logical replication slot in commit order (``vertector-relay wal setup``). No table row,
  nothing to delete or vacuum.

The mode comes from ``OUTBOX_CAPTURE`` (also read from ``.env``) unless code sets it:

>>> from outbox_client.capture import set_capture
>>> set_capture("wal")  # every later enqueue() in this process emits WAL messages
>>> set_capture(None)  # back to OUTBOX_CAPTURE
"""

from __future__ import annotations

from functools import cache
from typing import Literal, get_args

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from outbox_client.errors import OutboxError

CaptureMode = Literal["table", "wal"]
MODES: tuple[str, ...] = get_args(CaptureMode)


class CaptureSettings(BaseSettings):
    """``OUTBOX_CAPTURE``: ``table`` (default) or ``wal``."""

    model_config = SettingsConfigDict(
        env_prefix="OUTBOX_",
        frozen=True,
        extra="ignore",
        env_file=".env",
        env_ignore_empty=True,
    )

    capture: CaptureMode = "table"


_override: CaptureMode | None = None


@cache
def _from_environment() -> CaptureMode:
    try:
        return CaptureSettings().capture
    except ValidationError as exc:
        raise OutboxError(
            "OUTBOX_CAPTURE must be 'table' or 'wal' (unset means table); fix the variable"
        ) from exc


def capture_mode() -> CaptureMode:
    """The mode ``enqueue`` writes for now: set in code, else ``OUTBOX_CAPTURE``."""
    return _override if _override is not None else _from_environment()


def set_capture(mode: CaptureMode | None) -> None:
    """Choose the mode in code (``None``: back to ``OUTBOX_CAPTURE``). It applies to every
    later write of this process: producers and the relay of one database must agree."""
    global _override
    if mode is not None and mode not in MODES:
        raise OutboxError(f"capture mode must be 'table' or 'wal', got {mode!r}")
    _override = mode
    _from_environment.cache_clear()
