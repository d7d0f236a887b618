"""WAL capture without REPLICATION: the relay reads, advances and quarantines through functions.

Revision ID: 0007_wal_functions
Revises: 0006_replay_label
Create Date: 2026-12-02

``pg_logical_slot_peek_binary_changes`` and ``pg_replication_slot_advance`` need the
``REPLICATION`` attribute, which would also let the relay's login stream the whole cluster's
WAL (every table's rows) and create, read or drop any slot. These functions run as their
owner (the role that runs migrations and ``vertector-relay wal setup``, which needs
``REPLICATION`` anyway), so the least-privilege relay role of ``deploy/postgres/roles.sql``
needs none, and they reach only what the outbox's relay needs:

- ``outbox_wal_peek(slot, upto, publication)``: pgoutput, messages only, of a slot that
  ``wal setup`` registered (a row in ``outbox_wal_readers``) through a publication of no
  table (a publication of tables would hand over their rows);
- ``outbox_wal_advance(slot, target, owner)``: moves a registered slot, fenced like the
  partition marks (only the lease's current, unexpired owner; never backwards);
- ``outbox_wal_quarantine(...)``: writes poison events to ``outbox_events`` as *quarantined*
  rows (never publishable; only ``dead-letters requeue``, as the owner, puts them back), fenced
  by the same lease. The relay role has no ``INSERT`` on the table: it cannot forge an event.

Execution is revoked from PUBLIC; roles.sql grants it. Created in the schema the migration runs
in, naming their tables with it (a fixed ``search_path``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007_wal_functions"
down_revision: str | None = "0006_replay_label"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUARANTINE_ARGS = (
    "uuid[], text[], text[], text[], bytea[], text[], integer[], text[], timestamptz[], text, text"
)

# Built with format() on the server so that it works offline (`alembic upgrade --sql`) too.
CREATE = r"""
DO $do$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_wal_peek(_slot text, _upto integer, _publication text)
        RETURNS TABLE (lsn bigint, data bytea)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM %1$I.outbox_wal_readers AS r WHERE r.slot = _slot) THEN
                RAISE EXCEPTION 'replication slot %% is not registered for the outbox: run '
                    '`vertector-relay wal setup` as the schema''s owner', _slot
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            IF EXISTS (SELECT 1 FROM pg_publication_tables AS t WHERE t.pubname = _publication)
            THEN
                RAISE EXCEPTION 'publication %% publishes tables: the outbox reads only through '
                    'a publication of none (RELAY_WAL_PUBLICATION)', _publication
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN QUERY
            SELECT (c.lsn - '0/0'::pg_lsn)::bigint, c.data
            FROM pg_logical_slot_peek_binary_changes(
                _slot, NULL, _upto, 'proto_version', '1', 'publication_names', _publication,
                'messages', 'true') AS c;
        END
        $$
    $f$, current_schema());
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_wal_advance(_slot text, _target bigint, _owner text)
        RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            WITH lease AS (
                SELECT 1 FROM %1$I.outbox_wal_readers
                WHERE slot = _slot AND owner = _owner AND expires_at > now()
                FOR UPDATE
            )
            SELECT (a.end_lsn - '0/0'::pg_lsn)::bigint
            FROM lease, pg_replication_slots AS s,
                 LATERAL pg_replication_slot_advance(
                     s.slot_name,
                     greatest(s.confirmed_flush_lsn, '0/0'::pg_lsn + _target::numeric)) AS a
            WHERE s.slot_name = _slot
        $$
    $f$, current_schema());
    EXECUTE format($f$
        CREATE FUNCTION %1$I.outbox_wal_quarantine(
            _ids uuid[], _types text[], _subjects text[], _keys text[], _payloads bytea[],
            _headers text[], _attempts integer[], _reasons text[], _created timestamptz[],
            _slot text, _owner text)
        RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE n bigint;
        BEGIN
            INSERT INTO %1$I.outbox_events (event_id, event_type, subject, partition_key,
                                            payload, headers, attempts, last_error,
                                            quarantined_at, created_at)
            SELECT q.i, q.t, q.s, q.k, q.p, q.h::jsonb, q.a, q.r,
                   now(), q.c
            FROM unnest(_ids, _types, _subjects, _keys, _payloads, _headers, _attempts,
                        _reasons, _created) AS q(i, t, s, k, p, h, a, r, c)
            WHERE EXISTS (SELECT 1 FROM %1$I.outbox_wal_readers
                          WHERE slot = _slot AND owner = _owner AND expires_at > now());
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
    op.execute("REVOKE ALL ON FUNCTION outbox_wal_peek(text, integer, text) FROM PUBLIC")
    op.execute("REVOKE ALL ON FUNCTION outbox_wal_advance(text, bigint, text) FROM PUBLIC")
    op.execute(f"REVOKE ALL ON FUNCTION outbox_wal_quarantine({QUARANTINE_ARGS}) FROM PUBLIC")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS outbox_wal_quarantine({QUARANTINE_ARGS})")
    op.execute("DROP FUNCTION IF EXISTS outbox_wal_advance(text, bigint, text)")
    op.execute("DROP FUNCTION IF EXISTS outbox_wal_peek(text, integer, text)")
