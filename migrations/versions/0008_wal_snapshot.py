"""WAL capture: the relay may log a standby snapshot, so that its slot's restart point follows.

Revision ID: 0008_wal_snapshot
Revises: 0007_wal_functions
Create Date: 2026-12-03

Every ``pg_logical_slot_peek_binary_changes`` and ``pg_replication_slot_advance`` decodes the
WAL from the slot's ``restart_lsn``, not from its confirmed position, and ``restart_lsn`` moves
only past a *running transactions* record, which PostgreSQL writes every 15 s (bgwriter) and
at checkpoints. Under a steady 5,000 events/s the slot's restart point was measured 75 MB
behind after 10 s, so each read re-decoded tens of megabytes. ``outbox_wal_snapshot(slot,
owner)`` writes one such record (``pg_log_standby_snapshot()``, PostgreSQL 16+) as the
function's owner, for the slot's current reader only (fenced like ``outbox_wal_advance``);
the relay calls it a few times a second while it moves the slot.

``pg_log_standby_snapshot`` is executable by superusers only unless granted: an owner that is
not one needs ``GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() TO <owner>``. Without it
(or on PostgreSQL 15) the relay warns once, naming that, and reads as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_wal_snapshot"
down_revision: str | None = "0007_wal_functions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# plpgsql: the body is resolved when called, so the migration also runs on PostgreSQL 15.
CREATE = r"""
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_wal_snapshot(_slot text, _owner text)
        RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM %1$I.outbox_wal_readers
                           WHERE slot = _slot AND owner = _owner AND expires_at > now()) THEN
                RETURN false;
            END IF;
            PERFORM pg_log_standby_snapshot();
            RETURN true;
        END
        $$
    $f$, current_schema());
END
$do$
"""


def upgrade() -> None:
    op.execute(CREATE)
    op.execute("REVOKE ALL ON FUNCTION outbox_wal_snapshot(text, text) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS outbox_wal_snapshot(text, text)")
