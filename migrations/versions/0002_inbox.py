"""The consumer inbox: applied events per consumer, for exactly-once effects.

Revision ID: 0002_inbox
Revises: 0001_outbox
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_inbox"
down_revision: str | None = "0001_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_inbox",
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Uuid(as_uuid=True), primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("outbox_inbox_processed_at_idx", "outbox_inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_table("outbox_inbox")
