"""The faults a chaos run injects: planned from a seed (pure), then carried out on the real stack.

A plan is one fault of each kind asked for, each at a random moment of a window and each with
a random outage length, all drawn from ``random.Random(seed)``: the same seed replays the same
run. Faults are carried out one after another (a fault due while another is under way waits
for it), so each outage is a single, nameable event in the logs.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from coordinator.contract.messages import ChargerControl
from coordinator.contract.topics import simulator_topic
from tools.broker import LocalMosquitto
from tools.launcher import ServiceProcesses

log = logging.getLogger(__name__)


class FaultKind(StrEnum):
    KILL_PLANNER = "kill -9 planner"
    KILL_GATEWAY = "kill -9 gateway-loopback"
    KILL_INGESTER = "kill -9 ingester"
    KILL_TRACKER = "kill -9 tracker"
    BROKER_RESTART = "broker graceful restart"
    BROKER_KILL = "broker kill -9 restart"
    DEVICE_SILENT = "device stops answering"
    KILL_OCPP_GATEWAY = "kill -9 gateway-ocpp"
    KILL_MODBUS_GATEWAY = "kill -9 gateway-modbus"
    CHARGER_HANGUP = "charger disconnects mid-call"
    KILL_CHARGERS = "kill -9 chargepoint-simulator (chargers reboot)"


KILLS = {
    FaultKind.KILL_PLANNER: "planner", FaultKind.KILL_GATEWAY: "gateway-loopback",
    FaultKind.KILL_INGESTER: "ingester", FaultKind.KILL_TRACKER: "tracker",
    FaultKind.KILL_OCPP_GATEWAY: "gateway-ocpp", FaultKind.KILL_MODBUS_GATEWAY: "gateway-modbus",
    FaultKind.KILL_CHARGERS: "chargepoint-simulator",
}
SHORT_FORM = (FaultKind.KILL_PLANNER, FaultKind.KILL_GATEWAY)
LOOPBACK_FAULTS = (FaultKind.KILL_PLANNER, FaultKind.KILL_GATEWAY, FaultKind.KILL_INGESTER, FaultKind.KILL_TRACKER,
                   FaultKind.BROKER_RESTART, FaultKind.BROKER_KILL, FaultKind.DEVICE_SILENT)
DEVICE_FAULTS = (FaultKind.KILL_OCPP_GATEWAY, FaultKind.KILL_MODBUS_GATEWAY, FaultKind.CHARGER_HANGUP,
                 FaultKind.KILL_CHARGERS)


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    at: float
    """Seconds after the first slot starts."""
    down_for: float
    """How long the part stays away (restart delay, silence, reconnect delay)."""
    targets: tuple[str, ...] = ()
    """Which assets, for device faults."""


def plan_faults(seed: int, kinds: tuple[FaultKind, ...], window: tuple[float, float],
                down: tuple[float, float] = (0.3, 2.5), *, silent_assets: list[str] | None = None,
                chargers: list[str] | None = None) -> list[Fault]:
    """One fault per kind in ``window`` (seconds after the first slot), in time order. Pure."""
    rng = random.Random(seed)
    faults = []
    for kind in kinds:
        targets: tuple[str, ...] = ()
        if kind is FaultKind.DEVICE_SILENT and silent_assets:
            targets = tuple(sorted(rng.sample(silent_assets, k=min(3, len(silent_assets)))))
        if kind is FaultKind.CHARGER_HANGUP and chargers:
            targets = tuple(sorted(rng.sample(chargers, k=min(2, len(chargers)))))
        faults.append(Fault(kind, round(rng.uniform(*window), 2), round(rng.uniform(*down), 2), targets))
    return sorted(faults, key=lambda f: f.at)


class FaultInjector:
    """Carries out faults on the running stack. ``service_args`` are what each process was
    started with (a restart is the same command line)."""

    def __init__(self, stack: ServiceProcesses, broker: LocalMosquitto, service_args: dict[str, tuple[str, ...]],
                 publish: Callable[[str, bytes], None]) -> None:
        self.stack, self.broker, self.args, self.publish = stack, broker, service_args, publish
        self.done: list[tuple[float, Fault]] = []

    def run(self, plan: list[Fault], t0: float, until: float) -> None:
        """Carry out ``plan`` relative to ``t0`` (time.monotonic() of the first slot); stop at ``until``."""
        for fault in plan:
            delay = t0 + fault.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the moment is the point of the fault, not a synchronisation
            if time.monotonic() > until:
                log.warning("fault %s not injected: the run is over", fault.kind)
                continue
            log.info("injecting %s for %.2f s %s", fault.kind, fault.down_for, fault.targets or "")
            self.inject(fault)
            self.done.append((time.monotonic() - t0, fault))

    def inject(self, fault: Fault) -> None:
        kind = fault.kind
        if kind in KILLS:
            name = KILLS[kind]
            self.stack.kill(name, signal.SIGKILL)
            time.sleep(fault.down_for)
            self.stack.start(name, *self.args.get(name, ()))
        elif kind in (FaultKind.BROKER_RESTART, FaultKind.BROKER_KILL):
            if kind is FaultKind.BROKER_KILL:
                self.broker.kill()
            else:
                self.broker.stop()
            time.sleep(fault.down_for)
            self.broker.start()
        elif kind is FaultKind.DEVICE_SILENT:
            self._silence(fault)
        elif kind is FaultKind.CHARGER_HANGUP:
            for charge_point_id in fault.targets:
                control = ChargerControl(charge_point_id=charge_point_id, action="hangup", value=fault.down_for)
                self.publish(simulator_topic("ocpp"), control.encode())

    def _silence(self, fault: Fault) -> None:
        """Some loopback devices stop answering, then answer again.

        What exists on main: the loopback gateway's ``--silent ASSET`` (never answer that asset),
        which is a start-up flag; so the gateway is restarted gracefully with it, and again
        without it once the silence is over.
        """
        name = "gateway-loopback"
        base = self.args.get(name, ())
        self.stack.kill(name, signal.SIGTERM)
        self.stack.start(name, *base, *(arg for a in fault.targets for arg in ("--silent", a)))
        time.sleep(fault.down_for * 2)
        self.stack.kill(name, signal.SIGTERM)
        self.stack.start(name, *base)
