"""The site page's view (services/site_page/view.py): pure, fed decoded messages, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract import events as ev
from coordinator.contract.messages import AssetStateMessage, ServiceStatus, Telemetry
from coordinator.events import Event, EventType
from coordinator.site import SiteConfig
from services.site_page.view import MAX_COMMANDS, MAX_SERVICES, SiteView

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
SITE = SiteConfig.model_validate({
    "site_id": "sit_view", "gateways": [{"gateway_id": "lb", "protocol": "loopback"}],
    "assets": [{"asset_id": "ast_bay_1", "kind": "ev_charger", "gateway_id": "lb", "max_power_kw": 22.0},
               {"asset_id": "ast_batt", "kind": "battery", "gateway_id": "lb", "max_power_kw": 50.0}]})


def command_event(kind, command_id, asset_id="ast_batt", command_type=CommandType.SET_DISCHARGE_RATE, kw=25.0,
                  status=CommandStatus.DISPATCHED, at=T0):
    cmd = Command(asset_id, command_type, {"power_kw": kw}, scheduled_at=T0, command_id=command_id, status=status,
                  attempts=1, dispatched_at=T0, schedule_id="sch_1")
    if kind is EventType.COMMAND_DISPATCHED:
        return Event(kind, ev.CommandDispatched.of(cmd, protocol="loopback", gateway_id="lb"), at)
    return Event(kind, ev.CommandCompleted.of(cmd), at)


def status(service, *, estop=False, state="online"):
    return ServiceStatus(service=service, status=state, pid=1, lifecycle="Active", operational="Running",
                         health="Healthy", emergency_stop=estop, at=T0)


def test_every_site_asset_is_listed_and_other_assets_are_ignored():
    view = SiteView(SITE)
    view.on_asset_state(AssetStateMessage(asset_id="ast_batt", kind="battery", state="CHARGING", since=T0))
    view.on_asset_state(AssetStateMessage(asset_id="<img src=x>ast_forged", kind="battery", state="X", since=T0))
    view.on_telemetry(Telemetry(asset_id="ast_batt", at=T0, values={"active_power_kw": -20.0, "soc_percent": 55}))
    snap = view.snapshot()
    assert [a["asset_id"] for a in snap["assets"]] == ["ast_bay_1", "ast_batt"]
    batt = snap["assets"][1]
    assert (batt["state"], batt["power_kw"], batt["soc_percent"]) == ("CHARGING", -20.0, 55.0)
    assert snap["ignored"] == 1


def test_a_command_has_its_lifecycle_and_sets_the_plot_and_the_setpoint_once_completed():
    view = SiteView(SITE)
    view.on_event(command_event(EventType.COMMAND_DISPATCHED, "cmd_1"))
    assert view.snapshot()["assets"][1]["setpoint_kw"] is None
    view.on_event(command_event(EventType.COMMAND_COMPLETED, "cmd_1", status=CommandStatus.COMPLETED,
                                at=T0 + timedelta(seconds=1)))
    snap = view.snapshot()
    (cmd,) = snap["commands"]
    assert cmd["status"] == "COMPLETED" and [s for s, _ in cmd["steps"]] == ["DISPATCHED", "COMPLETED"]
    batt = snap["assets"][1]
    assert batt["setpoint_kw"] == -25.0  # discharging: out of the asset
    assert batt["planned"] == [[T0.isoformat(), -25.0]] and len(batt["applied"]) == 1


def test_recent_commands_and_services_are_bounded_and_the_emergency_stop_comes_from_statuses():
    view = SiteView(SITE)
    for i in range(MAX_COMMANDS + 5):
        view.on_event(command_event(EventType.COMMAND_DISPATCHED, f"cmd_{i}"))
    assert len(view.snapshot()["commands"]) == MAX_COMMANDS
    assert view.snapshot()["commands"][0]["command_id"] == f"cmd_{MAX_COMMANDS + 4}"  # newest first
    for i in range(MAX_SERVICES + 5):
        view.on_service(status(f"svc_{i}"))
    assert len(view.snapshot()["services"]) == MAX_SERVICES
    assert view.snapshot()["emergency_stop"]["active"] is False
    view.on_service(status("svc_0", estop=True))
    assert view.snapshot()["emergency_stop"] == {"active": True, "reason": None, "issued_by": None, "at": None,
                                                 "services": ["svc_0"]}
    view.on_service(status("svc_0", estop=True, state="offline"))  # a dead process's last word is not the site's
    assert view.snapshot()["emergency_stop"]["active"] is False
