"""The replication stream's side of the COPY-both protocol (RELAY_WAL_READ=stream), over a
transport that records what the relay writes: frames cut anywhere, whole transactions only,
keepalives answered, errors named, TCP flow control, silence detected, a clean end."""

from __future__ import annotations

import asyncio
import struct

import pytest

from relay import walstream
from relay.errors import StoreError
from relay.pgoutput import transactions
from relay.walstream import SlotBusyError, SlotStream


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.paused = False
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def statuses(self) -> list[tuple[int, bool]]:
        """The (flush LSN, reply requested) of each standby status update written."""
        found = []
        for data in self.written:
            if data[:1] == b"d" and data[5:6] == b"r":
                _, _, _, _, flush, _, _, reply = walstream._STATUS.unpack(data)
                found.append((flush, reply))
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def copy_data(body: bytes) -> bytes:
    return b"d" + struct.pack(">I", 4 + len(body)) + body


def xlog(lsn: int, message: bytes) -> bytes:
    return copy_data(b"w" + struct.pack(">qqq", lsn, lsn, 0) + message)


def keepalive(lsn: int, reply: bool) -> bytes:
    return copy_data(b"k" + struct.pack(">qq?", lsn, 0, reply))


def begin() -> bytes:
    return b"B" + struct.pack(">qqI", 0, 0, 7)


def commit(end_lsn: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, end_lsn - 8, end_lsn, 0)


def message(content: bytes, *, transactional: bool = True) -> bytes:
    prefix = b"vertector.outbox.v1\0"
    return b"M" + struct.pack(">bq", int(transactional), 0) + prefix + struct.pack(
        ">I", len(content)
    ) + content  # fmt: skip


def error(code: str, text: str) -> bytes:
    body = b"SERROR\0C" + code.encode() + b"\0M" + text.encode() + b"\0\0"
    return b"E" + struct.pack(">I", 4 + len(body)) + body


def transaction(end_lsn: int, *contents: bytes) -> bytes:
    frames = [xlog(end_lsn - 100, begin())]
    frames += [xlog(end_lsn - 50, message(c)) for c in contents]
    frames.append(xlog(end_lsn, commit(end_lsn)))
    return b"".join(frames)


async def started(clock: Clock | None = None) -> tuple[SlotStream, Transport, list[int]]:
    transport = Transport()
    woken: list[int] = []
    stream = SlotStream(transport, lambda: woken.append(1), clock=clock or Clock())
    start = asyncio.ensure_future(stream.start("slot_a", "pub_a", timeout=5))
    await asyncio.sleep(0)
    stream.data_received(b"W" + struct.pack(">I", 7) + b"\0\0\0")  # CopyBothResponse
    await start
    return stream, transport, woken


async def test_start_sends_start_replication_with_the_slot_and_publication() -> None:
    _, transport, _ = await started()
    query = transport.written[0]
    assert query[:1] == b"Q"
    assert query[5:-1].decode() == (
        "START_REPLICATION SLOT slot_a LOGICAL 0/0 (proto_version '1', "
        "publication_names 'pub_a', messages 'true')"
    )


async def test_frames_cut_anywhere_give_whole_transactions_only() -> None:
    stream, _, woken = await started()
    data = (
        transaction(1000, b"one", b"two")
        + transaction(2000, b"three")
        + transaction(3000, b"four")[:-20]
    )  # the third transaction's commit has not arrived yet
    for i in range(0, len(data), 7):  # 7-byte pieces: every header and body split somewhere
        stream.data_received(data[i : i + 7])
    txns = list(transactions(stream.take(1000)))
    assert [(t.end_lsn, [c for _, c in t.messages]) for t in txns] == [
        (1000, [b"one", b"two"]),
        (2000, [b"three"]),
    ]
    assert woken
    assert stream.take(1000) == []  # the begin and message of the third wait for its commit
    stream.data_received(transaction(3000, b"four")[-20:])
    assert [t.end_lsn for t in transactions(stream.take(1000))] == [3000]


async def test_a_non_transactional_message_is_whole_on_its_own() -> None:
    stream, _, _ = await started()
    stream.data_received(xlog(500, message(b"lone", transactional=False)))
    (txn,) = transactions(stream.take(1000))
    assert not txn.transactional and txn.messages == [("vertector.outbox.v1", b"lone")]


async def test_keepalives_asking_for_a_reply_get_the_confirmed_position() -> None:
    stream, transport, _ = await started()
    stream.data_received(keepalive(900, reply=False))
    assert transport.statuses() == []
    stream.confirm(700)
    stream.confirm(600)  # never backwards: not sent
    stream.data_received(keepalive(900, reply=True))
    assert transport.statuses() == [(700, False), (700, False)]


async def test_a_busy_slot_and_other_errors_are_named() -> None:
    transport = Transport()
    stream = SlotStream(transport, lambda: None)
    start = asyncio.ensure_future(stream.start("slot_a", "pub_a", timeout=5))
    await asyncio.sleep(0)
    stream.data_received(error("55006", 'replication slot "slot_a" is active for PID 42'))
    with pytest.raises(SlotBusyError, match="active for PID 42"):
        await start
    assert transport.aborted

    stream, transport, woken = await started()
    stream.data_received(transaction(1000, b"x") + error("57P01", "terminating connection"))
    assert [t.end_lsn for t in transactions(stream.take(1000))] == [1000]  # what came before
    with pytest.raises(StoreError, match=r"terminating connection \(SQLSTATE 57P01\)"):
        stream.take(1000)
    assert woken and transport.aborted


async def test_a_lost_connection_is_raised_by_the_next_take() -> None:
    stream, _, _ = await started()
    stream.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(StoreError, match="replication stream lost: ConnectionResetError"):
        stream.take(1000)


async def test_reading_pauses_while_too_many_rows_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walstream, "MAX_PENDING_ROWS", 6)
    stream, transport, _ = await started()
    stream.data_received(transaction(1000, b"a"))
    assert not transport.paused
    stream.data_received(transaction(2000, b"b"))
    assert transport.paused  # TCP pushes back on the walsender
    assert len(stream.take(1000)) == 6
    assert not transport.paused


async def test_silence_is_pinged_then_counted_as_lost() -> None:
    clock = Clock()
    stream, transport, _ = await started(clock)
    clock.now += walstream.PING_SECONDS + 1
    assert stream.take(1000) == []
    assert transport.statuses() == [(0, True)]  # a status update asking for a reply
    assert stream.take(1000) == []
    assert len(transport.statuses()) == 1  # one ping per interval
    stream.data_received(keepalive(100, reply=False))  # the answer
    clock.now += walstream.SILENCE_SECONDS + 1
    with pytest.raises(StoreError, match="silent for"):
        stream.take(1000)
    assert transport.aborted


async def test_close_sends_what_was_confirmed_then_terminate() -> None:
    stream, transport, _ = await started()
    stream.confirm(1234)
    stream.close()
    assert transport.statuses() == [(1234, False)]
    assert transport.written[-1] == b"X\0\0\0\x04"
    assert transport.closing and not transport.aborted  # close flushes, abort would not
    assert stream.closed


async def test_a_take_gives_whole_transactions_up_to_its_bound() -> None:
    stream, _, _ = await started()
    stream.data_received(b"".join(transaction(1000 * n, b"e") for n in range(1, 5)))  # 3 rows
    assert [t.end_lsn for t in transactions(stream.take(7))] == [1000, 2000]
    assert [t.end_lsn for t in transactions(stream.take(2))] == [3000]  # one, however large
    assert [t.end_lsn for t in transactions(stream.take(1000))] == [4000]
    assert stream.take(1000) == []


async def test_a_transaction_larger_than_the_pause_bound_is_still_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading pauses while whole transactions wait; once they are taken, a transaction still
    arriving (however many rows it has already) must be read on to its commit."""
    monkeypatch.setattr(walstream, "MAX_PENDING_ROWS", 6)
    stream, transport, _ = await started()
    big = transaction(9000, *(b"e" for _ in range(10)))  # 12 rows
    stream.data_received(transaction(1000, b"a") + big[:-20])  # 3 whole rows, 11 of the big one
    assert transport.paused
    assert [t.end_lsn for t in transactions(stream.take(1000))] == [1000]
    assert not transport.paused  # else its commit would never come
    stream.data_received(big[-20:])
    assert [t.end_lsn for t in transactions(stream.take(1000))] == [9000]
