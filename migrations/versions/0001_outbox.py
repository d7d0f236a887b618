"""The outbox table, its indexes and the wake-up trigger.

Revision ID: 0001_outbox
Revises:
Create Date: 2026-11-27

Frozen on purpose: a revision describes the schema at its time and never imports the live
table definition. ``tests/integration/test_migrations.py`` checks that head matches
``outbox_client.table`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_outbox"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITION_SQL = "((('x' || substr(md5(partition_key), 1, 8))::bit(32)::bigint % 64))"


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column(
            "partition", sa.SmallInteger, sa.Computed(PARTITION_SQL, persisted=True), nullable=False
        ),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column(
            "headers", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("stream", sa.Text),
        sa.Column("stream_seq", sa.BigInteger),
        sa.Column("quarantined_at", sa.DateTime(timezone=True)),
    )
    op.create_index("outbox_events_event_id_key", "outbox_events", ["event_id"], unique=True)
    op.create_index(
        "outbox_events_pending_idx",
        "outbox_events",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL AND quarantined_at IS NULL"),
    )
    op.create_index(
        "outbox_events_sent_at_idx",
        "outbox_events",
        ["sent_at"],
        postgresql_where=sa.text("sent_at IS NOT NULL"),
    )
    op.create_index(
        "outbox_events_quarantined_idx",
        "outbox_events",
        ["quarantined_at"],
        postgresql_where=sa.text("quarantined_at IS NOT NULL"),
    )
    # A queue table: rows die as fast as they are born. Vacuum it by row count, not by share
    # of the table, so that dead tuples (and the table) stay bounded under steady load.
    op.execute(
        "ALTER TABLE outbox_events SET (autovacuum_vacuum_scale_factor = 0.0,"
        " autovacuum_vacuum_threshold = 10000, autovacuum_vacuum_cost_delay = 0,"
        " autovacuum_analyze_scale_factor = 0.0, autovacuum_analyze_threshold = 10000)"
    )
    # One notification per inserting statement, delivered at commit; PostgreSQL folds
    # identical notifications of one transaction into one. The relay treats it as a hint only.
    op.execute(
        """
        CREATE FUNCTION outbox_notify_v1() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('vertector_outbox_v1', '');
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER outbox_events_notify_v1
        AFTER INSERT ON outbox_events
        FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify_v1()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_events_notify_v1 ON outbox_events")
    op.execute("DROP FUNCTION IF EXISTS outbox_notify_v1()")
    op.drop_table("outbox_events")
