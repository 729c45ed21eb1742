"""Prometheus metrics of one process, fed by its event bus and served over HTTP.

    >>> from coordinator.contract.events import DeviceLinkUp
    >>> from coordinator.events import EventBus, EventType
    >>> metrics = ServiceMetrics("planner")
    >>> bus = EventBus()
    >>> _ = metrics.observe_bus(bus)
    >>> _ = bus.emit(EventType.DEVICE_LINK_UP, DeviceLinkUp(asset_id="ast_1", endpoint="10.0.0.5:502", reason=""))
    >>> b'qubit_device_link_up{asset_id="ast_1",service="planner"} 1.0' in metrics.render()
    True

Every metric carries a ``service`` label (the process's name) rather than relying on the
scrape job's labels: a single Prometheus job can then scrape every process of a site and
the series still say where they came from. docs/observability.md lists the metrics.

Each instance has its own ``CollectorRegistry``: nothing lands in prometheus_client's
global registry, so tests (and a process hosting several services) can hold several.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from enum import StrEnum
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.base import CommandStatus, CommandType
from coordinator.contract.events import (
    CommandAcknowledged,
    CommandCompleted,
    CommandDispatched,
    CommandPayload,
    DeviceLink,
    DeviceLinkUp,
    MessageRefused,
    PublishFailureReason,
    SchedulePlanned,
)
from coordinator.events import Event, EventBus, EventType, Subscription
from coordinator.runtime.refusals import topic_family
from coordinator.runtime.settings import DEFAULT_METRICS_PORT as DEFAULT_METRICS_PORT  # re-exported: callers look here
from coordinator.runtime.settings import Settings, settings
from coordinator.state.state_types import HealthState, LifecycleState, OperationalState

log = logging.getLogger(__name__)


LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""Seconds, 1 ms to 60 s: a loopback ack takes milliseconds, a charger over OCPP seconds, and
anything past a minute is already a timeout (30 s by default) whatever its exact value."""

MAX_TRACKED_DISPATCHES = 10_000
"""Dispatch times remembered while waiting for acks. Entries leave on ack, retry or final
status; the cap only matters when events go missing, and then the oldest are dropped."""

# Events that move a command into the status their payload carries. COMMAND_HELD is left
# out: it announces that a PENDING command waits for its asset, without a status change,
# and counting it would make PENDING mean "created + retried + held".
_STATUS_EVENTS = frozenset({
    EventType.COMMAND_CREATED,
    EventType.COMMAND_DISPATCHED,
    EventType.COMMAND_ACKNOWLEDGED,
    EventType.COMMAND_COMPLETED,
    EventType.COMMAND_FAILED,
    EventType.COMMAND_TIMED_OUT,
    EventType.COMMAND_CANCELLED,
    EventType.COMMAND_RETRY_SCHEDULED,
})
# After these, the attempt that was dispatched will not be acknowledged any more.
_ATTEMPT_OVER = frozenset({
    EventType.COMMAND_RETRY_SCHEDULED,
    EventType.COMMAND_COMPLETED,
    EventType.COMMAND_FAILED,
    EventType.COMMAND_TIMED_OUT,
    EventType.COMMAND_CANCELLED,
})


POWER_KEYS = ("power_kw", "active_power_kw")
"""Telemetry keys of an asset's measured power, kW: OCPP gateways send power_kw, Modbus batteries active_power_kw."""
SOC_KEYS = ("soc_percent",)
"""Telemetry keys of a battery's (or an EV's) state of charge, percent."""


def setpoint_kw(command_type: str, parameters: Mapping[str, object]) -> float | None:
    """The setpoint a completed command leaves on its asset, signed as the gauges and the site
    page show it: kW into the asset (charging) positive, out of it (SET_DISCHARGE_RATE)
    negative. None for a command that sets no power rate (a limit, a start, a SOC target).

        >>> setpoint_kw("SET_DISCHARGE_RATE", {"power_kw": 25.0})
        -25.0
    """
    power = parameters.get("power_kw")
    if not isinstance(power, int | float) or isinstance(power, bool):
        return None
    if command_type == CommandType.SET_CHARGE_RATE.value:
        return float(power)
    if command_type == CommandType.SET_DISCHARGE_RATE.value:
        return -float(power)
    return None


def reading(values: Mapping[str, object], keys: tuple[str, ...]) -> float | None:
    """The first numeric value of ``keys`` in a telemetry message's ``values``, else None."""
    for key in keys:
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


class ServiceMetrics:
    """The metrics of one process (``service`` is its name, e.g. ``"planner"``).

    Feed it with ``observe_bus``, ``watch_reconnects``, ``set_module_state`` and
    ``set_emergency_stop``; expose it with ``serve`` (HTTP) or ``render`` (bytes).
    Fed on the process's event loop; prometheus_client's HTTP thread only reads it (the
    client library's metric objects are safe to read while they change).
    """

    def __init__(self, service: str) -> None:
        if not service:
            raise ValueError("service name must not be empty")
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry

        commands = Counter(
            "qubit_commands", "Commands entering each status (one per COMMAND_* event except COMMAND_HELD).",
            ["service", "status"], registry=r,
        )
        self._commands = {s.value: commands.labels(service, s.value) for s in sorted(CommandStatus)}
        self._schedule_to_dispatch = Histogram(
            "qubit_schedule_to_dispatch_seconds",
            "From a command's scheduled time to its first dispatch.",
            ["service"], buckets=LATENCY_BUCKETS, registry=r,
        ).labels(service)
        self._dispatch_to_ack = Histogram(
            "qubit_dispatch_to_ack_seconds",
            "From a dispatch to the device's acknowledgement of that attempt.",
            ["service"], buckets=LATENCY_BUCKETS, registry=r,
        ).labels(service)
        self._retries = Counter(
            "qubit_command_retries", "Retries scheduled after a failed or timed-out attempt.",
            ["service"], registry=r,
        ).labels(service)
        self._link_up = Gauge(
            "qubit_device_link_up", "1 while the gateway's link to the asset's device is up, 0 while down.",
            ["service", "asset_id"], registry=r,
        )
        events = Counter(
            "qubit_events", "Events published on the process's event bus.", ["service", "event_type"], registry=r,
        )
        self._events = {t: events.labels(service, t.value) for t in EventType}
        self._layers: dict[str, tuple[type[StrEnum], Gauge]] = {
            layer: (enum, Gauge(
                f"qubit_service_{layer}_state", f"1 for the process's current {layer} state, 0 for the others.",
                ["service", "state"], registry=r,
            ))
            for layer, enum in (
                ("lifecycle", LifecycleState), ("operational", OperationalState), ("health", HealthState),
            )
        }
        self._emergency_stop = Gauge(
            "qubit_emergency_stop_active", "1 while the site's emergency stop is active.", ["service"], registry=r,
        ).labels(service)
        self._reconnects = _ReconnectCollector(service)
        r.register(self._reconnects)
        failures = Counter(
            "qubit_publish_failures", "Messages the process could not send, by reason (PUBLISH_FAILED events).",
            ["service", "reason"], registry=r,
        )
        self._publish_failures = {reason: failures.labels(service, reason.value) for reason in PublishFailureReason}
        self._publish_pending = Gauge(
            "qubit_publish_pending", "QoS 1 messages published and not yet confirmed by the broker.",
            ["service"], registry=r,
        ).labels(service)
        self._publish_overflow = Gauge(
            "qubit_publish_overflow", "Messages waiting in the MQTT client for room in paho's window.",
            ["service"], registry=r,
        ).labels(service)

        # Per asset: label values are the site's asset ids only (the planner's own commands, a
        # gateway's own devices), so their number is bounded by the site config.
        self._setpoint = Gauge(
            "qubit_asset_setpoint_kw", "The power rate of the asset's last completed command, kW "
            "(charging positive, discharging negative). Exported by the planner.", ["service", "asset_id"], registry=r,
        )
        self._power = Gauge(
            "qubit_asset_power_kw", "The asset's measured power, kW, as its device last reported it. "
            "Exported by the asset's gateway.", ["service", "asset_id"], registry=r,
        )
        self._soc = Gauge(
            "qubit_asset_soc_percent", "The asset's state of charge, percent, as its device last reported it. "
            "Exported by the asset's gateway.", ["service", "asset_id"], registry=r,
        )

        self._refused = Counter(
            "qubit_messages_refused", "Messages (or batch items) refused on receipt (MESSAGE_REFUSED events).",
            ["service", "topic_family", "reason"], registry=r,
        )

        self._dispatched_at: OrderedDict[str, datetime] = OrderedDict()
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None

    # -- inputs ----------------------------------------------------------------------

    def observe_bus(self, bus: EventBus) -> Subscription:
        """Count every event of ``bus`` from now on; returns the subscription (``cancel()`` stops it).

        Also follows EMERGENCY_STOP_ACTIVATED / EMERGENCY_STOP_RESET into
        ``qubit_emergency_stop_active``, like ``set_emergency_stop`` does.
        """
        return bus.subscribe_all(self._on_event)

    def watch_reconnects(self, get_count: Callable[[], int]) -> None:
        """Expose ``get_count()`` (e.g. ``lambda: mqtt.reconnects``) as ``qubit_broker_reconnects_total``,
        read at every scrape. A later call replaces the getter."""
        self._reconnects.get_count = get_count

    def count_publish_failure(self, reason: str, count: int = 1) -> None:
        """``count`` messages could not be sent for ``reason`` (a PublishFailureReason value).
        Fed by the MQTT client's failure hook rather than the bus: a failure to publish the
        PUBLISH_FAILED event itself still counts."""
        self._publish_failures[PublishFailureReason(reason)].inc(count)

    def watch_publishes(self, unconfirmed: Callable[[], int], overflow: Callable[[], int]) -> None:
        """Expose the MQTT client's ``unconfirmed`` and ``overflow`` as ``qubit_publish_pending``
        and ``qubit_publish_overflow``, read at every scrape."""
        self._publish_pending.set_function(lambda: float(unconfirmed()))
        self._publish_overflow.set_function(lambda: float(overflow()))

    def set_module_state(self, lifecycle: str, operational: str, health: str) -> None:
        """Record the process's three state layers (values of LifecycleState, OperationalState,
        HealthState, e.g. ``"Active", "Running", "Healthy"``). Raises ValueError, changing
        nothing, if one is not a state of its layer."""
        chosen = {}
        for layer, value in (("lifecycle", lifecycle), ("operational", operational), ("health", health)):
            enum = self._layers[layer][0]
            try:
                chosen[layer] = enum(value)
            except ValueError:
                allowed = ", ".join(s.value for s in enum)
                raise ValueError(f"{value!r} is not a {layer} state; expected one of {allowed}") from None
        for layer, state in chosen.items():
            enum, gauge = self._layers[layer]
            for candidate in enum:
                gauge.labels(self.service, candidate.value).set(1 if candidate is state else 0)

    def observe_telemetry(self, asset_id: str, values: Mapping[str, object]) -> None:
        """A device's measurements (a Telemetry message's ``values``) into ``qubit_asset_power_kw``
        and ``qubit_asset_soc_percent``; a value the message lacks leaves its gauge as it was."""
        power, soc = reading(values, POWER_KEYS), reading(values, SOC_KEYS)
        if power is not None:
            self._power.labels(self.service, asset_id).set(power)
        if soc is not None:
            self._soc.labels(self.service, asset_id).set(soc)

    def set_emergency_stop(self, active: bool) -> None:
        """Record whether the site's emergency stop is active."""
        self._emergency_stop.set(1 if active else 0)

    # -- output ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` over HTTP from a daemon thread; returns the bound port
        (``port=0`` picks a free one). Raises OSError when the address cannot be bound,
        ValueError for a port outside 0..65535, RuntimeError if already serving."""
        if not 0 <= port <= 65535:
            raise ValueError(f"metrics port {port} is outside 0..65535")
        if self._server is not None:
            raise RuntimeError(f"{self.service}: metrics already served on port {self._server.server_port}")
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._server_thread = server, thread
        return server.server_port

    def close(self) -> None:
        """Stop the HTTP server started by ``serve`` (no-op if none). Bus subscriptions stay."""
        server, thread = self._server, self._server_thread
        self._server = self._server_thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # -- the bus ---------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        kind = event.event_type
        self._events[kind].inc()
        p = event.payload
        if isinstance(p, CommandPayload) and kind in _STATUS_EVENTS:
            self._commands[p.status.value].inc()
        if isinstance(p, CommandCompleted) and (kw := setpoint_kw(p.command_type.value, p.parameters)) is not None:
            self._setpoint.labels(self.service, p.asset_id).set(kw)
        if isinstance(p, CommandDispatched):
            self._on_dispatched(p, event.timestamp)
        elif isinstance(p, CommandAcknowledged):
            self._on_acknowledged(p, event.timestamp)
        elif isinstance(p, CommandPayload) and kind in _ATTEMPT_OVER:
            if kind is EventType.COMMAND_RETRY_SCHEDULED:
                self._retries.inc()
            self._forget(p.command_id)
        elif isinstance(p, DeviceLink):
            self._link_up.labels(self.service, p.asset_id).set(1 if isinstance(p, DeviceLinkUp) else 0)
        elif isinstance(p, SchedulePlanned):  # its commands, created together, without an event each
            self._commands[CommandStatus.PENDING.value].inc(p.command_count)
        elif isinstance(p, MessageRefused):
            self._refused.labels(self.service, topic_family(p.topic), p.reason.value).inc()
        elif kind is EventType.EMERGENCY_STOP_ACTIVATED:
            self.set_emergency_stop(True)
        elif kind is EventType.EMERGENCY_STOP_RESET:
            self.set_emergency_stop(False)

    def _on_dispatched(self, p: CommandDispatched, sent_at: datetime) -> None:
        # Only first attempts: a retry goes out after its backoff by design, and that delay is
        # what qubit_command_retries_total already counts, not dispatch lag.
        if p.attempts <= 1 and p.dispatched_at is not None:
            self._schedule_to_dispatch.observe(max(0.0, (p.dispatched_at - p.scheduled_at).total_seconds()))
        # The ack is timed on the events' own clock (wall time, both ends): dispatched_at is
        # the engine's clock, which a caller may inject.
        self._dispatched_at[p.command_id] = sent_at
        self._dispatched_at.move_to_end(p.command_id)
        while len(self._dispatched_at) > MAX_TRACKED_DISPATCHES:
            self._dispatched_at.popitem(last=False)

    def _on_acknowledged(self, p: CommandAcknowledged, acked_at: datetime) -> None:
        sent_at = self._forget(p.command_id)
        if sent_at is None:
            return  # dispatched before observe_bus, or evicted: no honest value to record
        self._dispatch_to_ack.observe(max(0.0, (acked_at - sent_at).total_seconds()))

    def _forget(self, command_id: str) -> datetime | None:
        return self._dispatched_at.pop(command_id, None)


class _ReconnectCollector(Collector):
    """A counter whose value lives in the MQTT client; read at scrape time so that the
    client needs no knowledge of metrics."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.get_count: Callable[[], int] | None = None

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        get_count = self.get_count
        if get_count is not None:
            try:
                family.add_metric([self.service], float(get_count()))
            except Exception:
                # A broken getter must not take the whole scrape down with it.
                log.exception("%s: cannot read the broker reconnect count", self.service)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "qubit_broker_reconnects", "Reconnections to the MQTT broker after the first connection.",
            labels=["service"],
        )


def metrics_port_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """The metrics port from QUBIT_METRICS_PORT (default 9464); None when it is ``off`` or empty.

    From ``environ`` a bad value raises SettingsError (a ValueError); from the process
    environment (the default) it ends the process (runtime/settings.py).
    """
    return (settings() if environ is None else Settings.from_environ(environ)).metrics_port
