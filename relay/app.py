"""The one place that wires concrete classes together: PostgreSQL store, NATS publisher,
LISTEN wake-ups, purger and the loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import nats.errors

from outbox_client.nats_config import NATSConfig
from outbox_client.streams import DEFAULT_STREAMS, StreamConfig
from outbox_client.table import NOTIFY_CHANNEL, PARTITIONS
from relay.aio import sleep_until_stopped
from relay.checkpoints import NO_CHECKPOINTS, Checkpoints
from relay.contracts import ContractValidator
from relay.errors import ConfigError, PublishError, RelayError, StoreError
from relay.http import HealthServer
from relay.instancelock import InstanceLock
from relay.leases import LeaseManager
from relay.listener import PgListener
from relay.log import log_event
from relay.metrics import RelayMetrics
from relay.natspublisher import ATOMIC_BATCH_MAX, NatsPublisher
from relay.natsstreams import check_configured, risky_settings, unroutable
from relay.pgstore import PgLeaseStore, PgStore, application_name
from relay.ports import Backlog, Rounds
from relay.purger import run_purger, run_vacuum
from relay.retry import Backoff, RetryPolicies
from relay.settings import RelaySettings, with_relay_defaults
from relay.stats import RelayStats
from relay.walmonitor import WalMonitor
from relay.walreader import WalReaderLease
from relay.walslot import ensure_usable
from relay.walstore import WalStore
from relay.walstream import StreamTarget
from relay.worker import LoopConfig, Relay

logger = logging.getLogger("relay.app")
T = TypeVar("T")

#: Re-publishes later than this after a publish are possible (crash, restart, outage).
RETRY_HORIZON_SECONDS = 120.0
#: Distinct waiting subjects the start-up check looks at.
_WAITING_SUBJECTS = 1000


class RelayApp:
    """A running relay: ``await app.run(stop)`` until ``stop`` is set. ``streams`` are the
    streams it is configured with: it publishes only subjects they capture."""

    def __init__(
        self,
        settings: RelaySettings,
        nats_config: NATSConfig,
        *,
        streams: Sequence[StreamConfig] = DEFAULT_STREAMS,
        checkpoints: Checkpoints = NO_CHECKPOINTS,
    ) -> None:
        self.settings = settings
        self.nats_config = nats_config = with_relay_defaults(nats_config)
        self.streams = tuple(streams)
        self.policies = RetryPolicies.from_bounds(
            settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
        )
        self.stats = RelayStats()
        self.wakeup = asyncio.Event()
        self.table_store = PgStore(
            settings.dsn,
            pool_size=settings.pool_size,
            command_timeout=settings.db_timeout_seconds,
            keep_sent=settings.retention_seconds > 0,
            owner=settings.instance_name,
            checkpoints=checkpoints,
        )
        self.store: PgStore | WalStore = self.table_store
        atomic = settings.capture == "wal" and settings.wal_atomic_batches
        if settings.capture == "wal":
            self.store = WalStore(
                self.table_store,
                slot=settings.slot_name,
                publication=settings.wal_publication,
                owner=settings.instance_name,
                buffer_events=settings.wal_buffer_events,
                checkpoints=checkpoints,
                atomic_max_events=ATOMIC_BATCH_MAX if atomic else 0,
                # The walsender pushes each transaction as it commits: it wakes the loop.
                stream=StreamTarget(
                    settings.dsn,
                    application_name(settings.instance_name),
                    settings.db_timeout_seconds,
                )
                if settings.wal_read == "stream"
                else None,
                on_rows=self.wakeup.set,
            )
        self.publisher = NatsPublisher(
            nats_config,
            streams=self.streams,
            max_in_flight=settings.max_in_flight,
            cloudevents=settings.cloudevents,
            publish_timeout=settings.publish_timeout_seconds,
            no_stream_max_attempts=settings.no_stream_max_attempts,
            checkpoints=checkpoints,
            atomic_batches=atomic,
        )
        self.listener = PgListener(
            settings.dsn,
            NOTIFY_CHANNEL,
            self.wakeup,
            policy=self.policies.postgres_unavailable,
            timeout=settings.db_timeout_seconds,
            application_name=application_name(settings.instance_name),
        )
        self.instance_lock = InstanceLock(
            settings.dsn,
            settings.instance_name,
            timeout=settings.db_timeout_seconds,
            application_name=application_name(settings.instance_name),
        )
        self.metrics = RelayMetrics(self.stats)
        self.wal_monitor = (
            WalMonitor(self.metrics.registry, self.store, self.table_store, settings.slot_name)
            if isinstance(self.store, WalStore)
            else None
        )
        self.http: HealthServer | None = None
        self.backlog: Backlog | None = None
        self._postgres_ok = False
        # The loop publishes the partitions the lease manager holds; the lease manager hands a
        # partition over once a round of the loop has ended since it set it aside.
        # In WAL capture one relay at a time reads the slot: its lease stands for every partition.
        rounds = Rounds()
        self.leases: LeaseManager | WalReaderLease
        if isinstance(self.store, WalStore):
            self.leases = WalReaderLease(
                self.table_store,
                settings.slot_name,
                settings.instance_name,
                ttl=settings.lease_seconds,
                on_new_epoch=self.store.reset,
            )
        else:
            self.leases = LeaseManager(
                PgLeaseStore(self.table_store),
                settings.instance_name,
                ttl=settings.lease_seconds,
                total=PARTITIONS,
                rounds=rounds,
            )
        self.relay = Relay(
            self.store,
            self.publisher,
            config=LoopConfig(
                batch_size=settings.batch_size,
                poll_interval=(
                    settings.wal_poll_interval_seconds
                    if settings.capture == "wal"
                    else settings.poll_interval_seconds
                ),
                busy_poll_interval=(
                    settings.wal_busy_poll_interval_seconds
                    if settings.capture == "wal" and settings.wal_read == "functions"
                    else None
                ),
            ),
            policies=self.policies,
            partitions=self.leases,
            rounds=rounds,
            wakeup=self.wakeup,
            stats=self.stats,
            checkpoints=checkpoints,
            validator=ContractValidator(self.publisher) if settings.validate_raw_rows else None,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Bind the health port, connect (retrying forever), check streams, loop until
        ``stop``, shut down cleanly. A port in use is a :class:`ConfigError` before anything
        connects, so a second relay on one host fails at once instead of joining and dying."""
        log_event(
            logger, "relay.starting", instance=self.settings.instance_name,
            nats=self.nats_config.describe(), batch_size=self.settings.batch_size,
        )  # fmt: skip
        await self._listen()
        try:
            if not await _until_connected(
                self.store.open, self.policies.postgres_unavailable, "postgres", stop
            ):
                return
            # Before NATS: a second relay of this name refuses to start (DuplicateInstanceError).
            if not await _until_connected(
                self.instance_lock.acquire, self.policies.postgres_unavailable, "postgres", stop
            ):
                return
            # WAL capture refuses to run on a missing or invalidated slot (ConfigError).
            if isinstance(self.store, WalStore) and not await _until_connected(
                self._check_slot, self.policies.postgres_unavailable, "postgres", stop
            ):
                return
            if not await _until_connected(
                self.publisher.connect, self.policies.nats_unavailable, "nats", stop
            ):
                return
            if not await self._check_streams(stop):
                return
            await self._loop_until(stop)
        finally:
            await self.publisher.close()
            await self.store.close()
            await self.instance_lock.close()
            if self.http is not None:
                await self.http.close()
            log_event(logger, "relay.stopped", published=self.stats.published)

    async def _check_slot(self) -> None:
        await ensure_usable(
            self.table_store, self.settings.slot_name, self.settings.wal_publication,
            accept_lost=self.settings.wal_accept_lost_events,
            stream=self.settings.wal_read == "stream",
        )  # fmt: skip

    async def _listen(self) -> None:
        if self.settings.metrics_port < 0:
            return
        http = HealthServer(
            self.settings.metrics_host, self.settings.metrics_port,
            self.metrics.registry, self.readiness,
        )  # fmt: skip
        try:
            await http.start()
        except OSError as exc:
            where = f"{self.settings.metrics_host}:{self.settings.metrics_port}"
            raise ConfigError(
                f"cannot listen on {where} (RELAY_METRICS_PORT): {exc.strerror or exc}; "
                "another relay on this host? give each its own RELAY_METRICS_PORT "
                "(0: any free port, -1: none)"
            ) from exc
        self.http = http

    async def _check_streams(self, stop: asyncio.Event) -> bool:
        """Refuse to start if a configured stream is missing; a slow or unreachable JetStream
        API (timeouts, elections) is waited out, not fatal. False when stopped first."""
        attempt = 0
        while not stop.is_set():
            try:
                finished, warnings = await _unless_stopped(self._stream_warnings(), stop)
                if not finished:
                    return False
            except (TimeoutError, nats.errors.Error) as exc:
                attempt += 1
                delay = self.policies.nats_unavailable.delay(attempt)
                log_event(
                    logger, "relay.streams.check_failed", level=logging.WARNING,
                    error=f"{type(exc).__name__}: {exc}", retry_in=round(delay, 2),
                )  # fmt: skip
                await sleep_until_stopped(stop, delay)
                continue
            for warning in warnings or []:
                log_event(logger, "relay.config.risky", level=logging.WARNING, detail=warning)
            return True
        return False

    async def _unroutable_waiting(self) -> list[str]:
        """Rows already waiting that the relay will quarantine, not publish: worth a warning
        at start (a mistyped subject, a stream missing from RELAY_STREAMS_FILE), never a
        refusal to start: a row must not be able to stop the relay."""
        try:
            waiting = await self.store.waiting_subjects(_WAITING_SUBJECTS)
        except StoreError as exc:
            return [f"cannot list the subjects of waiting rows: {exc}"]
        refused = unroutable(waiting, self.streams)
        if not refused:
            return []
        shown = ", ".join(repr(subject[:80]) for subject in refused[:5])
        return [
            f"{len(refused)} subject(s) of waiting rows will be quarantined, not published "
            f"(reserved, malformed, or no configured stream captures them): {shown}"
        ]

    async def _stream_warnings(self) -> list[str]:
        js = self.publisher.jetstream
        await check_configured(js, self.streams)
        warnings = await risky_settings(js, RETRY_HORIZON_SECONDS)
        return warnings + await self._unroutable_waiting()

    def readiness(self) -> tuple[bool, str]:
        """Ready: connected to NATS and PostgreSQL, and visible rows do not sit unpublished."""
        if not self.publisher.connected.is_set():
            return False, "not connected to NATS"
        if not self._postgres_ok:
            return False, "PostgreSQL does not answer"
        if self.wal_monitor is not None and self.wal_monitor.problem:
            return False, self.wal_monitor.problem
        backlog = self.backlog
        if backlog is not None and backlog.pending > 0:
            idle = time.monotonic() - self.stats.last_progress
            if idle > self.settings.stall_seconds:
                return False, f"no progress for {idle:.0f} s with {backlog.pending} rows waiting"
        if self.wal_monitor is not None and self.wal_monitor.summary:
            return True, f"ready ({self.wal_monitor.summary})"
        return True, "ready"

    async def _monitor(self, stop: asyncio.Event) -> None:
        """Refresh the gauges every couple of seconds (one cheap query)."""
        m = self.metrics
        while not stop.is_set():
            try:
                self.backlog = await self.store.backlog()
                self._postgres_ok = True
                m.backlog.set(self.backlog.pending)
                m.oldest_age.set(self.backlog.oldest_age_seconds)
                m.quarantined_rows.set(self.backlog.quarantined)
                if self.wal_monitor is not None:
                    await self.wal_monitor.refresh()
            except StoreError:
                self._postgres_ok = False
            m.postgres_connected.set(1 if self._postgres_ok else 0)
            m.nats_connected.set(1 if self.publisher.connected.is_set() else 0)
            m.partitions_owned.set(len(self.leases.current()))
            m.ready.set(1 if self.readiness()[0] else 0)
            await sleep_until_stopped(stop, 2.0)

    async def _loop_until(self, stop: asyncio.Event) -> None:
        background_stop = asyncio.Event()
        await self._first_leases()
        background = [
            asyncio.create_task(self._monitor(background_stop), name="monitor"),
            asyncio.create_task(
                self.leases.run(background_stop, on_change=self.wakeup.set), name="leases"
            ),
            asyncio.create_task(self.instance_lock.keep(background_stop), name="instance-lock"),
            asyncio.create_task(
                run_vacuum(
                    self.store,
                    deleted=self._rows_deleted,
                    # WAL capture has no queue table to vacuum.
                    every_rows=self.settings.vacuum_every_rows
                    if self.store is self.table_store
                    else 0,
                    stop=background_stop,
                ),
                name="vacuum",
            ),
            asyncio.create_task(self.listener.run(background_stop), name="listener"),
            asyncio.create_task(
                run_purger(
                    self.store,
                    retention_seconds=self.settings.retention_seconds,
                    interval=self.settings.purge_interval_seconds,
                    batch_size=self.settings.purge_batch_size,
                    stop=background_stop,
                    on_purged=self._count_purged,
                ),
                name="purger",
            ),
        ]
        # What is alive now (modules, classes, pools, connections) lives as long as the
        # process: out of the collector's full passes, which otherwise stall the loop once
        # the first events come (WAL capture at a steady 5,000 events/s: a 250-event batch
        # took 50 ms to publish instead of ~12, the run's commit -> stored p99 28 ms instead
        # of 12 once past it).
        gc.freeze()
        loop = asyncio.create_task(self.relay.run(stop), name="relay-loop")
        log_event(logger, "relay.started", instance=self.settings.instance_name)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            # Watch the loop until stop: a background task that died surfaces its error; one
            # that ended cleanly (vacuum off or not permitted) leaves the loop still watched.
            watched = {loop, stopping, *background}
            while not (loop.done() or stopping.done()):
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done & set(background):
                    task.result()
            if loop.done() and not stop.is_set():
                _loop_died(loop)
            await stop.wait()
            try:
                await asyncio.wait_for(asyncio.shield(loop), self.settings.shutdown_timeout_seconds)
            except TimeoutError:
                log_event(logger, "relay.shutdown.timeout", level=logging.WARNING)
                loop.cancel()
            if self.relay.has_unwritten:
                log_event(
                    logger, "relay.shutdown.unmarked", level=logging.WARNING,
                    detail="published rows not marked: they are re-published (deduplicated) later",
                )  # fmt: skip
        finally:
            stopping.cancel()
            background_stop.set()
            loop.cancel()
            await asyncio.gather(loop, *background, return_exceptions=True)
            await self.leases.leave()  # hand partitions over now, not after the lease expires

    async def _first_leases(self) -> None:
        try:
            await self.leases.tick()
        except StoreError as exc:  # the lease task keeps trying
            log_event(logger, "relay.leases.tick_failed", level=logging.WARNING, error=str(exc))
        log_event(
            logger, "relay.leases.initial", partitions=len(self.leases.current()),
            alive=self.leases.alive,
        )  # fmt: skip

    def _rows_deleted(self) -> int:
        marked = self.stats.published if self.settings.retention_seconds == 0 else 0
        return marked + self.stats.purged

    def _count_purged(self, rows: int) -> None:
        self.stats.purged += rows


def _loop_died(loop: asyncio.Task[None]) -> None:
    """The publishing loop ended without being asked to: end the process (non-zero) rather
    than stay up, healthy-looking, publishing nothing."""
    exc = None if loop.cancelled() else loop.exception()
    error = f"{type(exc).__name__}: {exc}"[:500] if exc else "stopped"
    # A bug, not a user's mistake: the traceback goes to the log.
    logger.error("relay.loop.crashed", exc_info=exc, extra={"event_fields": {"error": error}})
    raise RelayError(
        "the publishing loop stopped unexpectedly "
        f"({type(exc).__name__ if exc else 'no error'}): see the relay.loop.crashed log entry"
    ) from exc


async def _until_connected(
    connect: Callable[[], Awaitable[None]], policy: Backoff, what: str, stop: asyncio.Event
) -> bool:
    """Retry ``connect`` forever with backoff; False when stopped first (a stop interrupts an
    attempt under way: a server that does not answer never delays a SIGTERM)."""
    attempt = 0
    while not stop.is_set():
        try:
            finished, _ = await _unless_stopped(connect(), stop)
            return finished
        except (StoreError, PublishError) as exc:
            attempt += 1
            delay = policy.delay(attempt)
            log_event(
                logger, f"relay.{what}.unavailable", level=logging.WARNING,
                error=str(exc), attempt=attempt, retry_in=round(delay, 2),
            )  # fmt: skip
            await sleep_until_stopped(stop, delay)
    return False


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Await ``work`` unless ``stop`` is set first (then cancel it): (finished, its result)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False, None
    return True, task.result()
