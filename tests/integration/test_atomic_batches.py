"""WAL capture's atomic batches (issue 13 step 3) against the real nats-server: a transaction's
events in one stream with allow_atomic go as one batch (ADR-50); without allow_atomic, or on a
server older than 2.12.1, event by event; a batch holding an event the stream already has is
refused whole (10201) and goes event by event, deduplicated."""

from __future__ import annotations

from outbox_client import enqueue_many
from outbox_client.streams import DEFAULT_STREAMS
from tests.integration.test_relay import update as update_event
from tests.relayrun import (
    apply_default_streams,
    engine,
    event_ids,
    jetstream,
    running_relay,
    stream_messages,
    wait_for_messages,
)
from tests.walsupport import skip_unless_atomic

ATOMIC_STREAMS = tuple(s.model_copy(update={"allow_atomic": True}) for s in DEFAULT_STREAMS)


async def _enqueue(url: str) -> tuple[list, list]:
    txn = [update_event(f"K{i % 3}", i) for i in range(6)]  # 3 keys, 2 events each
    alone = [update_event("K9", 9)]
    async with engine(url) as eng:
        async with eng.begin() as conn:
            await enqueue_many(conn, txn)
        async with eng.begin() as conn:
            await enqueue_many(conn, alone)
    return txn, alone


async def test_a_transaction_goes_as_one_atomic_batch(wal_database_url: str, nats_url: str) -> None:
    await skip_unless_atomic(nats_url)
    url = wal_database_url
    await apply_default_streams(nats_url, ATOMIC_STREAMS)
    txn, alone = await _enqueue(url)
    async with running_relay(url, nats_url, capture="wal", streams=ATOMIC_STREAMS) as app:
        assert await wait_for_messages(nats_url, 7) == 7
        assert app.stats.atomic == {"stored": 1}
    messages = await stream_messages(nats_url)
    assert event_ids(messages) == [e.event_id for e in [*txn, *alone]]
    batch = {m.headers.get("Nats-Batch-Id") for m in messages[:6]}
    assert len(batch) == 1 and None not in batch  # one batch, every event of it
    assert [m.headers["Nats-Batch-Sequence"] for m in messages[:6]] == [str(i) for i in range(1, 7)]
    assert messages[5].headers["Nats-Batch-Commit"] == "1"
    assert "Nats-Batch-Id" not in messages[6].headers  # a one-event transaction goes plain


async def test_without_allow_atomic_a_transaction_goes_event_by_event(
    wal_database_url: str, nats_url: str
) -> None:
    url = wal_database_url
    await apply_default_streams(nats_url)
    txn, alone = await _enqueue(url)
    async with running_relay(url, nats_url, capture="wal") as app:
        assert await wait_for_messages(nats_url, 7) == 7
        assert app.stats.atomic == {"fallback": 1}
    messages = await stream_messages(nats_url)
    ids = event_ids(messages)
    assert sorted(ids) == sorted(e.event_id for e in [*txn, *alone])  # each once
    for key in ("K0", "K1", "K2"):  # per-key waves, commit order within a key
        mine = [e.event_id for e in txn if e.partition_key == key]
        assert [i for i in ids if i in mine] == mine
    assert not any("Nats-Batch-Id" in m.headers for m in messages)


async def test_a_batch_the_stream_partly_holds_is_split_and_deduplicated(
    wal_database_url: str, nats_url: str
) -> None:
    """As after a crash between a publish and the slot's advance: one event of the transaction
    is already stored under its Nats-Msg-Id. The server refuses the whole batch (10201); the
    relay sends the events one by one: the stored one is a duplicate, the rest go once."""
    await skip_unless_atomic(nats_url)
    url = wal_database_url
    await apply_default_streams(nats_url, ATOMIC_STREAMS)
    txn, alone = await _enqueue(url)
    async with jetstream(nats_url) as js:
        await js.publish(txn[2].subject, b"{}", headers={"Nats-Msg-Id": str(txn[2].event_id)})
    async with running_relay(url, nats_url, capture="wal", streams=ATOMIC_STREAMS) as app:
        assert await wait_for_messages(nats_url, 7) == 7
        ids = event_ids(await stream_messages(nats_url))
        assert sorted(ids) == sorted(e.event_id for e in [*txn, *alone])  # each once
        assert app.stats.duplicates == 1
        assert app.stats.split_events == 6
        assert app.stats.atomic == {"split": 1}
