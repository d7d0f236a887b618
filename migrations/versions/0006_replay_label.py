"""A replay's label is a column the replay sets, not a header a producer could write.

Revision ID: 0006_replay_label
Revises: 0005_wal_readers
Create Date: 2026-11-29

``vertector-relay replay --fresh-ids`` marks the rows it replays with a label, and the relay
sends them with ``Nats-Msg-Id = <event_id>:<label>`` (a fresh id JetStream stores even inside
its duplicate window). The label used to be a ``Vertector-Replay`` header in ``headers``, which
any producer may write: a forged one changed the Msg-Id, and with it JetStream's deduplication.
Now it is ``replay_label``, which only the replay (run as the table's owner) sets: the producer
role of ``deploy/postgres/roles.sql`` may insert only the event's own columns, and the relay
quarantines a row that carries a ``Vertector-Replay`` header.

Rows waiting when this runs keep a replay they were given: their header's label moves to the
column (the relay before this migration would have used it too); the header is removed from
every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_replay_label"
down_revision: str | None = "0005_wal_readers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("replay_label", sa.Text))
    op.execute(
        """
        UPDATE outbox_events
        SET replay_label = CASE WHEN sent_at IS NULL AND quarantined_at IS NULL
                                THEN headers->>'Vertector-Replay' END,
            headers = headers - 'Vertector-Replay'
        WHERE headers ? 'Vertector-Replay'
        """
    )


def downgrade() -> None:
    op.execute(
        """
        UPDATE outbox_events
        SET headers = headers || jsonb_build_object('Vertector-Replay', replay_label)
        WHERE replay_label IS NOT NULL
        """
    )
    op.drop_column("outbox_events", "replay_label")
