"""Optional OpenTelemetry glue: W3C trace context in and out of NATS headers.

OpenTelemetry is not a dependency; without it these functions do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

_propagate: Any
try:
    import opentelemetry.propagate as _propagate
    import opentelemetry.trace as _trace
except ImportError:  # pragma: no cover - exercised when OpenTelemetry is absent
    _propagate = None


def current_trace_context() -> dict[str, str]:
    """``{"traceparent": ..., "tracestate": ...}`` of the active span, or ``{}``."""
    if _propagate is None or not _trace.get_current_span().get_span_context().is_valid:
        return {}  # no span: the W3C propagator would write neither header (and costs more)
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return {key: carrier[key] for key in ("traceparent", "tracestate") if key in carrier}


def extract_context(headers: Mapping[str, str] | None) -> Any:
    """An OpenTelemetry context from message headers (``None`` without OpenTelemetry)."""
    if _propagate is None:
        return None
    return _propagate.extract(dict(headers or {}))


@contextlib.contextmanager
def consumer_span(
    headers: Mapping[str, str] | None, event_type: str, enabled: bool = True
) -> Iterator[None]:
    """A consumer span that continues the producer's trace (no-op without OpenTelemetry, or
    when not ``enabled``: ``NATS_ENABLE_TRACING=false``)."""
    if _propagate is None or not enabled:
        yield
        return
    tracer = _trace.get_tracer("outbox_client")
    with tracer.start_as_current_span(
        f"consume {event_type}", context=extract_context(headers), kind=_trace.SpanKind.CONSUMER
    ):
        yield


def relay_span_headers(headers: dict[str, str], subject: str) -> dict[str, str]:
    """Record a PRODUCER span for the relay's publish, child of the producer's context in
    ``headers``, and return the headers carrying the relay span as the new parent."""
    if _propagate is None:
        return headers
    tracer = _trace.get_tracer("vertector_relay")
    with tracer.start_as_current_span(
        f"publish {subject}", context=extract_context(headers), kind=_trace.SpanKind.PRODUCER
    ):
        carrier: dict[str, str] = {}
        _propagate.inject(carrier)
    return headers | {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate")}
