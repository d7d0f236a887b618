"""Is one JSON Schema compatible with another? The rules of a schema registry, for the JSON
Schema subset pydantic generates (objects, ``anyOf`` for optionals, ``enum``/``const`` for
literals, string, number and array constraints, ``$ref`` into ``$defs``).

``reader_problems(reader, writer)`` names every way a document valid under ``writer`` could be
refused by ``reader``. The modes follow Confluent Schema Registry:

- ``BACKWARD``: consumers on the new version read events written with the old one
  (reader = new, writer = old);
- ``FORWARD``: consumers still on the old version read events of the new one;
- ``FULL``: both; ``NONE``: no check.

So removing or renaming a field, making an optional field required, changing a type, or
narrowing an enum or a constraint breaks BACKWARD; adding an optional field or widening does
not. Events are closed objects (``additionalProperties: false``): an old reader refuses a field
it does not know, which is why adding a field breaks FORWARD.

>>> old = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
...        "additionalProperties": False}
>>> new = {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"],
...        "additionalProperties": False}
>>> for problem in breaking_changes(old, new, Mode.BACKWARD):
...     print(problem)
a: field removed (or renamed): events that carry it are refused
b: new required field: older events lack it
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

Schema = dict[str, Any]
REMOVED = "field removed (or renamed): events that carry it are refused"

#: Keys that document a schema without changing what it accepts.
ANNOTATIONS = frozenset({"title", "description", "examples", "$comment", "deprecated"})


class Mode(StrEnum):
    BACKWARD = "BACKWARD"
    FORWARD = "FORWARD"
    FULL = "FULL"
    NONE = "NONE"


def breaking_changes(old: Schema, new: Schema, mode: Mode, path: str = "") -> list[str]:
    """What breaks when ``old`` is replaced by ``new`` under ``mode``; empty when compatible."""
    problems: list[str] = []
    if mode in (Mode.BACKWARD, Mode.FULL):
        problems += reader_problems(new, old, path)
    if mode in (Mode.FORWARD, Mode.FULL):
        problems += [
            f"{p} (for consumers still on the old version)" for p in reader_problems(old, new, path)
        ]
    return problems


def reader_problems(reader: Schema, writer: Schema, path: str = "") -> list[str]:
    """Why a document valid under ``writer`` may be refused by ``reader`` (empty: it never is)."""
    return _Compare(reader, writer).accepts(reader, writer, path)


def strip_annotations(schema: Any) -> Any:
    """``schema`` without titles and descriptions: what is left decides what it accepts."""
    if isinstance(schema, list):
        return [strip_annotations(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key in _NAMED and isinstance(value, dict):
            # A map of names to schemas: a field may well be called "title".
            out[key] = {name: strip_annotations(sub) for name, sub in value.items()}
        elif key in _VALUES:
            out[key] = value
        else:
            out[key] = strip_annotations(value)
    return out


_NAMED = frozenset({"properties", "$defs", "definitions", "patternProperties"})
_VALUES = frozenset({"const", "enum", "default", "examples"})


class _Compare:
    """One comparison: remembers both roots so ``$ref`` resolves in the right document."""

    def __init__(self, reader_root: Schema, writer_root: Schema) -> None:
        self.roots = (reader_root, writer_root)

    def accepts(self, reader: Schema, writer: Schema, path: str) -> list[str]:
        readers = self._alternatives(reader, 0)
        writers = self._alternatives(writer, 1)
        problems: list[str] = []
        for w in writers:
            candidates = [r for r in readers if _types(w) <= _widened(_types(r))]
            if not candidates:
                problems.append(
                    f"{_at(path)}type changed: {_describe(w)} is no longer accepted "
                    f"(now {' or '.join(_describe(r) for r in readers)})"
                )
                continue
            found: list[list[str]] = [self._one(r, w, path) for r in candidates]
            if all(found):
                fewest = min(found, key=len)
                problems += fewest
        return _unique(problems)

    def _alternatives(self, schema: Schema, side: int) -> list[Schema]:
        schema = self._resolve(schema, side)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                out: list[Schema] = []
                for alt in schema[key]:
                    out += [rest | a for a in self._alternatives(alt, side)]
                return out
        return [schema]

    def _resolve(self, schema: Schema, side: int) -> Schema:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/") or seen > 32:
                raise ValueError(f"unsupported $ref {ref!r}: only local refs are compared")
            target: Any = self.roots[side]
            for part in ref[2:].split("/"):
                target = target[part]
            schema = {k: v for k, v in schema.items() if k != "$ref"} | target
            seen += 1
        return schema

    def _one(self, r: Schema, w: Schema, path: str) -> list[str]:
        problems = _values(r, w, path)
        kinds = _types(w)
        if kinds & {"string"}:
            problems += _string(r, w, path)
        if kinds & {"integer", "number"}:
            problems += _number(r, w, path)
        if "array" in kinds:
            problems += _bounds(r, w, path, "minItems", "maxItems", "items")
            if "items" in r:
                problems += self.accepts(r["items"], w.get("items", {}), f"{path}[]")
        if "object" in kinds:
            problems += self._object(r, w, path)
        return problems

    def _object(self, r: Schema, w: Schema, path: str) -> list[str]:
        problems: list[str] = []
        r_props: Schema = r.get("properties", {})
        w_props: Schema = w.get("properties", {})
        r_required, w_required = set(r.get("required", ())), set(w.get("required", ()))
        r_extra, w_extra = r.get("additionalProperties", True), w.get("additionalProperties", True)
        for name in sorted(r_required - w_required):
            if name in w_props:
                problems.append(f"{_join(path, name)}: optional field became required")
            else:
                problems.append(f"{_join(path, name)}: new required field: older events lack it")
        for name in sorted(w_props):
            here = _join(path, name)
            if name in r_props:
                problems += self.accepts(r_props[name], w_props[name], here)
            elif r_extra is False:
                problems.append(f"{here}: {REMOVED}")
            elif isinstance(r_extra, dict):
                problems += self.accepts(r_extra, w_props[name], here)
        if isinstance(w_extra, dict):
            for name in sorted(set(r_props) - set(w_props)):
                problems += self.accepts(r_props[name], w_extra, _join(path, name))
        if r_extra is False and w_extra is not False:
            problems.append(f"{_at(path)}closed to fields it used to allow")
        elif isinstance(r_extra, dict) and w_extra is not False:
            problems += self.accepts(r_extra, w_extra if isinstance(w_extra, dict) else {}, path)
        return problems


def _types(schema: Schema) -> set[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return set(kind)
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if values is not None:
        return {_json_type(v) for v in values}
    return {"any"}


def _widened(kinds: set[str]) -> set[str]:
    if "any" in kinds:
        return {"any", "string", "integer", "number", "boolean", "null", "array", "object"}
    return kinds | {"integer"} if "number" in kinds else kinds


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _allowed(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    enum = schema.get("enum")
    return list(enum) if enum is not None else None


def _values(r: Schema, w: Schema, path: str) -> list[str]:
    r_allowed, w_allowed = _allowed(r), _allowed(w)
    if r_allowed is None:
        return []
    if w_allowed is None:
        return [f"{_at(path)}narrowed to the values {_show(r_allowed)}"]
    lost = [v for v in w_allowed if v not in r_allowed]
    return [f"{_at(path)}enum narrowed: {_show(lost)} no longer allowed"] if lost else []


def _string(r: Schema, w: Schema, path: str) -> list[str]:
    problems = _bounds(r, w, path, "minLength", "maxLength", "length")
    for key in ("pattern", "format"):
        if key in r and r[key] != w.get(key):
            was = f"{w[key]!r}" if key in w else "none"
            problems.append(f"{_at(path)}{key} changed from {was} to {r[key]!r}")
    return problems


def _bounds(r: Schema, w: Schema, path: str, low: str, high: str, what: str) -> list[str]:
    problems = []
    if r.get(low, 0) > w.get(low, 0):
        problems.append(f"{_at(path)}minimum {what} raised from {w.get(low, 0)} to {r[low]}")
    if high in r and (high not in w or r[high] < w[high]):
        was = w.get(high, "none")
        problems.append(f"{_at(path)}maximum {what} lowered from {was} to {r[high]}")
    return problems


def _number(r: Schema, w: Schema, path: str) -> list[str]:
    problems = []
    r_low, w_low = _limit(r, "minimum"), _limit(w, "minimum")
    if r_low is not None and (w_low is None or r_low > w_low):
        problems.append(f"{_at(path)}lower bound raised from {_bound(w_low)} to {_bound(r_low)}")
    r_high, w_high = _limit(r, "maximum"), _limit(w, "maximum")
    if r_high is not None and (w_high is None or _negated(r_high) > _negated(w_high)):
        problems.append(f"{_at(path)}upper bound lowered from {_bound(w_high)} to {_bound(r_high)}")
    if "multipleOf" in r and r["multipleOf"] != w.get("multipleOf"):
        problems.append(f"{_at(path)}multipleOf changed to {r['multipleOf']}")
    return problems


def _limit(schema: Schema, key: str) -> tuple[float, bool] | None:
    """A bound as (value, exclusive); exclusive bounds sort as tighter."""
    exclusive = "exclusiveMinimum" if key == "minimum" else "exclusiveMaximum"
    if exclusive in schema:
        return (float(schema[exclusive]), True)
    if key in schema:
        return (float(schema[key]), False)
    return None


def _negated(bound: tuple[float, bool]) -> tuple[float, bool]:
    return (-bound[0], bound[1])


def _bound(bound: tuple[float, bool] | None) -> str:
    if bound is None:
        return "none"
    return f"{'>' if bound[1] else ''}{bound[0]:g}"


def _describe(schema: Schema) -> str:
    kinds = _types(schema)
    allowed = _allowed(schema)
    text = "/".join(sorted(kinds))
    return f"{text} {_show(allowed)}" if allowed is not None else text


def _show(values: list[Any]) -> str:
    return ", ".join(json.dumps(v) for v in values)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _at(path: str) -> str:
    return f"{path}: " if path else ""


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
