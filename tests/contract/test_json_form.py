"""The JSON mirror's form of each mirrored message (services/json_mirror.py), without a broker."""

import json
from datetime import UTC, datetime

import pytest
from event_samples import SAMPLES

from coordinator.contract.codec import DecodeError, encode_event
from coordinator.contract.messages import AssetStateMessage, Telemetry
from coordinator.events import Event, EventType
from services.json_mirror import to_json

AT = datetime(2025, 1, 15, 8, 0, 0, 250, tzinfo=UTC)


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_keeps_its_field_names_with_rfc3339_times(event_type):
    event = Event(event_type, SAMPLES[event_type], AT, "evt_0123456789ab")
    out = to_json(f"qubit/events/{event_type.value}/site", encode_event(event), max_bytes=1 << 20)
    document = json.loads(out.payload)
    assert out.topic == f"qubit/json/events/{event_type.value}/site" and (out.qos, out.retain) == (1, False)
    assert document["timestamp"] == "2025-01-15T08:00:00.000250Z"
    sample = SAMPLES[event_type]
    assert document["payload"].keys() == sample.model_dump().keys()
    assert type(sample).model_validate_json(json.dumps(document["payload"])) == sample  # the same instants, in UTC
    assert all(v.endswith("Z") for v in _times(document["payload"]))


def _times(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _times(value)
    elif isinstance(node, str) and node[:4].isdigit() and "T" in node:
        yield node


def test_retained_trees_stay_retained_and_telemetry_stays_qos0():
    state = AssetStateMessage(asset_id="ast_1", kind="ev_charger", state="CHARGING", since=AT).encode()
    out = to_json("qubit/state/ast_1", state, max_bytes=1 << 20)
    assert (out.topic, out.retain) == ("qubit/json/state/ast_1", True)
    assert json.loads(out.payload)["since"] == "2025-01-15T08:00:00.000250Z"
    assert to_json("qubit/state/ast_1", b"", max_bytes=1 << 20).payload == b""  # a cleared retained message
    reading = Telemetry(asset_id="ast_1", at=AT, values={"soc_percent": 51.5}).encode()
    assert to_json("qubit/telemetry/modbus/ast_1", reading, max_bytes=1 << 20).qos == 0


def test_what_does_not_fit_its_model_is_a_decode_error():
    with pytest.raises(DecodeError):
        to_json("qubit/state/ast_1", b"\x81\xa1a\x01", max_bytes=1 << 20)
    with pytest.raises(DecodeError):
        to_json("qubit/events/STATE_CHANGED/ast_1", b"\xc1", max_bytes=1 << 20)
