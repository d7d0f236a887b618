"""WAL capture: one active reader per logical replication slot, through a lease.

Revision ID: 0005_wal_readers
Revises: 0004_relay_delete_functions
Create Date: 2026-11-29

With ``OUTBOX_CAPTURE=wal`` the relay reads a replication slot instead of claiming rows; only
one relay may read (and advance) a slot at a time. ``outbox_wal_readers`` holds that lease,
fenced like the partition leases: the slot is only advanced by its current, unexpired owner.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_wal_readers"
down_revision: str | None = "0004_relay_delete_functions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_wal_readers",
        sa.Column("slot", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("outbox_wal_readers")
