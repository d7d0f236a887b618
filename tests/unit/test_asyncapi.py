"""``vertector-relay schemas asyncapi`` is a valid AsyncAPI 3 document of the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema_rs
import pytest

from outbox_client.schemas import catalog
from relay.cli import main

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "asyncapi" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema_rs.Validator:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def test_the_document_validates_against_the_asyncapi_3_schema(
    tmp_path: Path, asyncapi_validator: jsonschema_rs.Validator
) -> None:
    out = tmp_path / "asyncapi.json"
    assert main(["schemas", "asyncapi", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    errors = [
        f"{list(e.instance_path)}: {e.message[:200]}" for e in asyncapi_validator.iter_errors(doc)
    ]
    assert errors == []
    assert doc["asyncapi"] == "3.0.0"
    # Channels are the subjects, one message per version, with payload and headers.
    assert set(doc["channels"]) == {c.event_type for c in catalog()}
    schedule = doc["channels"]["academic.schedule.created"]
    assert set(schedule["messages"]) == {"v1", "v2"}
    v2 = schedule["messages"]["v2"]
    assert "delivery_mode" in v2["payload"]["properties"]
    assert v2["headers"]["properties"]["Vertector-Schema-Version"]["const"] == "2"
    assert "$ref" not in json.dumps(v2["payload"])  # self-contained
    # The two streams: each channel names the stream that stores it.
    assert schedule["tags"] == [{"name": "stream:ACADEMIC_EVENTS"}]
    assert doc["channels"]["notes.created"]["tags"] == [{"name": "stream:NOTES_EVENTS"}]
    assert [s["name"] for s in doc["x-jetstream-streams"]] == ["ACADEMIC_EVENTS", "NOTES_EVENTS"]
    assert doc["operations"]["send.academic.schedule.created"]["messages"] == [
        {"$ref": "#/channels/academic.schedule.created/messages/v1"},
        {"$ref": "#/channels/academic.schedule.created/messages/v2"},
    ]


def test_the_validator_would_catch_a_broken_document(
    asyncapi_validator: jsonschema_rs.Validator, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schemas", "asyncapi"]) == 0
    doc = json.loads(capsys.readouterr().out)
    doc["operations"]["send.notes.created"]["action"] = "shout"
    doc["channels"]["notes.created"]["messages"]["v1"]["payload"] = {"type": "objectx"}
    assert len(list(asyncapi_validator.iter_errors(doc))) >= 2
