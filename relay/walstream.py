"""WAL capture's streaming read: the replication protocol's ``START_REPLICATION ... LOGICAL``.

With ``RELAY_WAL_READ=stream`` the relay does not ask the slot functions for changes (each
peek decodes the WAL again from the slot's restart point); PostgreSQL's walsender decodes
every transaction once and pushes it as it commits, and the relay confirms positions with
standby status updates (no statement, no round trip). Measured in ``bench/``: see the README.

The connection is asyncpg's (same URL, authentication and TLS as the pool's, with the
``replication=database`` startup parameter). Once it is ready, its transport is handed to
:class:`SlotStream`, which speaks the COPY-both sub-protocol: XLogData (``w``) carries one
pgoutput message, a primary keepalive (``k``) may ask for a reply, and the client sends
status updates (``r``). Flow control is TCP's: reading pauses while ``MAX_PENDING_ROWS``
rows wait to be taken.

Liveness: PostgreSQL ends a silent client after ``wal_sender_timeout``; the relay answers
every keepalive and sends a status update asking for a reply after ``PING_SECONDS`` of
silence, and counts the stream lost after ``SILENCE_SECONDS`` without a byte (a blackholed
or paused server), so the loop reconnects instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import bisect
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from relay.errors import StoreError, cause
from relay.pgoutput import closes_transaction
from relay.pgstore import DRIVER_ERRORS

#: Rows received and not taken at which reading pauses (TCP pushes back on the walsender):
#: a few claims' worth. More would only grow the heap the garbage collector walks.
MAX_PENDING_ROWS = 15_000
PING_SECONDS = 5.0
SILENCE_SECONDS = 20.0

_HEAD = struct.Struct(">cI")  # message type, length (itself included)
_XLOG = struct.Struct(">qqq")  # XLogData: WAL start, WAL end, send time
_KEEPALIVE = struct.Struct(">qq?")  # WAL end, send time, reply requested
_XLOG_DATA, _KEEPALIVE_MSG = ord("w"), ord("k")  # CopyData sub-messages from the server
_STATUS = struct.Struct(">cIcqqqq?")  # 'd', length, 'r', write, flush, apply, time, reply
_TERMINATE = b"X\0\0\0\x04"
_PG_EPOCH_US = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
_SLOT_IN_USE = "55006"  # object_in_use: another session streams the slot


@dataclass(frozen=True, slots=True)
class StreamTarget:
    """Where and how the stream connects: the relay's URL, its name in pg_stat_activity."""

    dsn: str
    application_name: str
    timeout: float


class SlotBusyError(StoreError):
    """Another session streams the slot (a relay that lost its lease and was not ended yet)."""


class SlotStream(asyncio.Protocol):
    """One ``START_REPLICATION`` stream over a transport taken from asyncpg."""

    def __init__(
        self,
        transport: asyncio.Transport,
        on_rows: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        owner: Any = None,
    ) -> None:
        self.transport = transport
        self._owner = owner  # the asyncpg connection: it closes the transport when collected
        self.on_rows = on_rows
        self.clock = clock
        self._buffer = bytearray()
        self._rows: list[tuple[int, bytes]] = []  # (WAL start, pgoutput message)
        self._taken = 0  # rows taken so far: _rows[0] is row number _taken
        self._ends: list[int] = []  # numbers of the rows after each whole transaction
        self._paused = False
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: StoreError | None = None
        self.flushed = 0  # the position confirmed to PostgreSQL
        self.last_received = clock()
        self._last_ping = self.last_received

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_received = self.clock()
        buffer = self._buffer
        buffer += data
        at, size = 0, len(buffer)
        rows = self._rows
        while size - at >= 5:
            kind, length = _HEAD.unpack_from(buffer, at)
            end = at + 1 + length
            if end > size:
                break
            if kind == b"d":
                sub = buffer[at + 5]
                if sub == _XLOG_DATA:
                    wal_start = _XLOG.unpack_from(buffer, at + 6)[0]
                    message = bytes(buffer[at + 30 : end])
                    rows.append((wal_start, message))
                    if closes_transaction(message):
                        self._ends.append(self._taken + len(rows))
                elif sub == _KEEPALIVE_MSG and _KEEPALIVE.unpack_from(buffer, at + 6)[2]:
                    self._status(reply=False)
            elif kind == b"W":
                if not self._started.done():
                    self._started.set_result(None)
            elif kind == b"E":
                self._fail(_server_error(bytes(buffer[at + 5 : end])))
            elif kind == b"c":
                self._fail(StoreError("PostgreSQL ended the replication stream (CopyDone)"))
            # N (notice), S (parameter status) and the rest carry nothing for us.
            at = end
        del buffer[:at]
        if self._ends:
            if len(rows) >= MAX_PENDING_ROWS and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            self.on_rows()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._owner is not None:
            self._owner.terminate()  # asyncpg's side: the transport is closed already
            self._owner = None
        why = cause(exc) if exc is not None else "the connection was closed"
        self._fail(StoreError(f"replication stream lost: {why}"))

    def _fail(self, error: StoreError) -> None:
        if self.error is None:
            self.error = error
        if not self._started.done():
            self._started.set_exception(error)
        self.transport.abort()
        self.on_rows()  # wake the loop: its next claim raises the error

    # --- the relay's side ----------------------------------------------------------------------

    async def start(self, slot: str, publication: str, timeout: float) -> None:  # noqa: ASYNC109
        """``START_REPLICATION`` from the slot's confirmed position (names are validated:
        ``[a-z0-9_]``)."""
        command = (
            f"START_REPLICATION SLOT {slot} LOGICAL 0/0 (proto_version '1', "
            f"publication_names '{publication}', messages 'true')"
        ).encode() + b"\0"
        self.transport.write(b"Q" + struct.pack(">I", 4 + len(command)) + command)
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError as exc:
            self.close()
            raise StoreError(
                f"START_REPLICATION got no answer within {timeout:g} s (RELAY_DB_TIMEOUT_SECONDS)"
            ) from exc

    def take(self, max_rows: int) -> list[tuple[int, bytes]]:
        """The rows of the next whole transactions received, in WAL order: as many as fit in
        ``max_rows`` (one transaction however large). Raises the stream's error once it has
        none left to give."""
        if not self._ends:
            if self.error is None:
                self._ping()
            if self.error is not None:
                raise self.error
            return []
        fit = bisect.bisect_right(self._ends, self._taken + max_rows) or 1
        end = self._ends[fit - 1]
        del self._ends[:fit]
        count, self._taken = end - self._taken, end
        taken = self._rows[:count]
        del self._rows[:count]
        # Read on once few rows wait, or when none of them is a whole transaction: the one
        # still arriving must reach its commit, however many rows it has already.
        if self._paused and (len(self._rows) < MAX_PENDING_ROWS or not self._ends):
            self._paused = False
            self.transport.resume_reading()
        return taken

    def confirm(self, lsn: int) -> None:
        """Tell PostgreSQL the slot may move to ``lsn`` (written, flushed and applied)."""
        if lsn > self.flushed:
            self.flushed = lsn
            self._status(reply=False)

    def _ping(self) -> None:
        now = self.clock()
        silent = now - self.last_received
        if silent > SILENCE_SECONDS:
            self._fail(StoreError(
                f"replication stream silent for {silent:.0f} s (no keepalive answered): "
                "reconnecting"
            ))  # fmt: skip
        elif silent > PING_SECONDS and now - self._last_ping > PING_SECONDS:
            self._last_ping = now
            self._status(reply=True)

    def _status(self, *, reply: bool) -> None:
        if self.transport.is_closing():
            return
        micros = time.time_ns() // 1000 - _PG_EPOCH_US
        lsn = self.flushed
        self.transport.write(_STATUS.pack(b"d", 4 + 1 + 32 + 1, b"r", lsn, lsn, lsn, micros, reply))

    def close(self) -> None:
        """End the stream: what was confirmed is sent first, then Terminate."""
        if self.error is None:
            self.error = StoreError("replication stream closed")
        if not self.transport.is_closing():
            self.transport.write(_TERMINATE)
            self.transport.close()  # flushes the status updates still buffered

    @property
    def closed(self) -> bool:
        return self.error is not None


async def open_stream(
    dsn: str,
    slot: str,
    publication: str,
    *,
    on_rows: Callable[[], None],
    timeout: float,  # noqa: ASYNC109 - also the connect timeout, as for the pool
    application_name: str,
) -> SlotStream:
    """Connect in replication mode and start streaming ``slot``; :class:`SlotBusyError` while
    another session streams it, :class:`StoreError` for the rest."""
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=min(timeout, 10),
            server_settings={"replication": "database", "application_name": application_name},
        )
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot open a replication connection: {cause(exc)}") from exc
    transport: Any = getattr(conn, "_transport", None)
    if transport is None or not hasattr(transport, "set_protocol"):
        conn.terminate()
        raise StoreError(
            f"asyncpg {asyncpg.__version__} does not expose its transport: RELAY_WAL_READ=stream "
            "cannot take over the connection; use RELAY_WAL_READ=functions"
        )
    stream = SlotStream(transport, on_rows, owner=conn)
    transport.set_protocol(stream)  # asyncpg's protocol never sees this connection again
    await stream.start(slot, publication, timeout)
    return stream


def _server_error(body: bytes) -> StoreError:
    fields: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    text = f"{fields.get('S', 'ERROR')}: {fields.get('M', '?')} (SQLSTATE {fields.get('C', '?')})"
    if fields.get("C") == _SLOT_IN_USE:
        return SlotBusyError(f"replication slot busy: {text}")
    return StoreError(f"replication stream: {text}")
