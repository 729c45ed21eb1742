"""What the site page shows, kept from what the bus says: pure, no I/O, tested without a broker.

``SiteView`` is fed decoded messages (asset states, telemetry, service statuses, events) and
answers ``snapshot()``: one JSON-ready dict the browser draws the whole page from. Everything
in it is bounded, whatever the bus sends: assets are the site config's (a message about any
other asset is ignored), services are capped, commands and plot points are rings. Strings
from the bus are passed on as data; the browser puts them in the page as text, never as markup.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordinator.contract.events import (
    CommandPayload,
    EmergencyStopActivated,
    EmergencyStopReset,
    ScheduleReceived,
    SetpointClamped,
)
from coordinator.contract.messages import AssetStateMessage, ServiceStatus, Telemetry
from coordinator.events import Event, EventType
from coordinator.runtime.metrics import POWER_KEYS, SOC_KEYS, reading, setpoint_kw
from coordinator.site import SiteConfig

MAX_COMMANDS = 40
"""Recent commands listed (the newest first)."""
MAX_SERVICES = 64
"""Service statuses kept: a site runs a handful; a flood of forged names must not grow the page."""
MAX_POINTS = 600
"""Plot points kept per asset and series (10 minutes of one reading a second)."""
MAX_LIFECYCLE = 12
"""Lifecycle steps kept per command (created, dispatched, acknowledged, completed, retries...)."""

def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass
class AssetView:
    asset_id: str
    kind: str
    max_power_kw: float
    state: str | None = None
    since: datetime | None = None
    setpoint_kw: float | None = None
    """The power rate of the last completed command (what the device was last told and confirmed;
    runtime/metrics.py setpoint_kw: charging positive, discharging negative)."""
    power_kw: float | None = None
    soc_percent: float | None = None
    measured_at: datetime | None = None
    planned: deque[tuple[datetime, float]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    applied: deque[tuple[datetime, float]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))
    measured: deque[tuple[datetime, float]] = field(default_factory=lambda: deque(maxlen=MAX_POINTS))


@dataclass
class CommandView:
    command_id: str
    asset_id: str
    command_type: str
    power_kw: float | None
    scheduled_at: datetime
    schedule_id: str | None
    status: str = "PENDING"
    error: str | None = None
    steps: list[tuple[str, datetime]] = field(default_factory=list)


class SiteView:
    """The site as the page shows it. Feed it with the ``on_*`` methods; read ``snapshot()``.
    ``version`` grows on every change, so the server pushes only when there is news."""

    def __init__(self, site: SiteConfig) -> None:
        self.site_id = site.site_id
        self.assets = {a.asset_id: AssetView(a.asset_id, a.kind.value, a.max_power_kw) for a in site.assets}
        self.services: OrderedDict[str, ServiceStatus] = OrderedDict()
        self.commands: OrderedDict[str, CommandView] = OrderedDict()
        self.schedule: ScheduleReceived | None = None
        self.emergency: dict[str, Any] | None = None
        self.ignored = 0
        """Messages about assets that are not the site's (forged, or another site's): counted, not shown."""
        self.version = 0

    # -- inputs ------------------------------------------------------------------------

    def on_asset_state(self, msg: AssetStateMessage) -> None:
        asset = self._asset(msg.asset_id)
        if asset is not None:
            asset.state, asset.since = msg.state, msg.since
            self.version += 1

    def on_telemetry(self, msg: Telemetry) -> None:
        asset = self._asset(msg.asset_id)
        if asset is None:
            return
        power, soc = reading(msg.values, POWER_KEYS), reading(msg.values, SOC_KEYS)
        if power is not None:
            asset.power_kw = power
            asset.measured.append((msg.at, power))
        if soc is not None:
            asset.soc_percent = soc
        asset.measured_at = msg.at
        self.version += 1

    def on_service(self, status: ServiceStatus) -> None:
        if status.service not in self.services and len(self.services) >= MAX_SERVICES:
            self.ignored += 1
            return
        self.services[status.service] = status
        self.version += 1

    def on_event(self, event: Event) -> None:
        p = event.payload
        if isinstance(p, CommandPayload):
            self._on_command(event.event_type, p, event.timestamp)
        elif isinstance(p, SetpointClamped):
            asset = self._asset(p.asset_id)
            applied = setpoint_kw(p.command_type.value, {"power_kw": p.applied})
            if asset is not None and applied is not None:  # the device got the capped value: that was applied
                asset.applied.append((event.timestamp, applied))
        elif isinstance(p, ScheduleReceived) and p.schedule_id is not None:
            self.schedule = p
        elif isinstance(p, EmergencyStopActivated):
            self.emergency = {"active": True, "reason": p.reason, "issued_by": p.issued_by, "at": _iso(p.ordered_at)}
        elif isinstance(p, EmergencyStopReset):
            self.emergency = {"active": False, "reason": p.reason, "issued_by": p.issued_by, "at": _iso(p.ordered_at)}
        else:
            return
        self.version += 1

    def _on_command(self, kind: EventType, p: CommandPayload, at: datetime) -> None:
        asset = self._asset(p.asset_id)
        if asset is None:
            return
        power = setpoint_kw(p.command_type.value, p.parameters)
        seen = self.commands.get(p.command_id)
        if seen is None:
            if kind is not EventType.COMMAND_CREATED and power is not None and p.schedule_id is not None:
                asset.planned.append((p.scheduled_at, power))  # first sight of a scheduled setpoint
            seen = self.commands[p.command_id] = CommandView(
                p.command_id, p.asset_id, p.command_type.value, power, p.scheduled_at, p.schedule_id)
            while len(self.commands) > MAX_COMMANDS:
                self.commands.popitem(last=False)
        seen.status, seen.error = p.status.value, p.error
        if len(seen.steps) < MAX_LIFECYCLE:
            seen.steps.append((kind.value.removeprefix("COMMAND_"), at))
        if kind is EventType.COMMAND_COMPLETED and power is not None:
            asset.setpoint_kw = power
            asset.applied.append((at, power))

    def _asset(self, asset_id: str) -> AssetView | None:
        found = self.assets.get(asset_id)
        if found is None:
            self.ignored += 1
        return found

    # -- output ------------------------------------------------------------------------

    def emergency_stop(self) -> dict[str, Any]:
        """Active when the last order said so, or any online service says it is stopped
        (their retained statuses: a page started during a stop sees it at once)."""
        said = [s.service for s in self.services.values() if s.status == "online" and s.emergency_stop]
        order = self.emergency or {"active": False, "reason": None, "issued_by": None, "at": None}
        return {**order, "active": bool(order["active"] or said), "services": said}

    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws, JSON-ready (times as ISO 8601 strings)."""
        schedule = self.schedule
        return {
            "site_id": self.site_id,
            "version": self.version,
            "emergency_stop": self.emergency_stop(),
            "assets": [{
                "asset_id": a.asset_id, "kind": a.kind, "max_power_kw": a.max_power_kw,
                "state": a.state, "since": _iso(a.since), "setpoint_kw": a.setpoint_kw,
                "power_kw": a.power_kw, "soc_percent": a.soc_percent, "measured_at": _iso(a.measured_at),
                "planned": [[_iso(t), v] for t, v in a.planned],
                "applied": [[_iso(t), v] for t, v in a.applied],
                "measured": [[_iso(t), v] for t, v in a.measured],
            } for a in self.assets.values()],
            "schedule": None if schedule is None else {
                "schedule_id": schedule.schedule_id, "starts_at": _iso(schedule.starts_at),
                "ends_at": _iso(schedule.ends_at), "slot_count": schedule.slot_count,
                "command_count": schedule.command_count,
            },
            "commands": [{
                "command_id": c.command_id, "asset_id": c.asset_id, "command_type": c.command_type,
                "power_kw": c.power_kw, "scheduled_at": _iso(c.scheduled_at), "status": c.status,
                "error": c.error, "steps": [[step, _iso(t)] for step, t in c.steps],
            } for c in reversed(self.commands.values())],
            "services": [{
                "service": s.service, "status": s.status, "lifecycle": s.lifecycle, "operational": s.operational,
                "health": s.health, "reasons": s.reasons, "emergency_stop": s.emergency_stop, "at": _iso(s.at),
            } for s in self.services.values()],
            "ignored": self.ignored,
        }
