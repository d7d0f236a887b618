"""What the relay counts: bounded metric labels, and JetStream's duplicates apart from publishes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

from prometheus_client import CollectorRegistry, Histogram

from relay.metrics import RelayMetrics
from relay.ports import OutboxRow, Stored
from relay.stats import LAG_BUCKETS, MAX_OTHER_TYPE_LABELS, RelayStats


def row(event_type: str, subject: str = "academic.course.updated") -> OutboxRow:
    return OutboxRow(
        id=1, event_id=uuid.uuid4(), subject=subject, partition_key="k", partition=0,
        payload=b"{}", headers={"Vertector-Event-Type": event_type}, attempts=0,
        created_at=datetime.now(UTC),
    )  # fmt: skip


def published_series(metrics: RelayMetrics) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels.values()): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == "vertector_relay_events_published_total"
    }


def test_producer_chosen_event_types_cannot_grow_metric_series_without_bound() -> None:
    stats = RelayStats()
    metrics = RelayMetrics(stats)
    for i in range(2000):
        stats.record_ack(row(f"made.up.type{i}"), Stored("ACADEMIC_EVENTS", i + 1, False))
    stats.record_ack(row("x" * 500), Stored("ACADEMIC_EVENTS", 3000, False))
    stats.record_ack(row("academic.course.created"), Stored("ACADEMIC_EVENTS", 3001, False))
    series = published_series(metrics)
    assert len(series) == MAX_OTHER_TYPE_LABELS + 2  # 50 others, "other", one catalog type
    assert series[("ACADEMIC_EVENTS", "other")] == 2000 - MAX_OTHER_TYPE_LABELS + 1
    assert series[("ACADEMIC_EVENTS", "made.up.type0")] == 1
    # The catalog's types keep their own label however many others came first.
    assert series[("ACADEMIC_EVENTS", "academic.course.created")] == 1
    assert sum(series.values()) == stats.published == 2002


def test_a_duplicate_puback_is_not_a_publish() -> None:
    stats = RelayStats()
    metrics = RelayMetrics(stats)
    stats.record_ack(row("academic.course.updated"), Stored("ACADEMIC_EVENTS", 7, True))
    assert stats.published == 0 and stats.duplicates == 1
    assert published_series(metrics) == {}


def test_the_lag_histogram_reads_as_prometheus_client_would_write_it() -> None:
    """commit -> PubAck is counted in RelayStats and read at scrape time: the samples are those
    of a prometheus_client Histogram with the same buckets given the same observations
    (bounds included: a lag equal to a bound falls in its bucket)."""
    stats = RelayStats()
    metrics = RelayMetrics(stats)
    reference = Histogram(
        "vertector_relay_commit_to_publish_seconds", "x", buckets=LAG_BUCKETS,
        registry=CollectorRegistry(),
    )  # fmt: skip
    now = datetime.now(UTC)
    lags = [0.0005, 0.001, 0.0025, 0.007, 0.3, 1.0, 4.0, 299.0, 300.0, 301.0, 5000.0, -0.5]
    with mock.patch("relay.stats.time.time", return_value=now.timestamp()):
        for lag in lags:
            event = row("academic.course.created")
            event.created_at = now - timedelta(seconds=lag)
            stats.record_ack(event, Stored("ACADEMIC_EVENTS", 1, False))
            reference.observe(now.timestamp() - event.created_at.timestamp())

    def samples(families: object) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for f in families  # type: ignore[attr-defined]
            if f.name == "vertector_relay_commit_to_publish_seconds"
            for s in f.samples
            if not s.name.endswith("_created")
        }

    ours = samples(metrics.registry.collect())
    theirs = samples(reference.collect())
    assert ours == theirs
    assert ours[("vertector_relay_commit_to_publish_seconds_count", "")] == len(lags)
