"""The compatibility gate: may the contracts in the code replace the published ones?

``review(code, published)`` compares the classes' contracts with those already published (the
committed snapshot, or the registry bucket) and names every break:

- a published version whose class is gone (its events may still sit in a stream);
- a published version whose class changed: a change needs a new ``schema_version``;
- a new version that is incompatible with the version before it under the event type's mode
  (``BACKWARD`` by default), or that skips a version.

Compatible new versions and new event types are listed as ``new``: publishing them is safe.

>>> from outbox_client.schemas.contracts import catalog
>>> code = catalog()
>>> published = {c.key: c for c in code}
>>> (review(code, published).breaks, review(code, published).new)
([], [])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from outbox_client.headers import Header
from outbox_client.schemas.compat import Mode, breaking_changes
from outbox_client.schemas.contracts import Contract


@dataclass
class Review:
    """``breaks``: one line per problem, naming the event type and version; ``new``:
    compatible contracts not yet published."""

    breaks: list[str] = field(default_factory=list)
    new: list[Contract] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks


def review(code: list[Contract], published: dict[str, Contract]) -> Review:
    """Judge ``code`` (every version the classes declare) against ``published`` (key ->
    contract)."""
    result = Review()
    ours = {c.key: c for c in code}
    for key in sorted(set(published) - set(ours)):
        result.breaks.append(
            f"{key}: published, but no class declares it any more: keep the class (events "
            "of this version may still be stored; move it to outbox_client/events/history.py)"
        )
    for contract in code:
        old = published.get(contract.key)
        if old is not None:
            if not contract.same_shape(old):
                result.breaks += [f"{contract.key}: {p}" for p in _changed_in_place(old, contract)]
            continue
        problems = _against_previous(contract, ours, published)
        if problems:
            result.breaks += [f"{contract.key}: {p}" for p in problems]
        else:
            result.new.append(contract)
    return result


def _changed_in_place(old: Contract, new: Contract) -> list[str]:
    changes = [
        *breaking_changes(old.payload, new.payload, Mode.FULL),
        *breaking_changes(old.headers, new.headers, Mode.FULL, path="headers"),
    ]
    if old.compatibility != new.compatibility:
        changes.append(f"compatibility changed from {old.compatibility} to {new.compatibility}")
    fix = (
        f"changed without a new schema_version: undo the change, or make it version "
        f"{new.schema_version + 1} with an upcaster"
    )
    return [fix, *changes] if changes else [f"{fix} (a default or another keyword differs)"]


def _against_previous(
    contract: Contract, ours: dict[str, Contract], published: dict[str, Contract]
) -> list[str]:
    version = contract.schema_version
    if version == 1:
        return []
    key = f"{contract.event_type}.v{version - 1}"
    previous = ours.get(key) or published.get(key)
    if previous is None:
        return [f"version {version - 1} is missing: versions of an event type follow each other"]
    mode = contract.compatibility
    problems = [
        *breaking_changes(_unversioned(previous.payload), _unversioned(contract.payload), mode),
        *breaking_changes(
            _unversioned(previous.headers), _unversioned(contract.headers), mode, path="headers"
        ),
    ]
    return [f"{p} (incompatible with version {version - 1} under {mode})" for p in problems]


def _unversioned(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without its pinned version: the version is meant to change between versions
    (and ``upcast`` bridges it)."""
    properties = dict(schema.get("properties", {}))
    if "schema_version" in properties:
        properties["schema_version"] = {"type": "integer"}
    if Header.SCHEMA_VERSION.value in properties:
        properties[Header.SCHEMA_VERSION.value] = {"type": "string"}
    return {**schema, "properties": properties}
