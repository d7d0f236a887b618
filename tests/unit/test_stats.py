"""What the relay counts: bounded metric labels, and JetStream's duplicates apart from publishes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from relay.metrics import RelayMetrics
from relay.ports import OutboxRow, Stored
from relay.stats import MAX_OTHER_TYPE_LABELS, RelayStats


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
