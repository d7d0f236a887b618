"""Alembic environment for the outbox schema (`alembic upgrade head`, `vertector-relay migrate`)."""

from __future__ import annotations

from pathlib import Path

#: The folder Alembic's ``script_location`` points to, wherever the package is installed.
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
