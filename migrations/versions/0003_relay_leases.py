"""Partition leases and relay instances: several relays share the work, one per partition.

Revision ID: 0003_relay_leases
Revises: 0002_inbox
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_relay_leases"
down_revision: str | None = "0002_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITIONS = 64


def upgrade() -> None:
    op.create_table(
        "outbox_relay_instances",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    leases = op.create_table(
        "outbox_relay_leases",
        sa.Column("partition", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.Text),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(leases, [{"partition": p} for p in range(PARTITIONS)])


def downgrade() -> None:
    op.drop_table("outbox_relay_leases")
    op.drop_table("outbox_relay_instances")
