"""The relay deletes outbox rows only through two functions, never with a plain DELETE.

Revision ID: 0004_relay_delete_functions
Revises: 0003_relay_leases
Create Date: 2026-11-29

``outbox_delete_acked(ids, owner)`` deletes rows JetStream acknowledged (retention 0), fenced
like ``mark_sent``: only rows of partitions ``owner`` holds an unexpired lease on, never a
quarantined one. ``outbox_purge_sent(seconds, limit)`` deletes rows marked sent longer ago than
``seconds``. Both run as the table's owner (``SECURITY DEFINER``), so the least-privilege relay
role of ``deploy/postgres/roles.sql`` needs no ``DELETE`` on the table: it cannot remove an
unsent row with a statement of its own. Execution is revoked from PUBLIC; roles.sql grants it.
The functions are created in the schema the migration runs in, and name their tables with it
(a fixed ``search_path``: nothing a caller puts on its path is used).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_relay_delete_functions"
down_revision: str | None = "0003_relay_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Built with format() on the server so that it works offline (`alembic upgrade --sql`) too.
CREATE = r"""
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_delete_acked(_ids bigint[], _owner text) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE n bigint;
        BEGIN
            DELETE FROM %1$I.outbox_events AS o
            USING %1$I.outbox_relay_leases AS l
            WHERE o.id = ANY(_ids) AND o.quarantined_at IS NULL
              AND l.partition = o.partition AND l.owner = _owner AND l.expires_at > now();
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END
        $$
    $f$, current_schema());
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_purge_sent(_older_than_seconds float8, _limit integer)
        RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE n bigint;
        BEGIN
            DELETE FROM %1$I.outbox_events
            WHERE id IN (
                SELECT id FROM %1$I.outbox_events
                WHERE sent_at < now() - make_interval(secs => _older_than_seconds)
                ORDER BY sent_at
                LIMIT _limit
            );
            GET DIAGNOSTICS n = ROW_COUNT;
            RETURN n;
        END
        $$
    $f$, current_schema());
END
$do$
"""


def upgrade() -> None:
    op.execute(CREATE)
    op.execute("REVOKE ALL ON FUNCTION outbox_delete_acked(bigint[], text) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION outbox_purge_sent(float8, integer) FROM PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS outbox_purge_sent(float8, integer)")
    op.execute("DROP FUNCTION IF EXISTS outbox_delete_acked(bigint[], text)")
