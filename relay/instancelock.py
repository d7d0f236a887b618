"""One live relay per ``RELAY_INSTANCE_NAME``: leases are owned by name, so two processes of one
name would each renew the other's leases, own every partition and publish every event twice.

The name is held by a session advisory lock on a connection of its own, taken before the relay
connects to NATS: a second process of the same name finds it held and refuses to start. A
crashed process's session ends with its socket, so a restart under the same name goes ahead;
TCP keepalives bound how long a vanished host's session (and so the name) stays held.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import asyncpg

from relay.aio import sleep_until_stopped
from relay.errors import ConfigError, StoreError
from relay.log import log_event
from relay.pgstore import DRIVER_ERRORS
from relay.queries import query

logger = logging.getLogger("relay.instance")

#: A session of a host that vanished (no FIN) is noticed by PostgreSQL after about 10 + 3 * 5 s.
KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}


class DuplicateInstanceError(ConfigError):
    """Another live relay runs under this instance name."""


def lock_key(name: str) -> int:
    """The advisory lock of an instance name: a signed 64-bit number from its hash."""
    digest = hashlib.sha256(f"vertector-relay/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class InstanceLock:
    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        timeout: float,
        application_name: str,
        wait: float = 5.0,
        check_interval: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.name = name
        self.timeout = timeout
        self.application_name = application_name
        self.wait = wait
        self.check_interval = check_interval
        self._conn: asyncpg.Connection | None = None

    async def acquire(self) -> None:
        """Hold the name. :class:`DuplicateInstanceError` when another session still holds it
        after ``wait`` seconds (a predecessor that just died is given that long to go);
        :class:`StoreError` when PostgreSQL does not answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not await self._try():
            if loop.time() >= deadline:
                await self.close()
                raise DuplicateInstanceError(
                    f"another relay named {self.name!r} is running against this database"
                    " (RELAY_INSTANCE_NAME): give each relay its own name, or leave"
                    " RELAY_INSTANCE_NAME unset (host-pid)"
                )
            await asyncio.sleep(0.2)
        log_event(logger, "relay.instance.locked", instance=self.name)

    async def _try(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self.timeout,
                    server_settings={"application_name": self.application_name, **KEEPALIVES},
                )
            return bool(
                await self._conn.fetchval(
                    query("instance_lock"), lock_key(self.name), timeout=self.timeout
                )
            )
        except DRIVER_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot take the instance name's lock: {exc}") from exc

    async def keep(self, stop: asyncio.Event) -> None:
        """Check the lock's connection; after losing it (PostgreSQL restarted, the network
        broke), take the name again, and say so loudly if another relay has it meanwhile."""
        held = True
        while not await sleep_until_stopped(stop, self.check_interval):
            try:
                if held and self._conn is not None and not self._conn.is_closed():
                    await self._conn.fetchval("SELECT 1", timeout=self.timeout)
                    continue
                held = await self._try()
                if held:
                    log_event(logger, "relay.instance.relocked", instance=self.name)
                else:
                    log_event(
                        logger, "relay.instance.held_elsewhere", level=logging.WARNING,
                        instance=self.name,
                        detail="the name's lock is held by another session: this relay's own"
                        " lost one until PostgreSQL notices it is gone, or another relay of this"
                        " RELAY_INSTANCE_NAME (then both publish every partition: stop one)",
                    )  # fmt: skip
            except (*DRIVER_ERRORS, StoreError) as exc:
                held = False
                await self.close()
                log_event(logger, "relay.instance.lock_lost", level=logging.WARNING, error=str(exc))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await asyncio.wait_for(conn.close(), 2)
            conn.terminate()
