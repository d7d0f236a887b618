-- Every statement the relay runs, by name. relay/queries.py loads this file;
-- tests/unit/test_queries.py checks that every name the code uses is here.

-- claim --
-- Committed, unsent rows of the owned partitions, oldest id first. Every round reads from the
-- start of the (small, partial) index of unsent rows: no cursor, so a transaction that
-- commits late is seen by the next round and never skipped, and a long-running transaction
-- holds back nothing but its own rows.
SELECT id, event_id, subject, partition_key, partition, payload, headers, attempts, created_at,
       replay_label
FROM outbox_events
WHERE sent_at IS NULL
  AND quarantined_at IS NULL
  AND partition = ANY($1::smallint[])
  AND id NOT IN (SELECT unnest($2::bigint[]))  -- rows in flight: a hashed lookup
  -- Keys backing off are skipped whole: their later rows must wait anyway, and claiming them
  -- would fill the batch with rows that cannot go and starve every other key behind them.
  AND partition_key NOT IN (SELECT unnest($4::text[]))
ORDER BY id
LIMIT $3

-- claim_ids --
-- The heads of retrying keys, by primary key; a row sent meanwhile (by another relay) or of a
-- partition no longer owned is not returned, and the relay forgets its key.
SELECT id, event_id, subject, partition_key, partition, payload, headers, attempts, created_at,
       replay_label
FROM outbox_events
WHERE id = ANY($1::bigint[])
  AND sent_at IS NULL
  AND quarantined_at IS NULL
  AND partition = ANY($2::smallint[])
ORDER BY id

-- mark_sent --
-- Fenced: only the partition's current, unexpired owner ($4) records a PubAck. A relay that
-- lost its lease (paused, cut off) marks nothing; the new owner re-publishes, deduplicated.
UPDATE outbox_events AS o
SET sent_at = now(), stream = a.stream, stream_seq = a.seq,
    attempts = o.attempts + 1, last_error = NULL
FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS a(id, stream, seq),
     outbox_relay_leases AS l
WHERE o.id = a.id AND o.sent_at IS NULL
  AND l.partition = o.partition AND l.owner = $4 AND l.expires_at > now()

-- delete_sent --
-- With no retention, a PubAck deletes the row: cheaper than an UPDATE, which would copy the
-- whole row (payload included) into a new version. Fenced like mark_sent, through a function
-- (migration 0004): the relay's role has no DELETE on the table, so it cannot remove an unsent
-- row with a statement of its own.
SELECT outbox_delete_acked($1::bigint[], $2::text)

-- record_failures --
UPDATE outbox_events AS o
SET attempts = o.attempts + 1, last_error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
WHERE o.id = f.id AND o.sent_at IS NULL

-- quarantine --
UPDATE outbox_events AS o
SET quarantined_at = now(), attempts = o.attempts + 1, last_error = q.reason
FROM unnest($1::bigint[], $2::text[]) AS q(id, reason), outbox_relay_leases AS l
WHERE o.id = q.id AND o.sent_at IS NULL
  AND l.partition = o.partition AND l.owner = $3 AND l.expires_at > now()

-- purge_sent --
-- Sent rows older than $1 seconds, $2 at most, oldest first (a function, like delete_sent).
SELECT outbox_purge_sent($1::float8, $2::integer)

-- backlog --
-- pending: committed unsent rows; oldest_age_seconds: age of the oldest of them.
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds,
       (SELECT count(*) FROM outbox_events WHERE quarantined_at IS NOT NULL) AS quarantined
FROM outbox_events
WHERE sent_at IS NULL AND quarantined_at IS NULL

-- waiting_subjects --
-- Start-up check: the subjects rows are waiting for, to name those no configured stream takes
-- (cut short: a hostile subject may be megabytes long; the relay refuses anything past 1 KiB).
SELECT DISTINCT left(subject, 1025) AS subject
FROM outbox_events
WHERE sent_at IS NULL AND quarantined_at IS NULL
LIMIT $1

-- quarantined_list --
-- Admin: quarantined events, newest first, optionally filtered by type and age.
SELECT id, event_id, event_type, subject, partition_key, attempts, last_error,
       created_at, quarantined_at
FROM outbox_events
WHERE quarantined_at IS NOT NULL
  AND ($1::text IS NULL OR event_type = $1)
  AND ($2::text IS NULL OR last_error LIKE '%' || $2 || '%')
ORDER BY quarantined_at DESC
LIMIT $3

-- quarantined_show --
SELECT id, event_id, event_type, subject, partition_key, attempts, last_error,
       created_at, quarantined_at, headers, length(payload) AS payload_bytes
FROM outbox_events
WHERE quarantined_at IS NOT NULL AND event_id = $1

-- requeue --
-- Admin: give quarantined events back to the relay (after fixing the cause).
UPDATE outbox_events
SET quarantined_at = NULL, attempts = 0, last_error = NULL
WHERE quarantined_at IS NOT NULL
  AND ($1::uuid[] IS NULL OR event_id = ANY($1))
  AND ($2::text IS NULL OR event_type = $2)

-- requeue_wal --
-- Admin, WAL capture: quarantined events go back into the WAL as event messages (the frame of
-- outbox_client/walframe.py, built here) and leave the table, in one transaction; the relay
-- reads them like any new event. $3 is the message prefix.
WITH moved AS (
    DELETE FROM outbox_events
    WHERE quarantined_at IS NOT NULL
      AND ($1::uuid[] IS NULL OR event_id = ANY($1))
      AND ($2::text IS NULL OR event_type = $2)
    RETURNING id, event_id, convert_to(event_type, 'UTF8') AS t, convert_to(subject, 'UTF8') AS s,
              convert_to(partition_key, 'UTF8') AS k, convert_to(headers::text, 'UTF8') AS h,
              payload
)
SELECT count(pg_logical_emit_message(true, $3, f.frame)) FROM (
    SELECT '\x01'::bytea || decode(replace(event_id::text, '-', ''), 'hex')
           || int4send(octet_length(t)) || int4send(octet_length(s))
           || int4send(octet_length(k)) || int4send(octet_length(h))
           || t || s || k || h || payload AS frame
    FROM moved
    ORDER BY id
) AS f

-- purge_quarantined --
DELETE FROM outbox_events
WHERE quarantined_at IS NOT NULL
  AND ($1::uuid[] IS NULL OR event_id = ANY($1))
  AND ($2::text IS NULL OR event_type = $2)

-- replay_preview --
-- Admin: what a replay would take, per stream the events were stored in, and how many of them
-- were published less than that stream's duplicate window ago ($6 names, $7 seconds; $8 for a
-- stream not named): inside the window JetStream would drop them as duplicates.
SELECT o.stream, count(*) AS events,
       count(*) FILTER (
           WHERE o.sent_at > now() - make_interval(secs => coalesce(w.seconds, $8::float8))
       ) AS recent
FROM outbox_events AS o
LEFT JOIN unnest($6::text[], $7::float8[]) AS w(stream, seconds) ON w.stream = o.stream
WHERE o.sent_at IS NOT NULL
  AND ($1::timestamptz IS NULL OR o.created_at >= $1)
  AND ($2::timestamptz IS NULL OR o.created_at < $2)
  AND ($3::bigint IS NULL OR o.id >= $3)
  AND ($4::bigint IS NULL OR o.id <= $4)
  AND ($5::text IS NULL OR o.event_type = $5)
GROUP BY o.stream
ORDER BY o.stream

-- replay_batch --
-- Admin: make up to $7 already-sent (retained) events after id $6 unsent again, oldest first;
-- returns their ids. The relay re-publishes them in their original order. With $8 the relay
-- sends them with Nats-Msg-Id "<event_id>:<$8>" (a fresh id JetStream has not seen: stored
-- again even inside the duplicate window); consumers' inboxes, keyed on the event id, still
-- skip what they applied. The label is a column only this (the owner) sets: no producer can.
UPDATE outbox_events AS o
SET sent_at = NULL, stream = NULL, stream_seq = NULL, attempts = 0, replay_label = $8::text
FROM (
    SELECT id FROM outbox_events
    WHERE sent_at IS NOT NULL AND id > $6
      AND ($1::timestamptz IS NULL OR created_at >= $1)
      AND ($2::timestamptz IS NULL OR created_at < $2)
      AND ($3::bigint IS NULL OR id >= $3)
      AND ($4::bigint IS NULL OR id <= $4)
      AND ($5::text IS NULL OR event_type = $5)
    ORDER BY id
    LIMIT $7
    FOR UPDATE
) AS picked
WHERE o.id = picked.id
RETURNING o.id

-- heartbeat --
-- Leases: this instance is alive; instances silent for longer than the lease are forgotten.
WITH beat AS (
    INSERT INTO outbox_relay_instances (name) VALUES ($1)
    ON CONFLICT (name) DO UPDATE SET heartbeat_at = now()
), gone AS (
    DELETE FROM outbox_relay_instances
    WHERE name <> $1 AND heartbeat_at < now() - make_interval(secs => $2)
)
SELECT count(*) + 1 AS alive FROM outbox_relay_instances
WHERE name <> $1 AND heartbeat_at >= now() - make_interval(secs => $2)

-- renew_leases --
UPDATE outbox_relay_leases
SET expires_at = now() + make_interval(secs => $2)
WHERE owner = $1 AND expires_at > now()
RETURNING partition, epoch

-- acquire_leases --
-- Free or expired partitions, up to $3 of them; each change of hands bumps the epoch.
UPDATE outbox_relay_leases AS l
SET owner = $1, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => $2)
WHERE l.partition IN (
    SELECT partition FROM outbox_relay_leases
    WHERE owner IS NULL OR expires_at IS NULL OR expires_at <= now()
    ORDER BY partition
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING l.partition, l.epoch

-- release_leases --
UPDATE outbox_relay_leases
SET owner = NULL, expires_at = NULL
WHERE owner = $1 AND partition = ANY($2::smallint[])

-- leave --
WITH released AS (
    UPDATE outbox_relay_leases SET owner = NULL, expires_at = NULL WHERE owner = $1
)
DELETE FROM outbox_relay_instances WHERE name = $1

-- lease_status --
SELECT l.partition, l.owner, l.epoch,
       extract(epoch FROM l.expires_at - now())::float8 AS expires_in
FROM outbox_relay_leases l
ORDER BY l.partition

-- instance_status --
SELECT name, extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age,
       started_at
FROM outbox_relay_instances
ORDER BY name

-- vacuum --
-- A queue table's dead rows sit at the head of the unsent-rows index that every claim
-- scans; autovacuum wakes at most once a minute, so the relay vacuums after heavy deletes.
VACUUM (SKIP_LOCKED) outbox_events

-- can_vacuum --
-- Whether this role may VACUUM the outbox (VACUUM only warns, it does not fail, when it may not).
SELECT r.rolsuper
    OR pg_has_role(current_user, c.relowner, 'USAGE')
    OR CASE WHEN current_setting('server_version_num')::int >= 170000
            THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
FROM pg_class c, pg_roles r
WHERE c.oid = 'outbox_events'::regclass AND r.rolname = current_user

-- instance_lock --
-- One live relay per instance name (relay/instancelock.py): a session lock on its own
-- connection, released when that session ends.
SELECT pg_try_advisory_lock($1::bigint)

-- wal_server --
-- WAL capture needs wal_level=logical and PostgreSQL 14+ (pgoutput's messages option).
SELECT current_setting('wal_level') AS wal_level,
       current_setting('server_version_num')::int AS version_num,
       current_setting('max_slot_wal_keep_size') AS max_slot_wal_keep_size,
       current_database() AS database

-- wal_slot --
-- The slot as PostgreSQL sees it; wal_status 'lost': invalidated (max_slot_wal_keep_size),
-- the WAL it needed is gone. lag_bytes: WAL written since the position the relay confirmed.
SELECT s.slot_name, s.plugin, s.slot_type, s.database, s.active, s.wal_status,
       (pg_current_wal_lsn() - s.confirmed_flush_lsn)::bigint AS lag_bytes,
       (pg_current_wal_lsn() - s.restart_lsn)::bigint AS retained_bytes,
       s.safe_wal_size
FROM pg_replication_slots AS s
WHERE s.slot_name = $1

-- wal_create_slot --
SELECT (lsn - '0/0'::pg_lsn)::bigint AS lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')

-- wal_drop_slot --
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1

-- wal_publication_exists --
SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)

-- wal_create_publication --
-- An empty publication: pgoutput needs one, and the event messages need no table.
-- {publication} is a validated name ([a-z0-9_]), not a parameter: DDL takes no parameters.
CREATE PUBLICATION {publication}

-- wal_drop_publication --
DROP PUBLICATION IF EXISTS {publication}

-- wal_peek --
-- Decoded changes from the slot's confirmed position on, without consuming them: the slot
-- only moves with wal_advance, once the events' PubAcks are in. $2 bounds the rows; the
-- function stops at a transaction's end once it has that many. Through outbox_wal_peek
-- (migration 0007: pg_logical_slot_peek_binary_changes as its owner, messages only, of a slot
-- `wal setup` registered), so the relay's role needs no REPLICATION.
SELECT lsn, data FROM outbox_wal_peek($1, $2, $3)

-- wal_advance --
-- Fenced: only the slot's current, unexpired reader ($3) moves it, and never backwards. The
-- lease row stays locked until the slot has moved, so a takeover waits for it
-- (outbox_wal_advance, migration 0007: pg_replication_slot_advance as its owner).
SELECT outbox_wal_advance($1, $2, $3) AS confirmed

-- wal_role --
-- RELAY_WAL_READ=stream opens a replication connection: the role needs REPLICATION.
SELECT rolname, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user

-- wal_take_slot --
-- RELAY_WAL_READ=stream: end the session that streams the slot (a relay that lost the reader
-- lease, paused or cut off, whose walsender lives on until wal_sender_timeout), only for the
-- lease's unexpired holder $2. A session may end another of its own role's.
SELECT count(pg_terminate_backend(s.active_pid)) AS ended
FROM outbox_wal_readers AS r
JOIN pg_replication_slots AS s ON s.slot_name = r.slot
WHERE r.slot = $1 AND r.owner = $2 AND r.expires_at > now()
  AND s.active_pid IS NOT NULL AND s.active_pid <> pg_backend_pid()

-- wal_snapshot --
-- A running-transactions record (pg_log_standby_snapshot as outbox_wal_snapshot's owner,
-- migration 0008; fenced like wal_advance): the slot's restart point, where every peek and
-- advance starts decoding, moves only past one. False when $2 is not the slot's reader.
SELECT outbox_wal_snapshot($1, $2) AS logged

-- wal_lease --
-- Take or renew the slot's reader lease; no row when another reader holds it, or when the
-- slot is not registered (`wal setup` inserts its row: the relay may only update it). The
-- epoch grows with every change of hands.
UPDATE outbox_wal_readers AS r
SET owner = $2, expires_at = now() + make_interval(secs => $3),
    epoch = r.epoch + (r.owner IS DISTINCT FROM $2 OR r.expires_at IS NULL
                       OR r.expires_at <= now())::int
WHERE r.slot = $1
  AND (r.owner = $2 OR r.owner IS NULL OR r.expires_at IS NULL OR r.expires_at <= now())
RETURNING r.epoch

-- wal_register --
-- `wal setup` (as the owner): the slot's row in outbox_wal_readers, which registers it for
-- the relay's functions (migration 0007) and holds its reader lease.
INSERT INTO outbox_wal_readers (slot) VALUES ($1) ON CONFLICT (slot) DO NOTHING

-- wal_unregister --
DELETE FROM outbox_wal_readers WHERE slot = $1

-- wal_registered --
SELECT EXISTS (SELECT 1 FROM outbox_wal_readers WHERE slot = $1)

-- wal_lease_leave --
UPDATE outbox_wal_readers SET owner = NULL, expires_at = NULL WHERE slot = $1 AND owner = $2

-- wal_lease_status --
SELECT owner, epoch, extract(epoch FROM expires_at - now())::float8 AS expires_in
FROM outbox_wal_readers WHERE slot = $1

-- wal_quarantine --
-- WAL capture has no row to flag: a poison event is written to outbox_events as quarantined
-- (dead-letters list/show/purge/requeue then work as in table mode). Fenced like wal_advance.
-- Through outbox_wal_quarantine (migration 0007): the relay's role has no INSERT on the
-- table, and the function writes only quarantined rows, which are never published.
SELECT outbox_wal_quarantine($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                             $6::text[], $7::int[], $8::text[], $9::timestamptz[], $10, $11)

-- wal_quarantined_ids --
-- Which of these event ids outbox_events already holds: a second quarantined row of one
-- would break its unique index and, with it, every quarantine of the batch (the slot would
-- then never move past them).
SELECT event_id FROM outbox_events WHERE event_id = ANY($1::uuid[])

-- wal_heartbeat --
-- An idle slot whose database is busy elsewhere still holds WAL back (pgoutput sends nothing
-- for transactions without events): a message in a transaction of its own gives the relay a
-- position past that WAL to confirm. Transactional, so that its commit flushes it: the slot
-- functions read only flushed WAL.
SELECT pg_logical_emit_message(true, $1, ''::bytea)

-- wal_quarantined_count --
SELECT count(*) AS quarantined FROM outbox_events WHERE quarantined_at IS NOT NULL
