"""WAL capture's atomic batches under a crash: the relay SIGKILLed at ``mid_atomic_batch``
(every message of a transaction's batch but its commit flushed to the server), then restarted.
Consumers must never see part of a transaction: none of it before the restart, all of it in
one batch after; and, as at every other crash point, 0 lost, 0 duplicates, 0 phantoms, 0 order
violations."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from devtools.harness import (
    FaultRelay,
    Workload,
    assert_clean,
    check,
    connect,
    create_test_stream,
    wait_drained,
)
from tests.relayrun import engine
from tests.walsupport import skip_unless_atomic


@dataclass(frozen=True)
class Stored:
    seq: int  # the stream's sequence
    event_id: uuid.UUID
    batch: str | None
    batch_seq: str | None
    commit: bool


async def stored_messages(nats_url: str) -> list[Stored]:
    """Every message of ACADEMIC_EVENTS, with its atomic batch headers, in stream order."""
    nc = await connect(nats_url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info("ACADEMIC_EVENTS")).state.messages
        out: list[Stored] = []
        for seq in range(1, total + 1):
            msg = await js.get_msg("ACADEMIC_EVENTS", seq)
            headers = msg.headers or {}
            out.append(Stored(
                seq, uuid.UUID(json.loads(msg.data or b"{}")["event_id"]),
                headers.get("Nats-Batch-Id"), headers.get("Nats-Batch-Sequence"),
                headers.get("Nats-Batch-Commit") == "1",
            ))  # fmt: skip
        return out
    finally:
        await nc.close()


def torn_transactions(workload: Workload, stored: list[Stored]) -> list[str]:
    """Transactions of two events or more that a consumer could see part of: some of their
    events stored and not others, or not stored as one whole atomic batch (one Nats-Batch-Id of
    their own, sequence 1..n, the commit on the last, consecutive in the stream)."""
    by_id = {m.event_id: m for m in stored}
    problems = []
    for txn in workload.transactions:
        if len(txn) < 2:
            continue
        here = [by_id[e] for e in txn if e in by_id]
        if not here:
            continue
        batches = {m.batch for m in here}
        whole = (
            len(here) == len(txn)
            and len(batches) == 1
            and None not in batches
            and sum(m.batch in batches for m in stored) == len(txn)
            and [m.batch_seq for m in here] == [str(n) for n in range(1, len(txn) + 1)]
            and [m.commit for m in here] == [False] * (len(txn) - 1) + [True]
            and [m.seq for m in here] == list(range(here[0].seq, here[0].seq + len(txn)))
        )
        if not whole:
            problems.append(f"{len(here)} of {len(txn)} events stored: {here}")
    return problems


async def test_relay_killed_mid_atomic_batch_then_restarted(
    wal_database_url: str, nats_url: str
) -> None:
    url = wal_database_url
    await skip_unless_atomic(nats_url)
    await create_test_stream(nats_url, allow_atomic=True)
    async with engine(url) as eng:
        workload = Workload(eng, producers=4)
        await workload.run(per_producer=150)
        multi = [t for t in workload.transactions if len(t) > 1]
        assert len(multi) > 50, "the workload commits transactions of several events"
        relay = FaultRelay(url, nats_url, "torn")
        await relay.crash_at("mid_atomic_batch")  # asserts the SIGKILL at that point
        # What a consumer could read now: no event of any batch, nothing of a transaction.
        before = await stored_messages(nats_url)
        assert not [m for m in before if m.batch is not None], before
        assert torn_transactions(workload, before) == []
        assert len(before) < len(workload.committed)
        relay.start()
        try:
            stream = await wait_drained(nats_url, workload)
        finally:
            relay.stop()
    assert_clean(check(workload, stream), [relay])
    after = await stored_messages(nats_url)
    assert torn_transactions(workload, after) == [], relay.tail()
    in_batches = {m.event_id for m in after if m.batch is not None}
    assert in_batches == {e for t in multi for e in t}, "every transaction went as one batch"
