"""Loopback gateway: a stand-in for real devices that answers every command at once.

For tests and the demo until the OCPP and Modbus gateways exist. Each asset behaves like
an obedient device: chargers start with a vehicle plugged in (PREPARING), charge when
given power and suspend at 0 kW; batteries charge, discharge or idle as told. Every state
change is reported to the tracker. ``--fail ASSET`` makes an asset fail every command,
``--silent ASSET`` never answer; ``qubit/sim/{gateway}`` forces a device state.

    qubit-loopback-gateway --gateway-id loopback
"""

from __future__ import annotations

import logging
from datetime import datetime

from coordinator.asset_machines import BatteryState, ChargerState
from coordinator.base import Command, CommandType
from coordinator.contract.events import AssetSafeState
from coordinator.contract.messages import (
    CommandBatch,
    CommandResult,
    EmergencyStop,
    Outcome,
    StatusReport,
)
from coordinator.contract.topics import (
    commands_topic,
    results_topic,
    simulator_topic,
    status_topic,
)
from coordinator.events import EventBus, EventType
from coordinator.runtime.command_intake import CommandIntake, result
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
from coordinator.site import AssetKind, SiteConfig
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

def next_state(kind: AssetKind, state: str, cmd: Command) -> str:
    """What an obedient device does with ``cmd``. Pure."""
    power = cmd.parameters.get("power_kw")
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
    return state


class LoopbackGateway(Service):
    bus: EventBus
    tick_interval = 1.0

    def __init__(
        self,
        site: SiteConfig,
        publish: Publish,
        gateway_id: str = "loopback",
        fail: frozenset[str] = frozenset(),
        silent: frozenset[str] = frozenset(),
    ) -> None:
        self.gateway_id = gateway_id
        self.publish = publish
        self.publishes = (results_topic(gateway_id), status_topic(gateway_id, "{asset}"))
        self.assets = {a.asset_id: a for a in site.assets_of(gateway_id)}
        if not self.assets:
            raise ValueError(f"no assets of gateway {gateway_id!r} in the site config")
        self.fail, self.silent = fail, silent
        self.states: dict[str, str] = {
            a: ChargerState.PREPARING if c.kind is AssetKind.EV_CHARGER else BatteryState.IDLE
            for a, c in self.assets.items()
        }
        self.applied: dict[str, Command] = {}
        self.intake = CommandIntake(gateway_id, publish)
        self._reported = False
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.halted: str | None = None

    def subscriptions(self) -> list[Inbound]:
        return [Inbound(commands_topic(self.gateway_id), self.on_commands),
                Inbound(simulator_topic(self.gateway_id), self.on_simulate)]

    def tick(self, now: datetime) -> None:
        if not self._reported:  # the devices say hello once the link is up
            self._reported = True
            for asset_id in self.assets:
                self._report(asset_id, now)

    def _report(self, asset_id: str, at: datetime) -> None:
        report = StatusReport(asset_id=asset_id, state=self.states[asset_id], at=at)
        self.publish(status_topic(self.gateway_id, asset_id), report.encode(), qos=1)

    @receives(CommandBatch, "command batch")
    def on_commands(self, topic: str, batch: CommandBatch) -> None:
        results: list[CommandResult] = []
        for cmd in self.intake.accept(batch):
            results += self._apply(cmd)
        self.intake.send(results)

    def emergency_stop(self, order: EmergencyStop) -> None:
        """Every simulated device to 0 kW at once; commands refused until the reset."""
        self.halted = f"site emergency stop: {order.reason}"
        now = utcnow()
        for asset_id, asset in self.assets.items():
            zero = Command(asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": 0.0}, now)
            state = next_state(asset.kind, self.states[asset_id], zero)
            if state != self.states[asset_id]:
                self.states[asset_id] = state
                self._report(asset_id, now)
            self.bus.emit(EventType.ASSET_SAFE_STATE,
                          AssetSafeState(asset_id=asset_id, safe=True, detail="simulated: 0 kW"))

    def emergency_reset(self, order: EmergencyStop) -> None:
        self.halted = None

    def _apply(self, cmd: Command) -> list[CommandResult]:
        now = utcnow()
        if cmd.asset_id not in self.assets:
            refusal = f"{cmd.asset_id} is not on gateway {self.gateway_id}"
            return [result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, refusal, now)]
        if self.halted is not None:
            return [result(cmd.command_id, cmd.asset_id, Outcome.REFUSED, self.halted, now)]
        if cmd.asset_id in self.silent:
            return []
        if cmd.asset_id in self.fail:
            return [result(cmd.command_id, cmd.asset_id, Outcome.FAILED, "simulated device failure", now)]
        state = self.states[cmd.asset_id]
        if state in (ChargerState.FAULTED, BatteryState.FAULTED, ChargerState.UNAVAILABLE):
            return [result(cmd.command_id, cmd.asset_id, Outcome.FAILED, f"device is {state}", now)]
        self.applied[cmd.asset_id] = cmd
        new_state = next_state(self.assets[cmd.asset_id].kind, state, cmd)
        if new_state != state:
            self.states[cmd.asset_id] = new_state
            self._report(cmd.asset_id, now)
        return [result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED, at=now),
                result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED, at=now)]

    @receives(StatusReport, "simulator request")
    def on_simulate(self, topic: str, report: StatusReport) -> None:
        if report.asset_id not in self.assets:
            log.error("simulator request for %s, not on this gateway", report.asset_id)
            return
        self.states[report.asset_id] = report.state
        self._report(report.asset_id, utcnow())


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments(__doc__.splitlines()[0])
    parser.add_argument("--gateway-id", default="loopback")
    parser.add_argument("--fail", action="append", default=[], metavar="ASSET", help="fail every command for ASSET")
    parser.add_argument("--silent", action="append", default=[], metavar="ASSET", help="never answer ASSET's commands")
    args = parser.parse_args(argv)

    def build(site: SiteConfig, publish: Publish) -> LoopbackGateway:
        return LoopbackGateway(site, publish, args.gateway_id, frozenset(args.fail), frozenset(args.silent))

    return run(f"gateway-{args.gateway_id}", build, load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
