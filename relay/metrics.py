"""Prometheus metrics of one relay. Counters, and the per-event commit -> PubAck histogram, are
read from :class:`RelayStats` at scrape time (nothing on the hot path); the per-batch
histograms and the gauges are updated as things happen."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from relay.stats import ATOMIC_OUTCOMES, LAG_BUCKETS, RelayStats


class _StatsCollector(Collector):
    def __init__(self, stats: RelayStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        published = CounterMetricFamily(
            "vertector_relay_events_published",
            "Events JetStream stored (not its 'duplicate' PubAcks); event_type bounded: the"
            " catalog's types, at most 50 others, the rest 'other'",
            labels=["stream", "event_type"],
        )  # fmt: skip
        for (stream, event_type), n in sorted(s.by_type.items()):
            published.add_metric([stream, event_type], n)
        yield published
        yield CounterMetricFamily(
            "vertector_relay_publish_duplicates",
            "PubAcks saying JetStream already had the message (a re-publish, deduplicated)",
            value=s.duplicates,
        )
        retries = CounterMetricFamily(
            "vertector_relay_publish_retries", "Failed publishes that will be retried",
            labels=["reason"],
        )  # fmt: skip
        for reason, n in sorted(s.retries.items()):
            retries.add_metric([reason], n)
        yield retries
        quarantined = CounterMetricFamily(
            "vertector_relay_events_quarantined", "Events set aside as unpublishable",
            labels=["reason"],
        )  # fmt: skip
        for reason, n in sorted(s.quarantined.items()):
            quarantined.add_metric([reason], n)
        yield quarantined
        yield CounterMetricFamily(
            "vertector_relay_batches", "Claim-publish-record rounds", value=s.batches
        )
        atomic = CounterMetricFamily(
            "vertector_relay_atomic_batches",
            "WAL capture's transactions of several events, by outcome: stored (one atomic"
            " batch), split (batch refused, events one by one), retried (not stored now),"
            " fallback (sent event by event: no allow_atomic, old server, several streams)",
            labels=["outcome"],
        )  # fmt: skip
        for outcome in ATOMIC_OUTCOMES:
            atomic.add_metric([outcome], s.atomic[outcome])
        yield atomic
        yield CounterMetricFamily(
            "vertector_relay_split_events",
            "Events of transactions whose atomic batch was refused, sent one by one",
            value=s.split_events,
        )
        yield CounterMetricFamily(
            "vertector_relay_rows_purged", "Sent rows deleted after the retention", value=s.purged
        )
        cumulative, buckets = 0, []
        for bound, n in zip((*LAG_BUCKETS, float("inf")), s.lag_counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        yield HistogramMetricFamily(
            "vertector_relay_commit_to_publish_seconds",
            "From the producing transaction to the PubAck", buckets=buckets, sum_value=s.lag_sum,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "vertector_relay_keys_backing_off",
            "Partition keys whose next event waits for a retry (stream full or without a leader)",
            value=s.keys_backing_off,
        )


class RelayMetrics:
    """The relay's metrics in their own registry (several relays may live in one process)."""

    def __init__(self, stats: RelayStats) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # What every Prometheus process exports: memory, CPU, open fds, start time, GC, version.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.batch_seconds = Histogram(
            "vertector_relay_publish_batch_seconds", "Publishing one claimed batch",
            buckets=LAG_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "vertector_relay_batch_size", "Rows per claimed batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=r,
        )  # fmt: skip
        self.backlog = Gauge("vertector_relay_backlog", "Unsent rows", registry=r)
        self.oldest_age = Gauge(
            "vertector_relay_oldest_unsent_age_seconds", "Age of the oldest unsent row", registry=r
        )
        self.quarantined_rows = Gauge(
            "vertector_relay_quarantined_rows", "Quarantined rows in the table", registry=r
        )
        self.partitions_owned = Gauge(
            "vertector_relay_partitions_owned", "Partitions this instance publishes", registry=r
        )
        self.nats_connected = Gauge(
            "vertector_relay_nats_connected", "1 when connected to NATS", registry=r
        )
        self.postgres_connected = Gauge(
            "vertector_relay_postgres_connected", "1 when PostgreSQL answers", registry=r
        )
        self.ready = Gauge("vertector_relay_ready", "1 when /readyz answers 200", registry=r)
        r.register(_StatsCollector(stats))
        stats.on_batch = self._observe_batch

    def _observe_batch(self, rows: int, seconds: float) -> None:
        self.batch_size.observe(rows)
        self.batch_seconds.observe(seconds)

    def names(self) -> set[str]:
        """Every metric name this relay exports (the dashboard test checks against it)."""
        names = set()
        for metric in self.registry.collect():
            names.add(metric.name)
            names |= {sample.name for sample in metric.samples}
        return names
