"""Optional OpenTelemetry glue: W3C trace context in and out of NATS headers.

OpenTelemetry is not a dependency; without it these functions do nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry import propagate as _propagate
except ImportError:  # pragma: no cover - exercised when OpenTelemetry is absent
    _propagate = None


def current_trace_context() -> dict[str, str]:
    """``{"traceparent": ..., "tracestate": ...}`` of the active span, or ``{}``."""
    if _propagate is None:
        return {}
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return {key: carrier[key] for key in ("traceparent", "tracestate") if key in carrier}


def extract_context(headers: Mapping[str, str] | None) -> Any:
    """An OpenTelemetry context from message headers (``None`` without OpenTelemetry)."""
    if _propagate is None:
        return None
    return _propagate.extract(dict(headers or {}))
