"""Each process's own state (seed 004's module state machine) and how it is told to the site.

A process is Offline -> Initializing -> Active while it starts, Idle -> Ready -> Running
while it serves, and Healthy / Warning / Critical by what it can see of itself: the broker
link, its device links, its backlog. The site's emergency stop makes it Critical and Stopped
while its lifecycle stays Active (it is alive, keeping its assets safe, not exiting); only the
explicit reset brings it back to Running. Every change
is published, retained, on qubit/services/{service}/status and as a SERVICE_STATE_CHANGED
event. The rules are pure functions (``assess``, ``health_events``), tested without a
broker; ``Supervisor`` is the thin stateful part. See docs/service-state.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from coordinator.contract.events import ServiceStateChanged, ServiceStates
from coordinator.contract.messages import EmergencyStop, ServiceStatus
from coordinator.contract.topics import service_topic
from coordinator.events import EventBus, EventType
from coordinator.state import UnifiedStateMachine
from coordinator.state.state_events import EventType as StateEventType
from coordinator.state.state_events import StateEvent
from coordinator.state.state_types import HealthState, LifecycleState, OperationalState
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

BACKLOG_WARNING = 1_000
"""Messages waiting for the handlers: past this the process is falling behind."""
BACKLOG_CRITICAL = 10_000
"""Past this, commands are late by the time they are read."""
FIRST_LINK_GRACE_SECONDS = 60.0
"""After start, how long a device that has not connected yet is "awaited" (Warning), not down:
chargers boot and reconnect with backoff, and a gateway that has just started is not Critical."""

Publish = Callable[..., object]


@dataclass(frozen=True)
class Conditions:
    """What a process can see of itself."""

    broker_connected: bool = True
    links_down: frozenset[str] = frozenset()
    """Devices (asset ids) this gateway cannot reach."""
    links_total: int = 0
    links_awaited: frozenset[str] = frozenset()
    """Of ``links_down``, those never up since the process started, while the start's grace
    period lasts: waiting for their first connection, not lost."""
    backlog: int = 0
    metrics_failed: str | None = None
    """Why the metrics endpoint is not served, if it is not."""
    config_warnings: tuple[str, ...] = ()
    """What the process was configured to do that weakens the site (an OCPP gateway with
    require_auth = false): Warning for as long as it runs, so SCADA sees it, not only a log."""


def assess(conditions: Conditions) -> tuple[HealthState, tuple[str, ...]]:
    """The health a process should report, and why.

    Critical: every device link of a gateway is down (none of them still awaited after the
    start), or the backlog is past BACKLOG_CRITICAL.
    Warning: the broker is unreachable, some device link is down or awaited, the backlog is past
    BACKLOG_WARNING, the metrics endpoint could not start, or the process runs with a
    configuration that weakens the site (``config_warnings``).
    """
    critical: list[str] = []
    warning: list[str] = []
    if not conditions.broker_connected:
        warning.append("broker unreachable")
    awaited = conditions.links_down & conditions.links_awaited
    lost = conditions.links_down - awaited
    if awaited:
        warning.append(f"waiting for first connection: {', '.join(sorted(awaited))}")
    if lost:
        everything = not awaited and conditions.links_total > 0 and len(lost) >= conditions.links_total
        (critical if everything else warning).append(f"device link down: {', '.join(sorted(lost))}")
    if conditions.backlog >= BACKLOG_CRITICAL:
        critical.append(f"backlog of {conditions.backlog} messages")
    elif conditions.backlog >= BACKLOG_WARNING:
        warning.append(f"backlog of {conditions.backlog} messages")
    if conditions.metrics_failed:
        warning.append(f"metrics not served: {conditions.metrics_failed}")
    warning.extend(conditions.config_warnings)
    if critical:
        return HealthState.CRITICAL, tuple(critical + warning)
    if warning:
        return HealthState.WARNING, tuple(warning)
    return HealthState.HEALTHY, ()


def health_events(current: HealthState, target: HealthState, reasons: tuple[str, ...]) -> list[StateEvent]:
    """The seed's health events that move ``current`` to ``target`` (none when equal)."""
    if current is target:
        return []
    payload = {"reasons": list(reasons)}
    if target is HealthState.CRITICAL:
        return [StateEvent(event_type=StateEventType.FAULT, payload=payload)]
    if current is HealthState.CRITICAL:
        return [StateEvent(event_type=StateEventType.RECOVER, payload=payload | {"to": target.value})]
    word = StateEventType.WARN if target is HealthState.WARNING else StateEventType.CLEAR_WARNING
    return [StateEvent(event_type=word, payload=payload)]


# The reset after an emergency stop: Stopped -> Idle -> Ready -> Running, Critical -> Healthy,
# then health from what is seen. The lifecycle never left Active.
_RESET = (StateEventType.TASK_RESET, StateEventType.SET_READY, StateEventType.TASK_START, StateEventType.RESET)
_START = (StateEventType.START, StateEventType.INIT_SUCCESS, StateEventType.SET_READY, StateEventType.TASK_START)


class Supervisor:
    """One process's UnifiedStateMachine, fed by what happens to the process, told to the site.

    Used on the process's event loop, like everything it is told about (the broker link,
    device links, the backlog).
    """

    def __init__(self, service: str, publish: Publish, bus: EventBus,
                 on_change: Callable[[ServiceStatus], None] | None = None, *,
                 first_link_grace: float = FIRST_LINK_GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service, self.publish, self.bus, self.on_change = service, publish, bus, on_change
        self.clock = clock
        self._grace_ends = clock() + first_link_grace
        self._never_up: frozenset[str] | None = None  # device links not seen up since start
        self.machine = UnifiedStateMachine(module_name=service)
        self.conditions = Conditions()
        self.emergency: EmergencyStop | None = None
        self.metrics_port: int | None = None
        self._told: ServiceStatus | None = None

    # -- what the site sees --------------------------------------------------------

    def status(self, online: bool = True) -> ServiceStatus:
        states = self.machine.states
        health, reasons = states.health, assess(self.conditions)[1]
        if self.emergency is not None:
            reasons = (f"emergency stop: {self.emergency.reason}", *reasons)
        return ServiceStatus(
            service=self.service, status="online" if online else "offline", pid=os.getpid(),
            lifecycle=states.lifecycle.value, operational=states.operational.value, health=health.value,
            reasons=list(reasons), emergency_stop=self.emergency is not None, metrics_port=self.metrics_port,
            at=utcnow(),
        )

    def last_will(self) -> tuple[str, bytes]:
        """What the broker says for this process if it vanishes without a goodbye."""
        will = ServiceStatus(
            service=self.service, status="offline", pid=os.getpid(), lifecycle=LifecycleState.OFFLINE.value,
            operational=OperationalState.IDLE.value, health=HealthState.CRITICAL.value,
            reasons=["connection lost without a goodbye (Last Will)"], at=utcnow(),
        )
        return service_topic(self.service), will.encode()

    def farewell(self) -> tuple[str, bytes]:
        """The retained status a cleanly stopped process leaves behind."""
        return service_topic(self.service), self.status(online=False).encode()

    # -- what happens to the process -----------------------------------------------

    def started(self) -> None:
        """Connected and subscribed: Active, Running; health from what is seen."""
        self._apply(_START)

    def update(self, **changes: object) -> None:
        """Some of ``Conditions`` changed (broker_connected=False, links_down=..., backlog=...)."""
        conditions = dataclasses.replace(self.conditions, **changes)  # type: ignore[arg-type]
        # A link absent from the gateway's first report (made on attach), or gone from a later one, has been up.
        down = conditions.links_down
        if self._never_up is None:
            if down or conditions.links_total:
                self._never_up = down
        else:
            self._never_up &= down
        awaited = (self._never_up or frozenset()) if self.clock() < self._grace_ends else frozenset()
        conditions = dataclasses.replace(conditions, links_awaited=awaited)
        if conditions == self.conditions:
            return
        self.conditions = conditions
        self._apply(())

    def emergency_stop(self, order: EmergencyStop) -> bool:
        """Critical and Stopped at once, lifecycle untouched; False if the site was already stopped.

        Not the seed's EMERGENCY_STOP event, which also moves the lifecycle to ShuttingDown:
        on a site that reads as if every process were exiting, while they are alive, holding
        their assets safe and waiting for the reset. The seed's cross-layer PRIORITY_OVERRIDE
        moves the two layers that are true (docs/service-state.md)."""
        if self.emergency is not None:
            return False
        self.emergency = order
        self._apply((StateEvent(event_type=StateEventType.PRIORITY_OVERRIDE, payload={
            "health": HealthState.CRITICAL.value, "operational": OperationalState.STOPPED.value,
            "reason": f"emergency stop by {order.issued_by}: {order.reason}"}),))
        return True

    def emergency_reset(self) -> bool:
        """The explicit reset: back to Active, Running; False if there was no stop to reset."""
        if self.emergency is None:
            return False
        self.emergency = None
        self._apply(_RESET)
        return True

    def republish(self) -> None:
        """Publish the current status again: after a reconnect, once paho has re-sent what it
        queued during the outage, so the retained status is the newest."""
        status = self._told = self.status()
        self.publish(service_topic(self.service), status.encode(), qos=1, retain=True)

    def stopping(self) -> None:
        """SIGTERM: Running -> Stopped, Active -> ShuttingDown (while in-flight work finishes)."""
        steps = []
        if self.machine.get_operational_state() in (OperationalState.RUNNING, OperationalState.BACKGROUND_RUNNING):
            steps.append(StateEventType.TASK_STOP)
        if self.machine.get_lifecycle_state() is LifecycleState.ACTIVE:
            steps.append(StateEventType.SHUTDOWN)
        self._apply(tuple(steps))

    def stopped(self) -> None:
        """Shutdown finished: Offline (the farewell is published by the MQTT client)."""
        if self.machine.get_lifecycle_state() is LifecycleState.SHUTTING_DOWN:
            self.machine.handle_event(StateEventType.FINISHED)

    # -- internals -----------------------------------------------------------------

    def _apply(self, steps: tuple[StateEventType | StateEvent, ...]) -> None:
        before = self.machine.states
        for step in steps:
            self.machine.handle_event(step)
        if self.emergency is None:  # during a stop health stays Critical whatever is seen
            target, reasons = assess(self.conditions)
            for event in health_events(self.machine.get_health_state(), target, reasons):
                self.machine.handle_event(event)
        status = self.status()
        told = self._told
        if told is not None and (told.lifecycle, told.operational, told.health, told.reasons,
                                 told.emergency_stop) == (status.lifecycle, status.operational, status.health,
                                                          status.reasons, status.emergency_stop):
            return
        self._told = status
        if self.conditions.broker_connected:
            # Not while the broker is away: paho would queue it and send it again after
            # the newer status of the reconnect, leaving a stale retained one (see republish).
            self.publish(service_topic(self.service), status.encode(), qos=1, retain=True)
        self.bus.emit(EventType.SERVICE_STATE_CHANGED, ServiceStateChanged(
            service=self.service, lifecycle=status.lifecycle, operational=status.operational,
            health=status.health, reasons=status.reasons, emergency_stop=status.emergency_stop,
            previous=ServiceStates(lifecycle=before.lifecycle.value, operational=before.operational.value,
                                   health=before.health.value),
        ))
        if status.health != before.health.value:
            log.log(logging.INFO if status.health == HealthState.HEALTHY else logging.WARNING,
                    "%s health %s -> %s%s", self.service, before.health.value, status.health,
                    f" ({'; '.join(status.reasons)})" if status.reasons else "")
        if self.on_change is not None:
            self.on_change(status)
