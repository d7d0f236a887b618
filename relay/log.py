"""Structured logs with stable event names: JSON for machines, key=value for terminals.

Never log payloads or secrets: callers pass ids, counts and reasons only. As a second line of
defence every field is passed through :func:`outbox_client.redact.redact` (credentials inside
URLs), and console values are quoted and escaped, so that a subject holding a newline or
``key=value`` text cannot forge a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from outbox_client.redact import redact


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log ``event`` (a stable dotted name such as ``relay.batch.published``) with fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event_fields": fields})


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("auto", "json", "console")

# Console values are written bare only when they cannot be mistaken for more than one value.
_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-,\[\]()*]+")


def _clean(value: Any) -> Any:
    """Field values as logged: strings (and whatever is not a number) redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


def _console_value(value: Any) -> str:
    text = str(_clean(value))
    return text if _BARE.fullmatch(text) else json.dumps(text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        entry.update({k: _clean(v) for k, v in getattr(record, "event_fields", {}).items()})
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(
            f"{k}={_console_value(v)}" for k, v in getattr(record, "event_fields", {}).items()
        )
        message = redact(record.getMessage())
        event = message if _BARE.fullmatch(message) else json.dumps(message)
        line = f"{ts} {record.levelname.lower():7} {event} {fields}".rstrip()
        if record.exc_info:  # each line of a traceback marked, so none passes for a log line
            trace = redact(self.formatException(record.exc_info))
            line += "".join(f"\n  | {part}" for part in trace.splitlines())
        return line


def setup_logging(fmt: str = "auto", level: str = "INFO") -> None:
    """``fmt``: ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise);
    ``level`` one of :data:`LEVELS` (any case). Anything else is a ``ValueError``."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if level.upper() not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its errors reach us via error_cb
    # Alembic narrates every plugin it loads at INFO: keep its warnings only, unless debugging.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
