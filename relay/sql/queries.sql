-- Every statement the relay runs, by name. relay/queries.py loads this file;
-- tests/unit/test_queries.py checks that every name the code uses is here.

-- claim --
-- Committed, unsent rows of the given partitions, in commit-safe order. Only rows whose
-- transaction is older than every running transaction are visible here, so a transaction
-- that commits late delays the rows after it instead of being skipped.
SELECT id, event_id, subject, partition_key, payload, headers, attempts, created_at
FROM outbox_events
WHERE sent_at IS NULL
  AND quarantined_at IS NULL
  AND txid < pg_snapshot_xmin(pg_current_snapshot())
  AND partition = ANY($1::smallint[])
  AND id NOT IN (SELECT unnest($2::bigint[]))  -- rows in flight: a hashed lookup
ORDER BY txid, id
LIMIT $3

-- mark_sent --
UPDATE outbox_events AS o
SET sent_at = now(), stream = a.stream, stream_seq = a.seq,
    attempts = o.attempts + 1, last_error = NULL
FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS a(id, stream, seq)
WHERE o.id = a.id AND o.sent_at IS NULL

-- delete_sent --
-- With no retention, a PubAck deletes the row: cheaper than an UPDATE, which would copy the
-- whole row (payload included) into a new version.
DELETE FROM outbox_events WHERE id = ANY($1::bigint[])

-- record_failures --
UPDATE outbox_events AS o
SET attempts = o.attempts + 1, last_error = f.error
FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
WHERE o.id = f.id AND o.sent_at IS NULL

-- quarantine --
UPDATE outbox_events AS o
SET quarantined_at = now(), attempts = o.attempts + 1, last_error = q.reason
FROM unnest($1::bigint[], $2::text[]) AS q(id, reason)
WHERE o.id = q.id AND o.sent_at IS NULL

-- purge_sent --
DELETE FROM outbox_events
WHERE id IN (
    SELECT id FROM outbox_events
    WHERE sent_at < now() - make_interval(secs => $1)
    ORDER BY sent_at
    LIMIT $2
)

-- backlog --
-- pending: unsent rows; invisible: those held back by a transaction still running;
-- oldest_age_seconds: age of the oldest unsent row.
SELECT count(*) AS pending,
       count(*) FILTER (WHERE txid >= pg_snapshot_xmin(pg_current_snapshot())) AS invisible,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_seconds,
       (SELECT count(*) FROM outbox_events WHERE quarantined_at IS NOT NULL) AS quarantined
FROM outbox_events
WHERE sent_at IS NULL AND quarantined_at IS NULL

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

-- purge_quarantined --
DELETE FROM outbox_events
WHERE quarantined_at IS NOT NULL
  AND ($1::uuid[] IS NULL OR event_id = ANY($1))
  AND ($2::text IS NULL OR event_type = $2)

-- replay_sent --
-- Admin: make already-sent (retained) events unsent again, by time or id range. The relay
-- re-publishes them in their original order, with their original Nats-Msg-Id.
UPDATE outbox_events
SET sent_at = NULL, stream = NULL, stream_seq = NULL, attempts = 0
WHERE sent_at IS NOT NULL
  AND ($1::timestamptz IS NULL OR created_at >= $1)
  AND ($2::timestamptz IS NULL OR created_at < $2)
  AND ($3::bigint IS NULL OR id >= $3)
  AND ($4::bigint IS NULL OR id <= $4)
  AND ($5::text IS NULL OR event_type = $5)
