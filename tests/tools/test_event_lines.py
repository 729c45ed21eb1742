"""One readable line per event, as `qubit events` and the demo print them."""

from datetime import datetime, timezone

from coordinator.events import Event, EventType
from tools.event_lines import describe, to_json

AT = datetime(2026, 1, 1, 8, 30, 5, tzinfo=timezone.utc)


def line(event_type, **payload):
    return describe(Event(event_type, payload, timestamp=AT))


def test_commands_show_type_parameters_and_reason():
    text = line(EventType.COMMAND_FAILED, asset_id="ast_bay_1", command_type="SET_CHARGE_RATE",
                parameters={"power_kw": 11.0}, error="charger answered Rejected")
    assert text == ("08:30:05  COMMAND_FAILED           ast_bay_1     SET_CHARGE_RATE(power_kw=11.0)"
                    "  reason: charger answered Rejected")


def test_service_states_emergency_stops_and_safe_states():
    assert line(EventType.SERVICE_STATE_CHANGED, service="gateway-ocpp", lifecycle="Active", operational="Running",
                health="Warning", reasons=["device link down: ast_bay_1"]) == (
        "08:30:05  SERVICE_STATE_CHANGED    gateway-ocpp  Active/Running/Warning  (device link down: ast_bay_1)")
    assert line(EventType.EMERGENCY_STOP_ACTIVATED, issued_by="op@depot", reason="fire alarm").endswith(
        "site          by op@depot: fire alarm")
    assert line(EventType.ASSET_SAFE_STATE, asset_id="ast_bay_2", safe=False, error="not connected").endswith(
        "ast_bay_2     NOT SAFE: not connected")
    assert line(EventType.ASSET_SAFE_STATE, asset_id="ast_bay_2", safe=True, detail="0 W").endswith("ast_bay_2     0 W")


def test_other_device_events_list_their_fields():
    assert line(EventType.DEVICE_LINK_UP, asset_id="ast_bay_1", endpoint="CP_BAY_1", reason="ocpp1.6").endswith(
        "ast_bay_1     endpoint=CP_BAY_1, reason=ocpp1.6")


def test_json_lines_carry_everything():
    assert '"timestamp": "2026-01-01T08:30:05+00:00"' in to_json(Event(EventType.DEVICE_LINK_UP, {"asset_id": "a"},
                                                                     timestamp=AT))
