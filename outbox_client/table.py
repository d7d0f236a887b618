"""The outbox table: the one contract shared by ``enqueue``, the relay and the migrations.

Rows are written by producers and read only by the relay. ``partition`` is derived in SQL from
``partition_key`` so that producers in any language land on the same partition::

    partition = ('x' || substr(md5(partition_key), 1, 8))::bit(32)::bigint % PARTITIONS

The relay reads every committed, unsent row in ``id`` order on each round (no cursor), so a
transaction that commits late is picked up by the next round, never skipped.
"""

from __future__ import annotations

import functools
import hashlib

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

#: Number of partitions of the key space. Fixed in the schema: one relay owns a partition at a time.
PARTITIONS = 64
#: Channel the insert trigger notifies; the relay LISTENs on it.
NOTIFY_CHANNEL = "vertector_outbox_v1"

PARTITION_SQL = f"((('x' || substr(md5(partition_key), 1, 8))::bit(32)::bigint % {PARTITIONS}))"


@functools.lru_cache(maxsize=16384)  # the relay asks for each event read from the WAL
def partition_of(partition_key: str) -> int:
    """The partition PostgreSQL computes for ``partition_key`` (same formula, in Python).

    >>> partition_of("CS101")
    0
    """
    return int(hashlib.md5(partition_key.encode()).hexdigest()[:8], 16) % PARTITIONS


metadata = MetaData()

outbox = Table(
    "outbox_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Uuid(as_uuid=True), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("partition_key", Text, nullable=False),
    Column("partition", SmallInteger, Computed(PARTITION_SQL, persisted=True), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("sent_at", DateTime(timezone=True)),
    Column("stream", Text),
    Column("stream_seq", BigInteger),
    Column("quarantined_at", DateTime(timezone=True)),
    #: Set only by ``vertector-relay replay --fresh-ids``: Nats-Msg-Id is "<event_id>:<it>".
    Column("replay_label", Text),
    Index("outbox_events_event_id_key", "event_id", unique=True),
    # The relay's claim scans this small index: only rows still to publish are in it.
    Index(
        "outbox_events_pending_idx",
        "id",
        postgresql_where=text("sent_at IS NULL AND quarantined_at IS NULL"),
    ),
    # Purge and replay walk sent rows by time.
    Index("outbox_events_sent_at_idx", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    Index(
        "outbox_events_quarantined_idx",
        "quarantined_at",
        postgresql_where=text("quarantined_at IS NOT NULL"),
    ),
)

#: The consumer side's record of applied events: one row per (consumer, event_id), written in
#: the same transaction as the handler's effect. See ``outbox_client.inbox``.
inbox = Table(
    "outbox_inbox",
    metadata,
    Column("consumer", Text, primary_key=True),
    Column("event_id", Uuid(as_uuid=True), primary_key=True),
    Column("event_type", Text, nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("outbox_inbox_processed_at_idx", "processed_at"),
)

#: Relay instances that are alive (heartbeat) and so share the partitions.
relay_instances = Table(
    "outbox_relay_instances",
    metadata,
    Column("name", Text, primary_key=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: One row per partition: who publishes it, until when, and a fencing epoch that grows with
#: every change of hands. Marks are only recorded by the current, unexpired owner.
relay_leases = Table(
    "outbox_relay_leases",
    metadata,
    Column("partition", SmallInteger, primary_key=True, autoincrement=False),
    Column("owner", Text),
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("expires_at", DateTime(timezone=True)),
)

#: WAL capture: who reads each replication slot (one reader at a time), until when, and a
#: fencing epoch that grows with every change of hands. The slot only advances for its owner.
wal_readers = Table(
    "outbox_wal_readers",
    metadata,
    Column("slot", Text, primary_key=True),
    Column("owner", Text),
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("expires_at", DateTime(timezone=True)),
)
