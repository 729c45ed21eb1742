"""docs/contract/ is generated from the models and must match them."""

from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from event_samples import SAMPLES

from coordinator.contract import schema, topics
from coordinator.contract.codec import MAX_SCHEDULE_BYTES, ScheduleFormat, encode_schedule, unpack
from coordinator.contract.events import PAYLOAD_MODELS
from coordinator.events import EventType

CONTRACT_DIR = Path(__file__).resolve().parents[2] / "docs" / "contract"
GENERATED = schema.files()


@pytest.mark.parametrize("relative", sorted(GENERATED))
def test_committed_files_match_the_code(relative):
    path = CONTRACT_DIR / relative
    assert path.exists(), f"docs/contract/{relative} is missing: run make contract"
    assert path.read_text(encoding="utf-8") == GENERATED[relative], (
        f"docs/contract/{relative} no longer matches the models: run make contract")


def test_no_stale_files_are_committed():
    committed = {p.relative_to(CONTRACT_DIR).as_posix() for p in CONTRACT_DIR.rglob("*.json")}
    assert committed - set(GENERATED) == set(), "files the models no longer make: run make contract"


def test_every_event_type_has_a_payload_schema():
    assert {f"events/{t.value}.json" for t in EventType} <= set(schema.json_schemas())


@pytest.mark.parametrize("event_type", list(EventType))
def test_what_emitters_build_fits_the_published_schema(event_type):
    document = schema.json_schemas()[f"events/{event_type.value}.json"]
    jsonschema.Draft202012Validator(document).validate(SAMPLES[event_type].model_dump(mode="json"))


def test_the_published_schema_refuses_what_the_model_refuses():
    document = schema.json_schemas()["events/STATE_CHANGED.json"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(document).validate(dict(SAMPLES[EventType.STATE_CHANGED]) | {"x": 1})


def test_the_schedule_format_describes_what_encode_schedule_writes():
    index = pd.date_range("2025-01-15 08:00", periods=3, freq="15min", tz="Asia/Kolkata")
    df = pd.DataFrame({"ev_1_kw": [22.0, np.nan, 7.5], "battery_charge_kw": [0, 5, 10]}, index=index)
    data = encode_schedule(df, asset_map={"ev_1": "ast_1"}, site_id="sit_1", schedule_id="sch_1")
    message = ScheduleFormat.model_validate(unpack(data, max_bytes=MAX_SCHEDULE_BYTES))
    assert message.columns["ev_1_kw"] == [22.0, None, 7.5]
    assert message.index[0] == index[0]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document, ref):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_reference_of_the_asyncapi_document_resolves():
    document = schema.asyncapi()
    refs = set(_refs(document))
    assert refs and all(ref.startswith("#/") for ref in refs)
    for ref in refs:
        _resolve(document, ref)


def test_every_channel_names_known_messages_and_matches_its_topic_function():
    document = schema.asyncapi()
    known = set(schema.MESSAGE_MODELS) | {"event"}
    for channel in topics.CHANNELS:
        assert set(channel.messages) <= known, channel.name
        assert channel.qos in (0, 1, 2) and channel.publishers and channel.subscribers
        assert document["channels"][channel.name]["address"] == channel.address
    addresses = {c.name: c.address for c in topics.CHANNELS}
    built = {
        "commands": topics.commands_topic("{gateway_id}"),
        "results": topics.results_topic("{gateway_id}"),
        "status": topics.status_topic("{gateway_id}", "{asset_id}"),
        "telemetry": topics.telemetry_topic("{gateway_id}", "{asset_id}"),
        "assetState": topics.asset_state_topic("{asset_id}"),
        "events": topics.event_topic("{event_type}", "{asset_id_or_site}"),
        "serviceStatus": topics.service_topic("{service}"),
        "queryReplies": topics.query_reply_topic("{client_id}"),
        "simulator": topics.simulator_topic("{gateway_id}"),
        "schedulesIn": topics.SCHEDULES_IN,
        "schedulesAccepted": topics.SCHEDULES_ACCEPTED,
        "emergencyStop": topics.EMERGENCY_STOP,
        "queryRequests": topics.QUERY_REQUESTS,
        "operatorCommands": topics.OPERATOR_COMMANDS,
    }
    built |= {f"json{name[0].upper()}{name[1:]}": topics.json_topic(built[name])
              for name in ("events", "assetState", "serviceStatus", "telemetry")}
    assert built == addresses


def test_retained_and_qos_bindings_follow_the_table():
    operations = schema.asyncapi()["operations"]
    assert operations["assetState.send.tracker"]["bindings"]["mqtt"] == {"qos": 1, "retain": True}
    assert operations["telemetry.send.gateway"]["bindings"]["mqtt"] == {"qos": 0, "retain": False}
    events = schema.asyncapi()["channels"]["events"]["messages"]
    assert set(events) == {t.value for t in EventType} == {t.value for t in PAYLOAD_MODELS}


def test_make_contract_writes_and_then_finds_nothing_to_do(tmp_path):
    root = tmp_path / "docs" / "contract"
    root.mkdir(parents=True)
    page = tmp_path / "docs" / "wire-contract.md"
    page.write_text(f"# Wire\n\n{schema.EVENTS_BEGIN}\n{schema.EVENTS_END}\n", encoding="utf-8")
    assert schema.main([str(root)]) == 0
    assert "**STATE_CHANGED**" in page.read_text(encoding="utf-8")
    assert schema.write(root, GENERATED) == []
    (root / "schemas" / "Gone.json").write_text("{}")
    assert schema.write(root, GENERATED) == [root / "schemas" / "Gone.json"]


def test_the_events_of_wire_contract_md_match_the_models():
    page = (CONTRACT_DIR / schema.WIRE_CONTRACT).read_text(encoding="utf-8")
    assert schema.with_events_section(page) == page, "docs/wire-contract.md lists other events: run make contract"
    for event_type, model in PAYLOAD_MODELS.items():
        assert f"**{event_type.value}**" in page
        assert all(f"`{name}`" in page for name in model.model_fields)


def test_a_page_without_the_events_section_is_an_error():
    with pytest.raises(ValueError, match="no '<!-- events"):
        schema.with_events_section("# no markers here\n")


def test_every_message_and_event_has_an_example():
    examples = schema.examples()
    assert {f"{name}.json" for name in schema.MESSAGE_MODELS if name != "EventEnvelope"} <= set(examples)
    assert {f"events/{t.value}.json" for t in EventType} <= set(examples)


@pytest.mark.parametrize("relative", sorted(schema.examples()))
def test_every_example_fits_its_published_schema(relative):
    schemas = schema.json_schemas()
    document = schema.examples()[relative]
    if relative.startswith("events/"):
        jsonschema.Draft202012Validator(schemas["EventEnvelope.json"]).validate(document)
        jsonschema.Draft202012Validator(schemas[relative]).validate(document["payload"])
    else:
        jsonschema.Draft202012Validator(schemas[relative]).validate(document)


def test_examples_show_timestamps_in_utc_rfc3339():
    received = schema.examples()["events/SCHEDULE_RECEIVED.json"]
    assert received["timestamp"] == "2025-01-15T08:00:00.000250Z"
    assert received["payload"]["ends_at"] == "2025-01-16T08:00:00.000250Z"  # the END of the last of 96 slots
