"""Loopback gateway: a stand-in for real devices that answers every command at once.

For tests, the demo and the fault-injection suite. Each asset behaves like an obedient
device: chargers start with a vehicle plugged in (PREPARING), charge when given power and
suspend at 0 kW; batteries charge, discharge or idle as told. Every state change is reported
to the tracker. ``--fail ASSET`` makes an asset fail every command, ``--silent ASSET`` never
answer; on ``qubit/sim/{gateway}`` a StatusReport forces a device state and a
SimulatorRequest makes a device stop answering or answer again.

Like every gateway it keeps a durable record (runtime/gateway_record.py): a delivery seen
before is answered from it, never applied again, across restarts; an older setpoint than the
one in force is answered SUPERSEDED.

The device log (``--device-log PATH``) is what the simulated devices themselves saw: one JSON
line per application, written and flushed before the result is published, appended across
runs. On start the devices take their state and values in force from it again, as real
devices keep their setpoints while the gateway is away. This format is read by the
fault-injection suite as device-side evidence; it is stable::

    {"at": "2025-01-15T08:00:00.001+00:00",  # ISO 8601, when the device applied it
     "asset_id": "ast_bay_1",
     "command_id": "cmd_...",                # null: the device's own move (the emergency stop)
     "attempt": 1,                           # the delivery's attempt; null with command_id
     "command_type": "SET_CHARGE_RATE",      # "EMERGENCY_STOP" for the stop's 0 kW
     "power_kw": 7.0,                        # null for commands without a power
     "changed": true}                        # did the value in force (setpoints: the
                                             # command type and power of its channel;
                                             # others: the device state) change?

    qubit-loopback-gateway --gateway-id loopback --device-log data/loopback-devices.jsonl
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from coordinator.asset_machines import BatteryState, ChargerState
from coordinator.base import Command, CommandType
from coordinator.contract.codec import DecodeError
from coordinator.contract.events import AssetSafeState, RefusalReason
from coordinator.contract.messages import (
    CommandBatch,
    CommandResult,
    EmergencyStop,
    Outcome,
    SimulatorRequest,
    StatusReport,
    decode,
)
from coordinator.contract.topics import (
    commands_topic,
    results_topic,
    simulator_topic,
    status_topic,
)
from coordinator.events import EventBus, EventType
from coordinator.runtime.command_intake import CommandIntake, result
from coordinator.runtime.gateway_record import GatewayRecord, Progress, record_path
from coordinator.runtime.service import (
    Inbound,
    Publish,
    Service,
    base_arguments,
    forward_events,
    load_site,
    receives,
    run,
)
from coordinator.runtime.settings import settings
from coordinator.setpoint_order import channel_of
from coordinator.site import AssetKind, SiteConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

EMERGENCY_STOP_LINE = "EMERGENCY_STOP"
"""The command_type of a device log line for the site's emergency stop (0 kW, no command)."""

def next_state(kind: AssetKind, state: str, cmd: Command) -> str:
    """What an obedient device does with ``cmd``. Pure."""
    power = cmd.parameters.get("power_kw")
    if cmd.command_type is CommandType.RESET:  # a reset clears a fault; a healthy device restarts as it was
        if state in (ChargerState.FAULTED, BatteryState.FAULTED):
            return BatteryState.IDLE if kind is AssetKind.BATTERY else ChargerState.AVAILABLE
        return state
    if kind is AssetKind.BATTERY:
        if cmd.command_type in (CommandType.SET_CHARGE_RATE, CommandType.SET_DISCHARGE_RATE) and power == 0:
            return BatteryState.IDLE
        if cmd.command_type is CommandType.SET_CHARGE_RATE:
            return BatteryState.CHARGING
        if cmd.command_type is CommandType.SET_DISCHARGE_RATE:
            return BatteryState.DISCHARGING
        return state
    if cmd.command_type is CommandType.SET_CHARGE_RATE and state in (
        ChargerState.PREPARING, ChargerState.CHARGING, ChargerState.SUSPENDED
    ):
        return ChargerState.CHARGING if power else ChargerState.SUSPENDED
    if cmd.command_type is CommandType.START_CHARGING and state is ChargerState.PREPARING:
        return ChargerState.CHARGING
    if cmd.command_type is CommandType.STOP_CHARGING and state in (ChargerState.CHARGING, ChargerState.SUSPENDED):
        return ChargerState.FINISHING
    if cmd.command_type is CommandType.CHANGE_AVAILABILITY:
        if cmd.parameters.get("available") is False and state is not ChargerState.FAULTED:
            return ChargerState.UNAVAILABLE
        if cmd.parameters.get("available") is True and state is ChargerState.UNAVAILABLE:
            return ChargerState.AVAILABLE
    return state




def _recovers(state: str, cmd: Command) -> bool:
    """A faulted device takes a reset; an unavailable one takes a change of availability."""
    if state == ChargerState.UNAVAILABLE:
        return cmd.command_type is CommandType.CHANGE_AVAILABILITY
    return cmd.command_type is CommandType.RESET


class DeviceLog:
    """The simulated devices' own account of what they applied (format: the module docstring)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - open for the process's life
            self._file.seek(0)
            text = self._file.read()
            if text and not text.endswith("\n"):  # a line torn by a crash must not swallow the next one
                self._file.write("\n")
                self._file.flush()

    def lines(self) -> list[dict[str, Any]]:
        """Every line written so far, oldest first; a torn one (a crash mid-write) is skipped."""
        if self.path is None:
            return []
        found = []
        for number, text in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                log.error("device log %s line %d unreadable (torn by a crash?): skipped", self.path, number)
                continue
            found.append(line)
        return found

    def append(self, line: dict[str, Any]) -> None:
        """Written and flushed to the operating system before this returns."""
        if self._file is not None:
            self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def value_in_force(cmd: Command) -> float | None:
    """What a setpoint leaves in force on its channel: its power (a discharge negative)."""
    power = cmd.parameters.get("power_kw")
    if not isinstance(power, int | float) or isinstance(power, bool):
        return None
    return -float(power) if cmd.command_type is CommandType.SET_DISCHARGE_RATE else float(power)


class LoopbackGateway(Service):
    bus: EventBus
    tick_interval = 1.0
    PRUNE_EVERY = 3600.0
    """Seconds between two prunings of the record's finished deliveries."""

    def __init__(
        self,
        site: SiteConfig,
        publish: Publish,
        gateway_id: str = "loopback",
        fail: frozenset[str] = frozenset(),
        silent: frozenset[str] = frozenset(),
        device_log: Path | None = None,
        record: Path | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.publish = publish
        self.publishes = (results_topic(gateway_id), status_topic(gateway_id, "{asset}"))
        self.assets = {a.asset_id: a for a in site.assets_of(gateway_id)}
        if not self.assets:
            raise ValueError(f"no assets of gateway {gateway_id!r} in the site config")
        self.fail = fail
        self.silent: set[str] = set(silent)
        self.states: dict[str, str] = {
            a: ChargerState.PREPARING if c.kind is AssetKind.EV_CHARGER else BatteryState.IDLE
            for a, c in self.assets.items()
        }
        self.in_force: dict[tuple[str, str], float | None] = {}
        """(asset, channel) -> the value the simulated device holds (value_in_force)."""
        self.record = GatewayRecord(record or record_path(gateway_id))
        self.intake = CommandIntake(gateway_id, publish, self.record, self.assets.values(), self.refuse)
        self.device_log = DeviceLog(device_log)
        self.device_saw: set[tuple[str, int]] = set()
        """(command_id, attempt) of every application in the device log."""
        self._reported = False
        self._pruned_at: float | None = None
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.halted: str | None = None
        self._restore_devices()

    def subscriptions(self) -> list[Inbound]:
        return [Inbound(commands_topic(self.gateway_id), self.on_commands),
                Inbound(simulator_topic(self.gateway_id), self.on_simulate)]

    async def open(self) -> None:
        self.resume()

    async def close(self) -> None:
        self.device_log.close()
        self.record.close()

    def tick(self, now: datetime) -> None:
        if not self._reported:  # the devices say hello once the link is up
            self._reported = True
            for asset_id in self.assets:
                self._report(asset_id, now)
        stamp = now.timestamp()
        if self._pruned_at is None or stamp - self._pruned_at >= self.PRUNE_EVERY:
            self._pruned_at = stamp
            pruned = self.record.prune(settings().ledger_retention_days)
            if pruned:
                log.info("record: %d finished deliveries pruned", pruned)

    def _report(self, asset_id: str, at: datetime) -> None:
        report = StatusReport(asset_id=asset_id, state=self.states[asset_id], at=at)
        self.publish(status_topic(self.gateway_id, asset_id), report.encode(), qos=1)

    # -- the simulated devices' memory --------------------------------------------------

    def _restore_devices(self) -> None:
        """The devices' state and values in force as their own log leaves them."""
        for line in self.device_log.lines():
            asset = self.assets.get(line.get("asset_id", ""))
            if asset is None:
                continue
            if line.get("command_id") is not None:
                self.device_saw.add((line["command_id"], line["attempt"]))
            power = line.get("power_kw")
            if line.get("command_type") == EMERGENCY_STOP_LINE:
                cmd = Command(asset.asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": 0.0})
            else:
                cmd = Command(asset.asset_id, CommandType(line["command_type"]),
                              {} if power is None else {"power_kw": power})
            self._device_takes(cmd)
        if self.device_saw:
            log.info("devices restored from %s: %d applications", self.device_log.path, len(self.device_saw))

    def _device_takes(self, cmd: Command) -> bool:
        """The simulated device applies ``cmd``: did its value in force change?"""
        state = self.states[cmd.asset_id]
        new_state = next_state(self.assets[cmd.asset_id].kind, state, cmd)
        self.states[cmd.asset_id] = new_state
        channel = channel_of(cmd.command_type)
        if channel is None:
            return new_state != state
        before = self.in_force.get((cmd.asset_id, channel), 0.0)
        self.in_force[(cmd.asset_id, channel)] = value_in_force(cmd)
        return self.in_force[(cmd.asset_id, channel)] != before

    def _device_applies(self, cmd: Command | None, zero: Command, at: datetime) -> None:
        """Apply (``cmd``, or the stop's ``zero``), log it flushed, report a state change."""
        applied = cmd or zero
        state = self.states[applied.asset_id]
        changed = self._device_takes(applied)
        self.device_log.append({
            "at": at.isoformat(), "asset_id": applied.asset_id,
            "command_id": cmd.command_id if cmd else None, "attempt": cmd.attempts if cmd else None,
            "command_type": cmd.command_type.value if cmd else EMERGENCY_STOP_LINE,
            "power_kw": applied.parameters.get("power_kw"), "changed": changed,
        })
        if cmd is not None:
            self.device_saw.add((cmd.command_id, cmd.attempts))
        if self.states[applied.asset_id] != state:
            self._report(applied.asset_id, at)

    # -- commands ----------------------------------------------------------------------

    @receives(CommandBatch, "command batch")
    def on_commands(self, topic: str, batch: CommandBatch) -> None:
        # The devices of one batch are touched together, with one commit before and one after
        # (two per command cost 1.4 ms each). An asset's second command in the batch waits
        # for the group before it: its ordering check must see the first one in force.
        results: list[CommandResult] = []
        group: dict[str, Command] = {}
        for cmd in self.intake.accept(batch):
            if cmd.asset_id in group:
                results += self._apply_all(list(group.values()))
                group = {}
            answer = self._answer_instead(cmd)
            if answer is None:
                group[cmd.asset_id] = cmd
            else:
                results += answer
        results += self._apply_all(list(group.values()))
        self.intake.send(results)

    def resume(self) -> None:
        """After a restart: finish what the record shows unfinished, in arrival order. One left
        applying is found in the device log (applied: completed now) or applied now."""
        results: list[CommandResult] = []
        left = self.intake.resume()
        for delivery, cmd in left:
            if delivery.progress is Progress.APPLYING and (
                    delivery.applied or (cmd.command_id, cmd.attempts) in self.device_saw):
                if not delivery.applied:
                    self.intake.applied(cmd)
                results += [result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED),
                            result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED)]
            else:
                results += self._apply(cmd)
        if left:
            log.warning("record: %d deliveries left unfinished by the last run resumed", len(left))
        self.intake.send(results)

    def emergency_stop(self, order: EmergencyStop) -> None:
        """Every simulated device to 0 kW at once; commands refused until the reset."""
        self.halted = f"site emergency stop: {order.reason}"
        now = utcnow()
        for asset_id in self.assets:
            self._device_applies(None, Command(asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": 0.0}, now), now)
            self.bus.emit(EventType.ASSET_SAFE_STATE,
                          AssetSafeState(asset_id=asset_id, safe=True, detail="simulated: 0 kW"))

    def emergency_reset(self, order: EmergencyStop) -> None:
        self.halted = None  # nothing restored here: the planner sends the newest setpoint

    def _apply(self, cmd: Command) -> list[CommandResult]:
        answer = self._answer_instead(cmd)
        return self._apply_all([cmd]) if answer is None else answer

    def _answer_instead(self, cmd: Command) -> list[CommandResult] | None:
        """None when the device is to apply ``cmd``; else what to answer instead (maybe nothing)."""
        now = utcnow()
        if cmd.asset_id not in self.assets:
            refusal = f"{cmd.asset_id} is not on gateway {self.gateway_id}"
            return [result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, refusal, now)]
        if self.halted is not None:
            return [result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, self.halted, now)]
        if cmd.asset_id in self.silent:
            self.intake.settled(cmd)  # never applied: after a restart it is not resumed either
            return []
        if cmd.asset_id in self.fail:
            return [result(cmd.command_id, cmd.asset_id, Outcome.FAILED, "simulated device failure", now)]
        state = self.states[cmd.asset_id]
        held = state in (ChargerState.FAULTED, BatteryState.FAULTED, ChargerState.UNAVAILABLE)
        if held and not _recovers(state, cmd):
            return [result(cmd.command_id, cmd.asset_id, Outcome.FAILED, f"device is {state}", now)]
        superseded = self.intake.check(cmd)
        return None if superseded is None else [superseded]

    def _apply_all(self, cmds: list[Command]) -> list[CommandResult]:
        """The simulated devices apply ``cmds`` (one per asset), committed before and after."""
        if not cmds:
            return []
        now = utcnow()
        self.intake.applying_all(cmds)
        for cmd in cmds:
            self._device_applies(cmd, cmd, now)
        self.intake.applied_all(cmds)
        return [r for cmd in cmds for r in (result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED, at=now),
                                            result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED, at=now))]

    def on_simulate(self, topic: str, data: bytes) -> None:
        """A SimulatorRequest (stop answering, answer again) or a StatusReport (force a state)."""
        try:
            request: SimulatorRequest | StatusReport = decode(SimulatorRequest, data)
        except DecodeError:
            try:
                request = decode(StatusReport, data)
            except DecodeError as exc:
                self.refuse(topic, RefusalReason.UNREADABLE, f"simulator request: {exc.reason}")
                return
        if request.asset_id not in self.assets:
            self.refuse(topic, RefusalReason.NOT_YOURS, f"simulator request for {request.asset_id}: not this gateway's",
                        asset_id=request.asset_id)
            return
        if isinstance(request, SimulatorRequest):
            (self.silent.add if request.silent else self.silent.discard)(request.asset_id)
            log.warning("simulated %s %s", request.asset_id, "silent" if request.silent else "answering again")
            return
        self.states[request.asset_id] = request.state
        self._report(request.asset_id, utcnow())


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments(__doc__.splitlines()[0])
    parser.add_argument("--gateway-id", default="loopback")
    parser.add_argument("--fail", action="append", default=[], metavar="ASSET", help="fail every command for ASSET")
    parser.add_argument("--silent", action="append", default=[], metavar="ASSET", help="never answer ASSET's commands")
    parser.add_argument("--device-log", type=Path, metavar="PATH",
                        help="the simulated devices' log of what they applied (JSON lines; read back on start)")
    args = parser.parse_args(argv)

    def build(site: SiteConfig, publish: Publish) -> LoopbackGateway:
        return LoopbackGateway(site, publish, args.gateway_id, frozenset(args.fail), frozenset(args.silent),
                               device_log=args.device_log)

    return run(f"gateway-{args.gateway_id}", build, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
