"""WAL capture in the suite: a test database's slot and publication, and the switch of the
test process's producers (and of the relay processes it starts) to ``OUTBOX_CAPTURE=wal``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from outbox_client.capture import set_capture
from relay import walslot


def skip_unless_logical(wal_level: str) -> None:
    """One reason, the same for every WAL test, on a server without logical decoding (the
    machine's own PostgreSQL as the second target)."""
    if wal_level != "logical":
        pytest.skip(f"WAL capture tests need wal_level=logical; this server has {wal_level}")


async def skip_unless_atomic(nats_url: str) -> None:
    """Atomic batches need nats-server 2.12.1+ (the wheel's is 2.15; the machine's NATS of the
    second-target run may be older): one reason, the same for every such test."""
    from tests.relayrun import jetstream

    async with jetstream(nats_url) as js:
        version = js._nc.connected_server_version
    if (version.major, version.minor, version.patch) < (2, 12, 1):
        pytest.skip(f"atomic batches need nats-server 2.12.1+, this one is {version}")


@contextlib.asynccontextmanager
async def wal_mode(
    database_url: str, monkeypatch: pytest.MonkeyPatch, *, read: str = "functions"
) -> AsyncIterator[None]:
    """Slot set up; producers here and relays started from here capture from the WAL, and
    the relays read it as ``read`` says (``RELAY_WAL_READ``: functions or stream)."""
    await walslot.setup_database(database_url)
    monkeypatch.setenv("OUTBOX_CAPTURE", "wal")
    monkeypatch.setenv("RELAY_WAL_READ", read)
    set_capture("wal")
    try:
        yield
    finally:
        set_capture(None)


@pytest.fixture(name="database_url", params=["table", "wal", "wal_stream"])
async def both_modes(
    request: pytest.FixtureRequest,
    database_url: str,
    wal_level: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[str]:
    """``database_url`` in both capture modes: rows of outbox_events, or a replication slot
    (read through the slot functions, and streamed: ``RELAY_WAL_READ``).
    A test module runs every test twice by importing it (``from tests.walsupport import
    both_modes``)."""
    if request.param == "table":
        yield database_url
        return
    skip_unless_logical(wal_level)
    read = "stream" if request.param == "wal_stream" else "functions"
    async with wal_mode(database_url, monkeypatch, read=read):
        yield database_url


def wal_read() -> str:
    """How the relays of this test read the slot (``RELAY_WAL_READ``, set by wal_mode)."""
    return os.environ.get("RELAY_WAL_READ", "functions")
