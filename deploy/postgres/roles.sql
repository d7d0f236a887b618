-- Least-privilege roles for the outbox. Run as the owner of the schema, after
-- `vertector-relay migrate` (or `alembic upgrade head`), and again after every upgrade.
-- Idempotent; PostgreSQL 15 or later. Then give login users these roles, e.g.:
--   CREATE ROLE relay_svc LOGIN PASSWORD '...' IN ROLE vertector_relay;
--   CREATE ROLE schedule_svc LOGIN PASSWORD '...' IN ROLE vertector_producer;
--   CREATE ROLE "notes-service" LOGIN PASSWORD '...' IN ROLE vertector_consumer;
-- A consumer's login is named like its inbox consumer (`Inbox(engine, "notes-service")`), or
-- is a member of a role of that name (two logins in one such role let you rotate passwords):
-- row-level security lets a role reach only the inbox rows of consumers it is.
-- Admin commands that delete unsent rows (`vertector-relay dead-letters purge`) run as the
-- owner: the relay's role cannot.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vertector_relay') THEN
        CREATE ROLE vertector_relay NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vertector_producer') THEN
        CREATE ROLE vertector_producer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vertector_consumer') THEN
        CREATE ROLE vertector_consumer NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO vertector_relay, vertector_producer, vertector_consumer;

-- The relay reads rows, records PubAcks and quarantines (those columns only) and LISTENs
-- (which needs no grant). It cannot insert events or touch other tables, and it has no DELETE:
-- it deletes only through two functions (migration 0004), rows JetStream acknowledged in
-- partitions it holds a live lease on, and rows marked sent before the retention period.
GRANT SELECT ON outbox_events TO vertector_relay;
REVOKE DELETE ON outbox_events FROM vertector_relay;  -- granted by earlier versions of this file
GRANT UPDATE (sent_at, stream, stream_seq, attempts, last_error, quarantined_at)
    ON outbox_events TO vertector_relay;
GRANT EXECUTE ON FUNCTION outbox_delete_acked(bigint[], text) TO vertector_relay;
GRANT EXECUTE ON FUNCTION outbox_purge_sent(float8, integer) TO vertector_relay;
-- ... and shares partitions with the other relays.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_relay_instances TO vertector_relay;
GRANT SELECT, UPDATE (owner, epoch, expires_at) ON outbox_relay_leases TO vertector_relay;

-- WAL capture (OUTBOX_CAPTURE=wal): no REPLICATION attribute (it would let the login stream
-- every table's WAL and create or drop any slot). The relay reads and advances the outbox's
-- slot and writes poison events as quarantined rows only through the functions of migration
-- 0007 (they run as their owner; messages of a slot `wal setup` registered, through a
-- publication of no table; the advance and the quarantine fenced by the reader lease), and
-- renews the reader lease: it may update the rows `wal setup` registers, not add one. So
-- table mode gains nothing: it still cannot INSERT an event. `wal setup|teardown` and
-- `dead-letters requeue` run as the owner, which needs REPLICATION (or superuser) to create
-- the slot and for the functions to read it.
-- RELAY_WAL_READ=stream (the streaming replication protocol, faster: README, WAL capture) is
-- the exception: it needs REPLICATION on the relay's login itself (the attribute is not
-- inherited from vertector_relay): `ALTER ROLE relay_svc REPLICATION`, as a superuser. The
-- relay refuses to start in that mode without it, naming this statement.
GRANT EXECUTE ON FUNCTION outbox_wal_peek(text, integer, text) TO vertector_relay;
GRANT EXECUTE ON FUNCTION outbox_wal_advance(text, bigint, text) TO vertector_relay;
GRANT EXECUTE ON FUNCTION outbox_wal_quarantine(uuid[], text[], text[], text[], bytea[], text[],
    integer[], text[], timestamptz[], text, text) TO vertector_relay;
GRANT SELECT, UPDATE (owner, epoch, expires_at) ON outbox_wal_readers TO vertector_relay;
-- Migration 0008: a standby snapshot now and then keeps the slot's restart point close, so
-- that each read decodes little WAL. Its owner must be a superuser or have been granted
-- EXECUTE ON FUNCTION pg_log_standby_snapshot() (PostgreSQL 16+).
GRANT EXECUTE ON FUNCTION outbox_wal_snapshot(text, text) TO vertector_relay;

-- PostgreSQL 17+: let the relay VACUUM its queue table after heavy deletes (older servers:
-- only the owner may; the relay then says so once and leaves it to autovacuum).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'GRANT MAINTAIN ON outbox_events TO vertector_relay';
    END IF;
END
$$;

-- A producer can only add events (the columns it writes; the rest are defaults). Not
-- replay_label: only `vertector-relay replay --fresh-ids` (as the owner) sets it, since it
-- changes the event's Nats-Msg-Id.
GRANT INSERT (event_id, event_type, subject, partition_key, payload, headers)
    ON outbox_events TO vertector_producer;
GRANT USAGE ON SEQUENCE outbox_events_id_seq TO vertector_producer;
-- WAL capture needs nothing more: pg_logical_emit_message is executable by every role.

-- A consumer records what it applied in its inbox, and reaches only its own rows: those whose
-- `consumer` is the name of its login role or of a role it is a member of. The policy holds
-- for every role but the table's owner (and superusers), so another service's role can neither
-- read, forge (skip an event) nor delete (re-apply an event) this consumer's records.
GRANT SELECT, INSERT, DELETE ON outbox_inbox TO vertector_consumer;
ALTER TABLE outbox_inbox ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS outbox_inbox_own_rows ON outbox_inbox;
CREATE POLICY outbox_inbox_own_rows ON outbox_inbox
    USING (consumer IN (SELECT rolname FROM pg_roles
                        WHERE pg_has_role(current_user, oid, 'MEMBER')))
    WITH CHECK (consumer IN (SELECT rolname FROM pg_roles
                             WHERE pg_has_role(current_user, oid, 'MEMBER')));
