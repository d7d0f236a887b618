"""Streams as code: create or update them, check at start that the relay's configured streams
exist, and warn about server settings that can lose acknowledged messages.

The relay is domain-free: it knows the streams it is configured with (``RELAY_STREAMS_FILE``,
or the product's defaults), never an event catalog, and publishes any subject they capture.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from outbox_client.policy import route_problem
from outbox_client.streams import StreamConfig
from relay.errors import ConfigError, MissingStreamError

_RETENTION = {
    "limits": js_api.RetentionPolicy.LIMITS,
    "interest": js_api.RetentionPolicy.INTEREST,
    "workqueue": js_api.RetentionPolicy.WORK_QUEUE,
}
_STORAGE = {"file": js_api.StorageType.FILE, "memory": js_api.StorageType.MEMORY}
_DISCARD = {"old": js_api.DiscardPolicy.OLD, "new": js_api.DiscardPolicy.NEW}


@dataclass(frozen=True)
class Applied:
    name: str
    action: str  # "created" | "updated" | "unchanged"
    changes: tuple[str, ...] = ()

    def __str__(self) -> str:
        detail = f" ({', '.join(self.changes)})" if self.changes else ""
        return f"{self.name}: {self.action}{detail}"


def to_nats(spec: StreamConfig) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=_RETENTION[spec.retention],
        storage=_STORAGE[spec.storage],
        max_age=spec.max_age_seconds,
        duplicate_window=spec.duplicate_window_seconds,
        num_replicas=spec.replicas,
        max_msgs=spec.max_msgs,
        max_bytes=spec.max_bytes,
        discard=_DISCARD[spec.discard],
        # Sent only when wanted: a server older than 2.12 ignores it (checked after apply).
        allow_atomic=True if spec.allow_atomic else None,
    )


def _differences(want: js_api.StreamConfig, have: js_api.StreamConfig) -> list[str]:
    changes = []
    if sorted(want.subjects or []) != sorted(have.subjects or []):
        changes.append(f"subjects {sorted(have.subjects or [])} -> {sorted(want.subjects or [])}")
    if bool(want.allow_atomic) != bool(have.allow_atomic):
        changes.append(f"allow_atomic {bool(have.allow_atomic)} -> {bool(want.allow_atomic)}")
    for name in ("retention", "max_age", "duplicate_window", "num_replicas", "max_msgs",
                 "max_bytes", "discard"):  # fmt: skip
        old, new = getattr(have, name), getattr(want, name)
        if isinstance(old, float) or isinstance(new, float):
            differ = abs(float(old or 0) - float(new or 0)) > 1e-6
        else:
            differ = old != new
        if differ:
            changes.append(f"{name} {_show(old)} -> {_show(new)}")
    return changes


def _show(value: object) -> str:
    return str(getattr(value, "value", value))


async def apply_streams(js: JetStreamContext, specs: Sequence[StreamConfig]) -> list[Applied]:
    """Create missing streams and update changed ones. Idempotent."""
    results = []
    for spec in specs:
        want = to_nats(spec)
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(want)
            results.append(Applied(spec.name, "created"))
            continue
        have = info.config
        if have.storage != want.storage:
            raise ConfigError(
                f"stream {spec.name} is stored in {_show(have.storage)} but configured for "
                f"{_show(want.storage)}: JetStream cannot change storage; delete and recreate it"
            )
        if have.retention != want.retention:
            raise ConfigError(
                f"stream {spec.name} has {_show(have.retention)} retention but the streams "
                f"applied want {_show(want.retention)}: JetStream cannot change it in place; "
                "let consumers drain it, delete the stream, then apply again"
            )
        changes = _differences(want, have)
        if changes:
            if have.allow_atomic and not want.allow_atomic:
                want.allow_atomic = False  # to turn it off it must be sent
            await js.update_stream(want)
            results.append(Applied(spec.name, "updated", tuple(changes)))
        else:
            results.append(Applied(spec.name, "unchanged"))
    for spec in specs:
        if spec.allow_atomic and not (await js.stream_info(spec.name)).config.allow_atomic:
            raise ConfigError(
                f"stream {spec.name}: allow_atomic did not take (this nats-server ignores it; "
                "atomic batches need nats-server 2.12.1 or later): upgrade the server or set "
                "allow_atomic false; the relay publishes transactions event by event without it"
            )
    return results


async def check_configured(js: JetStreamContext, specs: Sequence[StreamConfig]) -> None:
    """Raise :class:`MissingStreamError` naming every configured stream the server lacks.

    Each stream is asked for by name: only "not found" means missing. The list of all
    streams leaves out those whose leader does not answer in time (in an election, say), and a
    relay starting then took a stream being elected for one that does not exist. A timeout
    or an unavailable answer is raised as it is, for the caller to wait out."""
    missing = []
    for spec in specs:
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            missing.append(spec.name)
    if missing:
        raise MissingStreamError(
            f"configured stream(s) {', '.join(missing)} do not exist: run `vertector-relay "
            "streams apply` (or set RELAY_STREAMS_FILE to the streams you have) before starting "
            "the relay"
        )


def unroutable(subjects: Iterable[str], specs: Sequence[StreamConfig]) -> list[str]:
    """The ``subjects`` (of rows waiting in the outbox) the relay will quarantine rather than
    publish: reserved, malformed, or captured by no configured stream."""
    return [subject for subject in subjects if route_problem(subject, specs) is not None]


async def risky_settings(js: JetStreamContext, retry_horizon_seconds: float) -> list[str]:
    """Human-readable warnings about what the server or streams could lose or duplicate."""
    warnings = []
    for info in await js.streams_info():
        config = info.config
        if config.storage == js_api.StorageType.MEMORY:
            warnings.append(f"stream {config.name} is in memory: a server restart loses it")
        elif (config.num_replicas or 1) == 1:
            warnings.append(
                f"stream {config.name} has 1 replica: nats-server acknowledges before fsync by "
                "default, so a power loss can drop acknowledged events; use 3 replicas or "
                "`sync_interval: always`"
            )
        window = config.duplicate_window or 0
        if window < retry_horizon_seconds:
            warnings.append(
                f"stream {config.name} deduplicates for {window:.0f} s, less than the relay's "
                f"retry horizon of {retry_horizon_seconds:.0f} s: re-publishes after a long "
                "outage reach consumers twice (their inbox must drop them)"
            )
    return warnings
