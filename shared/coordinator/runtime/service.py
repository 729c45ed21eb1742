"""The process shell every service shares: settings, logging, MQTT, signals, the tick loop.

A service is a plain object with handlers for its subscriptions and, if it needs a clock,
``tick(now)``; everything here is I/O around it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from coordinator.contract.codec import DecodeError, encode_event
from coordinator.events import Event, EventBus, EventType
from coordinator.runtime.mqtt import BrokerSettings, MqttClient
from coordinator.site import SiteConfig
from coordinator.timeutil import utcnow
from coordinator.contract.topics import EMERGENCY_STOP, event_topic
from coordinator.contract.messages import EmergencyStop, WireModel, decode

from coordinator.runtime.log_format import configure_logging
from coordinator.runtime.metrics import ServiceMetrics, metrics_port_from_env
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG as DEFAULT_SITE_CONFIG  # re-exported: callers look here
from coordinator.runtime.settings import settings
from coordinator.runtime.supervision import Supervisor

log = logging.getLogger(__name__)

Publish = Callable[..., object]
"""publish(topic, payload, qos=1, retain=False), as MqttClient.publish."""


class Service(Protocol):
    tick_interval: float | None

    def subscriptions(self) -> list[tuple[str, Callable[[str, bytes], None]]]: ...

    def tick(self, now) -> None: ...


def forward_events(bus: EventBus, publish: Publish, skip: frozenset[EventType] = frozenset()) -> None:
    """Publish every event of ``bus`` under qubit/events/{type}/{asset|site}, QoS 1."""

    def forward(event: Event) -> None:
        if event.event_type not in skip:
            publish(event_topic(event.event_type.value, event.asset_id), encode_event(event), qos=1)

    bus.subscribe_all(forward)


def receives(model: type[WireModel], what: str):
    """Turn ``handler(self, topic, message)`` into an MQTT handler ``(self, topic, data)``.

    The untrusted bytes are decoded into ``model``; what cannot be read is logged with its
    reason and dropped, so one bad message never stops a service.
    """

    def decorate(method):
        method_log = logging.getLogger(method.__module__)

        @functools.wraps(method)
        def receive(self, topic: str, data: bytes) -> None:
            try:
                message = decode(model, data)
            except DecodeError as exc:
                method_log.error("unreadable %s on %s: %s", what, topic, exc.reason)
                return
            method(self, topic, message)

        return receive

    return decorate


def load_site(path: str | None) -> SiteConfig:
    """The site config at ``path``, else $QUBIT_SITE_CONFIG, else deploy/site.toml.

    Every setting is validated here, the first thing a process does: a bad one ends it in one line."""
    return SiteConfig.load(path or settings().site_config)


def base_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--site-config", help="site config file (default: $QUBIT_SITE_CONFIG or deploy/site.toml)")
    return parser


HOUSEKEEPING_SECONDS = 1.0
"""How often the backlog is looked at, whatever the service's own tick."""
SHUTDOWN_GRACE_SECONDS = 8.0
"""SIGTERM: how long in-flight work may take before it is handed back (compose waits 10 s)."""


def run(name: str, build: Callable[[SiteConfig, Publish], Service], site: SiteConfig) -> int:
    """Connect, serve until SIGTERM/SIGINT, hand back in-flight work, go Offline, exit 0.

    Around the service: its module state (services/supervision.py) kept true and published,
    the site's emergency stop handed to it ahead of any backlog, and its Last Will.
    """
    configure_logging(name)
    client: MqttClient

    def publish(*args, **kwargs):
        return client.publish(*args, **kwargs)

    metrics = ServiceMetrics(name)
    bus = EventBus()
    forward_events(bus, publish)
    metrics.observe_bus(bus)
    supervisor = Supervisor(name, publish, bus, on_change=lambda status: (
        metrics.set_module_state(status.lifecycle, status.operational, status.health),
        metrics.set_emergency_stop(status.emergency_stop)))
    client = MqttClient(name, BrokerSettings.from_env(), will=supervisor.last_will(),
                        on_link=lambda up: supervisor.update(broker_connected=up))
    metrics.watch_reconnects(lambda: client.reconnects)
    service = build(site, client.publish)
    service_bus = getattr(service, "bus", None)
    if isinstance(service_bus, EventBus):  # commands, links: what the service itself reports
        metrics.observe_bus(service_bus)
    attach = getattr(service, "attach", None)
    if attach is not None:
        attach(supervisor)
    serve_metrics(metrics, supervisor)
    for topic_filter, handler in service.subscriptions():
        client.subscribe(topic_filter, handler)
    client.subscribe(EMERGENCY_STOP, EmergencyStopHandler(supervisor, service), urgent=True)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    client.start()
    supervisor.started()
    log.info("%s running for site %s", name, site.site_id)
    interval = service.tick_interval
    next_tick = time.monotonic()
    reconnects = client.reconnects
    while not stopping.wait(min(interval or HOUSEKEEPING_SECONDS, HOUSEKEEPING_SECONDS)):
        supervisor.update(backlog=client.backlog)
        if client.reconnects != reconnects and client.connected.is_set():
            reconnects = client.reconnects
            supervisor.republish()
        if interval is not None and time.monotonic() >= next_tick:
            next_tick = time.monotonic() + interval
            try:
                service.tick(utcnow())
            except Exception:
                log.exception("%s: tick failed", name)
    log.info("%s stopping", name)
    supervisor.stopping()
    drain = getattr(service, "drain", None)
    if drain is not None:
        drain(SHUTDOWN_GRACE_SECONDS)
    close = getattr(service, "close", None)
    if close is not None:
        close()
    supervisor.stopped()
    client.stop(farewell=supervisor.farewell())
    metrics.close()
    log.info("%s offline", name)
    return 0


def serve_metrics(metrics: ServiceMetrics, supervisor: Supervisor) -> None:
    """Prometheus on $QUBIT_METRICS_PORT (default 9464, "off" for none). A port in use is a
    Warning of the process's health, not a reason to stop controlling the site."""
    port = metrics_port_from_env()  # a malformed setting stops start-up with its reason
    if port is None:
        log.info("metrics disabled (QUBIT_METRICS_PORT=off)")
        return
    try:
        supervisor.metrics_port = metrics.serve(port)
        log.info("metrics on http://0.0.0.0:%d/metrics", supervisor.metrics_port)
    except OSError as exc:
        log.error("metrics not served on port %d: %s", port, exc)
        supervisor.update(metrics_failed=f"port {port}: {exc.strerror or exc}")


class EmergencyStopHandler:
    """qubit/control/emergency_stop -> the service first (assets to their safe state, no
    dispatching), then the process's own state. Runs on arrival, ahead of any backlog; the
    message is retained, so it also arrives on every (re)connect and must be idempotent."""

    def __init__(self, supervisor: Supervisor, service: Service) -> None:
        self.supervisor, self.service = supervisor, service

    def __call__(self, topic: str, data: bytes) -> None:
        try:
            order = decode(EmergencyStop, data)
        except DecodeError as exc:
            log.error("unreadable emergency stop order on %s, ignored (the site's state is unchanged): %s",
                      topic, exc.reason)
            return
        if order.active and self.supervisor.emergency is None:
            log.warning("EMERGENCY STOP by %s: %s", order.issued_by, order.reason)
            _call(self.service, "emergency_stop", order)
            self.supervisor.emergency_stop(order)
        elif not order.active and self.supervisor.emergency is not None:
            log.warning("emergency stop reset by %s: %s", order.issued_by, order.reason)
            _call(self.service, "emergency_reset", order)
            self.supervisor.emergency_reset()


def _call(service: Service, hook: str, order: EmergencyStop) -> None:
    method = getattr(service, hook, None)
    if method is not None:
        method(order)
