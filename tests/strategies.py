"""Hypothesis strategies that build valid instances of every event class from its fields."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from outbox_client.events import BaseEvent, EventMetadata
from outbox_client.events.base import Code, HeaderText, Text, UtcDatetime

_code = st.from_regex(r"[A-Za-z0-9_\-:]{1,24}", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
_header = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
_offsets = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_aware = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=_offsets
)

_ALIASES: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (Code, _code),
    (Text, _text.filter(str.strip)),
    (HeaderText, _header),
    (UtcDatetime, _aware),
]


def _for(annotation: Any) -> st.SearchStrategy[Any]:
    for alias, strategy in _ALIASES:
        if annotation == alias:
            return strategy
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([_for(arg) for arg in args])
    if annotation is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(_for(args[0]), max_size=3).map(tuple)
    if origin is typing.Annotated:
        base, *meta = args
        bounds = {}
        flat = [m for item in meta for m in (getattr(item, "metadata", None) or [item])]
        for item in flat:
            for name in ("ge", "gt", "le", "lt"):
                value = getattr(item, name, None)
                if value is not None:
                    bounds[name] = value
        low = bounds["ge"] if "ge" in bounds else bounds.get("gt", -1) + 1
        high = bounds.get("le", 10**6)
        if base is int:
            return st.integers(low, high)
        if base is float:
            return st.floats(low, high, allow_nan=False, allow_infinity=False)
        return _for(base)
    if annotation is bool:
        return st.booleans()
    if annotation is str:
        return _text
    if annotation is EventMetadata:
        return st.builds(
            EventMetadata,
            source_service=_header,
            correlation_id=st.none() | _header,
            causation_id=st.none() | _header,
            user_id=st.none() | _header,
        )
    raise NotImplementedError(f"no strategy for {annotation!r}")


_SPANS = [("start_time", "end_time"), ("starts_at", "ends_at"), ("starts_at", "repeat_until")]


def _annotation(info: Any) -> Any:
    # pydantic lifts Annotated metadata of a plain field into FieldInfo.metadata: put it back.
    if info.metadata:
        return typing.Annotated[(info.annotation, *info.metadata)]
    return info.annotation


@st.composite
def events(draw: st.DrawFn, cls: type[BaseEvent]) -> BaseEvent:
    """A valid instance of ``cls``; cross-field rules (spans, 'one change') are retried."""
    skip = {"event_type", "event_id", "schema_version"}
    for attempt in range(20):
        # The first try leaves optional fields out at random; retries fill them all in.
        kwargs = {
            name: draw(_for(_annotation(info)))
            for name, info in cls.model_fields.items()
            if name not in skip and (info.is_required() or attempt > 0 or draw(st.booleans()))
        }
        kwargs["occurred_at"] = kwargs.get("occurred_at") or datetime.now(UTC)
        for start, end in _SPANS:
            if kwargs.get(start) and kwargs.get(end) and kwargs[end] <= kwargs[start]:
                kwargs[end] = kwargs[start] + timedelta(minutes=draw(st.integers(1, 10_000)))
        try:
            return cls(**kwargs)
        except ValidationError:
            continue
    raise AssertionError(f"could not build a valid {cls.__name__}")
