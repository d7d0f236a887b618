"""WAL capture's gauges and readiness: how far the slot lags, and whether it still exists.

Refreshed with the relay's other gauges (``RelayApp._monitor``): one query on
``pg_replication_slots``. The age of the oldest unconfirmed event is the reader's own view
(the commit time of the oldest transaction it read and has not confirmed yet).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from relay.pgstore import PgStore
from relay.walstore import WalStore


class WalMonitor:
    def __init__(
        self, registry: CollectorRegistry, store: WalStore, table_store: PgStore, slot: str
    ) -> None:
        self.store = store
        self.table_store = table_store
        self.slot = slot
        self.lag_bytes = Gauge(
            "vertector_relay_wal_slot_lag_bytes",
            "WAL written since the slot's confirmed position (WAL capture)",
            registry=registry,
        )
        self.oldest_age = Gauge(
            "vertector_relay_wal_oldest_unconfirmed_age_seconds",
            "Age of the oldest event read from the slot and not yet confirmed (WAL capture)",
            registry=registry,
        )
        self.invalidated = Gauge(
            "vertector_relay_wal_slot_invalidated",
            "1 when the slot is gone or invalidated (events may be lost), else 0",
            registry=registry,
        )
        self.problem: str | None = None
        self.summary = ""

    async def refresh(self) -> None:
        """Raises :class:`relay.errors.StoreError` when PostgreSQL does not answer."""
        row = await self.table_store._call("fetchrow", "wal_slot", self.slot)
        backlog = await self.store.backlog()
        self.oldest_age.set(backlog.oldest_age_seconds)
        if row is None or row["wal_status"] == "lost":
            self.invalidated.set(1)
            what = "does not exist" if row is None else "was invalidated (wal_status=lost)"
            self.problem = f"replication slot {self.slot} {what}: events may be lost"
            return
        self.invalidated.set(0)
        self.problem = None
        self.lag_bytes.set(row["lag_bytes"])
        self.summary = (
            f"slot lag {row['lag_bytes']} bytes, oldest unconfirmed event "
            f"{backlog.oldest_age_seconds:.1f} s"
        )
