-- Least-privilege roles for the outbox. Run once per database, as the owner of the schema,
-- after `alembic upgrade head`. Idempotent. Then give login users these roles, e.g.:
--   CREATE ROLE relay_svc LOGIN PASSWORD '...' IN ROLE vertector_relay;
--   CREATE ROLE schedule_svc LOGIN PASSWORD '...' IN ROLE vertector_producer;

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

-- The relay reads rows, records PubAcks and quarantines (those columns only), deletes sent
-- rows, and LISTENs (which needs no grant). It cannot insert events or touch other tables.
GRANT SELECT, DELETE ON outbox_events TO vertector_relay;
GRANT UPDATE (sent_at, stream, stream_seq, attempts, last_error, quarantined_at)
    ON outbox_events TO vertector_relay;
-- ... and shares partitions with the other relays.
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox_relay_instances TO vertector_relay;
GRANT SELECT, UPDATE (owner, epoch, expires_at) ON outbox_relay_leases TO vertector_relay;

-- PostgreSQL 17+: let the relay VACUUM its queue table after heavy deletes (older servers:
-- only the owner may; the relay then says so once and leaves it to autovacuum).
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        EXECUTE 'GRANT MAINTAIN ON outbox_events TO vertector_relay';
    END IF;
END
$$;

-- A producer can only add events (the columns it writes; the rest are defaults).
GRANT INSERT (event_id, event_type, subject, partition_key, payload, headers)
    ON outbox_events TO vertector_producer;
GRANT USAGE ON SEQUENCE outbox_events_id_seq TO vertector_producer;

-- A consumer records what it applied in its inbox.
GRANT SELECT, INSERT, DELETE ON outbox_inbox TO vertector_consumer;
