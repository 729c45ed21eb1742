"""The process shell every service shares: logging, MQTT, signals, timers, one event loop.

A process is one ``Service`` (its subscriptions, what it publishes, its hooks) served by
``run`` on one asyncio event loop: MQTT messages are handled on it in arrival order, the
tick is a timer on it, gateways' device I/O runs on it. Nothing of a service is touched from
another thread, so services and the library objects they hold need no locks. Two threads
remain beside the loop, each for a library that blocks: paho's network thread
(runtime/mqtt.py) and prometheus_client's HTTP server (runtime/metrics.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple, TypeVar

from coordinator.contract.codec import DecodeError, encode_event
from coordinator.contract.events import PublishFailed, RefusalReason
from coordinator.contract.messages import EmergencyStop, ServiceStatus, WireModel, decode
from coordinator.contract.topics import EMERGENCY_STOP, event_topic
from coordinator.events import Event, EventBus, EventType
from coordinator.runtime.log_format import configure_logging
from coordinator.runtime.metrics import ServiceMetrics, metrics_port_from_env
from coordinator.runtime.mqtt import (
    EXIT_CREDENTIALS_REFUSED,
    BrokerSettings,
    CredentialsRefused,
    Handler,
    MqttClient,
    PublishFailure,
)
from coordinator.runtime.refusals import Refusals, Refused
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG as DEFAULT_SITE_CONFIG  # re-exported: callers look here
from coordinator.runtime.settings import environment_name, settings
from coordinator.runtime.supervision import Supervisor
from coordinator.site import SiteConfig, SiteConfigError
from coordinator.timeutil import utcnow

log = logging.getLogger(__name__)

Publish = Callable[..., object]
"""publish(topic, payload, qos=1, retain=False), as MqttClient.publish."""

S = TypeVar("S")
M = TypeVar("M", bound=WireModel)


class Inbound(NamedTuple):
    """One subscription of a process: what arrives on ``topic_filter`` goes to ``handler``."""

    topic_filter: str
    handler: Handler

    @property
    def model(self) -> type[WireModel] | None:
        """The wire model the handler decodes (``receives``), None when it reads the bytes itself."""
        return getattr(self.handler, "wire_model", None)


class Service:
    """What ``run`` serves: one process. A process overrides what applies to it; every
    default does nothing. All of it is called on the process's event loop."""

    tick_interval: float | None = None
    """Seconds between two ``tick`` calls; None for a process with nothing on a clock."""
    publishes: tuple[str, ...] = ()
    """The topics (patterns, as in contract/topics.py) it publishes on, besides its events
    and its status: a declaration for readers, logged at start-up."""
    bus: EventBus | None = None
    """Its own event bus, if it has one: forwarded to qubit/events/# and counted in metrics."""
    warm_imports: tuple[str, ...] = ()
    """Modules its first message will need (pandas for a schedule), imported on a thread once
    the process is online: start-up stays short and the first schedule does not pay for them."""

    @property
    def refusals(self) -> Refusals:
        """Where the process reports what it refused (MESSAGE_REFUSED): ``serve`` sets the
        process's own; a service built without it (a unit test) gets one with a bus of its own."""
        found = self.__dict__.get("_refusals")
        if found is None:
            found = self.__dict__["_refusals"] = Refusals(EventBus())
        return found

    @refusals.setter
    def refusals(self, refusals: Refusals) -> None:
        self.__dict__["_refusals"] = refusals

    def refuse(self, topic: str, reason: RefusalReason, detail: str, *, message_id: object = None,
               asset_id: object = None) -> None:
        """Refuse (a part of) a message received on ``topic``: one MESSAGE_REFUSED event."""
        self.refusals.refuse(topic, reason, detail, message_id=message_id, asset_id=asset_id,
                             logger=logging.getLogger(type(self).__module__))

    def subscriptions(self) -> list[Inbound]:
        """What it receives: topic filter -> handler (each handler decodes its wire model)."""
        return []

    def attach(self, supervisor: Supervisor) -> None:
        """Given the process's supervisor before anything runs (gateways tell it their links)."""

    def attach_metrics(self, metrics: ServiceMetrics) -> None:
        """Given the process's metrics before anything runs: for a service that feeds gauges
        the bus does not carry (a gateway's per-asset power and SOC, from its devices)."""

    def attach_client(self, client: MqttClient) -> None:
        """Given the process's MQTT client before it opens: for a service that paces its own
        publishing by the broker's confirmations (the planner's outbox)."""

    async def open(self) -> None:
        """Start what runs on the loop (listeners, device links), before the broker is joined."""

    def tick(self, now: datetime) -> None:
        """Every ``tick_interval`` seconds."""

    def emergency_stop(self, order: EmergencyStop) -> None:
        """The site's emergency stop, ahead of any backlog; idempotent (retained: it comes
        again on every reconnect)."""

    def emergency_reset(self, order: EmergencyStop) -> None:
        """The explicit reset after an emergency stop."""

    async def drain(self, timeout: float) -> None:
        """SIGTERM: let in-flight work finish for up to ``timeout`` seconds, hand the rest back."""

    async def close(self) -> None:
        """Release what ``open`` started."""


def forward_events(
    bus: EventBus, publish: Publish, skip: frozenset[EventType] = frozenset(),
    *, unless: Callable[[Event], bool] | None = None,
) -> None:
    """Publish every event of ``bus`` under qubit/events/{type}/{asset|site}, QoS 1, except
    those of the ``skip`` types and those ``unless(event)`` is true for."""

    def forward(event: Event) -> None:
        if event.event_type not in skip and (unless is None or not unless(event)):
            publish(event_topic(event.event_type.value, event.asset_id), encode_event(event), qos=1)

    bus.subscribe_all(forward)


def receives(
    model: type[M], what: str, *, max_bytes: int | None = None,
) -> Callable[[Callable[[S, str, M], None]], Callable[[S, str, bytes], None]]:
    """Turn ``handler(self, topic, message)`` into an MQTT handler ``(self, topic, data)``.

    The untrusted bytes are decoded into ``model``, refusing more than ``max_bytes`` (default:
    the ``max_message_bytes`` setting); what cannot be read is refused (a MESSAGE_REFUSED
    event, ``too_large`` or ``unreadable``) and dropped, so one bad message never stops a
    service. A handler refuses a readable message by raising ``Refused`` before it changed
    anything. The handler keeps its model as ``wire_model`` (``Inbound.model``). A ``Service``
    reports the refusal through its ``refusals``; any other owner, through ``UNATTACHED``.
    """

    def decorate(method: Callable[[S, str, M], None]) -> Callable[[S, str, bytes], None]:
        method_log = logging.getLogger(method.__module__)

        @functools.wraps(method)
        def receive(self: S, topic: str, data: bytes) -> None:
            limit = max_bytes or max_message_bytes()
            refuse = getattr(self, "refuse", None) or functools.partial(UNATTACHED.refuse, logger=method_log)
            if len(data) > limit:
                refuse(topic, RefusalReason.TOO_LARGE, f"{what}: {len(data)} bytes, over the limit {limit}")
                return
            try:
                message = decode(model, data, max_bytes=limit)
            except DecodeError as exc:
                refuse(topic, RefusalReason.UNREADABLE, f"{what}: {exc.reason}")
                return
            try:
                method(self, topic, message)
            except Refused as refused:
                refuse(topic, refused.reason, f"{what}: {refused.detail}", message_id=refused.message_id,
                       asset_id=refused.asset_id)

        receive.wire_model = model  # type: ignore[attr-defined]
        return receive

    return decorate


UNATTACHED = Refusals(EventBus())
"""Where a handler that is not a Service's method reports refusals (log lines; events on a bus
nobody forwards)."""

_MAX_MESSAGE_BYTES = environment_name("max_message_bytes")


def max_message_bytes() -> int:
    """The ``max_message_bytes`` setting, cheap enough to ask on every message: reading every
    setting takes most of a millisecond, so it is read again only when its variable changed."""
    return _message_limit(os.environ.get(_MAX_MESSAGE_BYTES))


@functools.lru_cache(maxsize=8)
def _message_limit(raw: str | None) -> int:
    return settings().max_message_bytes


def load_site(path: str | None, secrets_for: str | None = None) -> SiteConfig:
    """The site config at ``path``, else $QUBIT_SITE_CONFIG, else deploy/site.toml.

    Every setting is validated here, the first thing a process does: a bad one ends it as a
    usage error does, one line per problem on stderr (file, key, rule; never a value), no
    traceback, exit status 2. ``secrets_for``: the gateway whose chargers' password files this
    process reads (SiteConfig.load)."""
    try:
        return SiteConfig.load(path or settings().site_config, secrets_for=secrets_for)
    except SiteConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        raise SystemExit(2) from None


SETTINGS_HELP = ("Settings (environment): QUBIT_MQTT_HOST, QUBIT_MQTT_PORT, QUBIT_MQTT_USERNAME, "
                 "QUBIT_MQTT_PASSWORD_FILE, QUBIT_MQTT_CA_FILE, QUBIT_SITE_CONFIG, QUBIT_LOG_LEVEL, QUBIT_LOG_FORMAT, "
                 "QUBIT_METRICS_PORT, QUBIT_DATA_DIR, QUBIT_LEDGER_RETENTION_DAYS, QUBIT_MAX_MESSAGE_BYTES "
                 "(docs/settings.md). Exit status: 0 stopped cleanly, 2 a bad setting or site config, "
                 "78 the broker refused the credentials.")
"""The --help epilog of every service: the settings it reads and what its exit status means."""


def base_arguments(description: str) -> argparse.ArgumentParser:
    """A service's command line: --site-config, and --help naming the settings it reads."""
    parser = argparse.ArgumentParser(description=description, epilog=SETTINGS_HELP)
    parser.add_argument("--site-config", help="site config file (default: $QUBIT_SITE_CONFIG or deploy/site.toml)")
    return parser


HOUSEKEEPING_SECONDS = 1.0
"""How often the backlog is looked at, whatever the service's own tick."""
SHUTDOWN_GRACE_SECONDS = 8.0
"""SIGTERM: how long in-flight work may take before it is handed back (compose waits 10 s)."""


def run(name: str, build: Callable[[SiteConfig, Publish], Service], site: SiteConfig) -> int:
    """Connect, serve until SIGTERM/SIGINT, hand back in-flight work, go Offline, exit 0.

    Around the service: its module state (runtime/supervision.py) kept true and published,
    the site's emergency stop handed to it ahead of any backlog, and its Last Will.
    ``build(site, publish)`` makes the service; it is called on the running loop.
    """
    configure_logging(name)
    without_pyarrow()
    try:
        return asyncio.run(serve(name, build, site))
    except CredentialsRefused as exc:  # logged once by the client; retrying cannot help
        log.critical("%s exits: %s", name, exc)
        return EXIT_CREDENTIALS_REFUSED


def without_pyarrow() -> None:
    """Keep pandas from loading pyarrow in this process, if pandas is not loaded yet.

    pandas 3 imports pyarrow whenever it is installed (a development checkout has it, for
    `qubit publish` of Parquet files and its tests): about 75 MB and 0.3 s in a process
    that reads no Parquet. No service does, and the deployed image has no pyarrow at all
    (deploy/Dockerfile installs no extras); here, services run as they are deployed. Not
    done at import: a test process imports services and reads Parquet too."""
    if "pandas" not in sys.modules:
        sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]  # None: `import pyarrow` raises ImportError


async def serve(name: str, build: Callable[[SiteConfig, Publish], Service], site: SiteConfig) -> int:
    """``run``'s body, on the running loop."""
    loop = asyncio.get_running_loop()
    metrics = ServiceMetrics(name)
    bus = EventBus()
    client: MqttClient

    def publish(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> object:
        return client.publish(topic, payload, qos=qos, retain=retain)  # the supervisor's Last Will comes first

    forward_events(bus, publish)
    metrics.observe_bus(bus)
    def show(status: ServiceStatus) -> None:
        metrics.set_module_state(status.lifecycle, status.operational, status.health)
        metrics.set_emergency_stop(status.emergency_stop)

    supervisor = Supervisor(name, publish, bus, on_change=show)
    client = MqttClient(name, BrokerSettings.from_env(), will=supervisor.last_will(),
                        on_link=lambda up: supervisor.update(broker_connected=up),
                        on_failure=PublishFailureReport(bus, metrics))
    metrics.watch_reconnects(lambda: client.reconnects)
    metrics.watch_publishes(lambda: client.unconfirmed, lambda: client.overflow)
    service = build(site, client.publish)
    service.refusals = Refusals(bus)  # the process's bus: forwarded at once (never held by a ledger), counted
    if service.bus is not None:  # commands, links: what the service itself reports
        metrics.observe_bus(service.bus)
    service.attach(supervisor)
    service.attach_metrics(metrics)
    service.attach_client(client)
    serve_metrics(metrics, supervisor)
    for topic_filter, handler in service.subscriptions():
        client.subscribe(topic_filter, handler)
    client.subscribe(EMERGENCY_STOP, EmergencyStopHandler(supervisor, service), urgent=True)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await service.open()
    await client.open()
    supervisor.started()
    if service.warm_imports:
        threading.Thread(target=warm, args=(service.warm_imports,), name="warm imports", daemon=True).start()
    log.info("%s running for site %s%s", name, site.site_id,
             f"; publishes {', '.join(service.publishes)}" if service.publishes else "")
    timers = [Every(HOUSEKEEPING_SECONDS, Housekeeping(supervisor, client), "housekeeping")]
    if service.tick_interval is not None:
        timers.append(Every(service.tick_interval, lambda: service.tick(utcnow()), f"{name}: tick"))
    for timer in timers:
        timer.start()
    await stopping.wait()
    log.info("%s stopping", name)
    for timer in timers:
        timer.cancel()
    supervisor.stopping()
    await service.drain(SHUTDOWN_GRACE_SECONDS)
    await service.close()
    supervisor.stopped()
    await client.close(farewell=supervisor.farewell())
    # Not waited for: the metrics server's shutdown sits out its 0.5 s poll, and its thread
    # (a daemon) ends with the process anyway.
    threading.Thread(target=metrics.close, name="metrics shutdown", daemon=True).start()
    log.info("%s offline", name)
    return 0


def warm(modules: tuple[str, ...]) -> None:
    """Import ``modules`` now (their lazy users then find them in sys.modules); a failure is
    logged, and the import is tried again, and fails loudly, where the module is used."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            log.exception("warm import of %s failed", module)


class PublishFailureReport:
    """The MQTT client's failure hook: each failure counted in ``qubit_publish_failures_total``
    and a PUBLISH_FAILED event on the process's bus (so on qubit/events/#). A failure to
    publish that event is counted and logged, not reported again: no loop of reports."""

    def __init__(self, bus: EventBus, metrics: ServiceMetrics) -> None:
        self.bus, self.metrics = bus, metrics
        self._reporting = False

    def __call__(self, failure: PublishFailure) -> None:
        self.metrics.count_publish_failure(failure.reason, failure.count)
        if self._reporting:
            log.error("the PUBLISH_FAILED event could not be sent either (%s): counted only", failure.reason.value)
            return
        self._reporting = True
        try:
            self.bus.emit(EventType.PUBLISH_FAILED, PublishFailed(
                topic=failure.topic, reason=failure.reason, message_bytes=failure.message_bytes,
                count=failure.count, limit_bytes=failure.limit_bytes, detail=failure.detail))
        finally:
            self._reporting = False


class Every:
    """``action()`` every ``interval`` seconds on the running loop, at a fixed rate from
    ``start`` (the first call at once). One that raises is logged and the timer goes on; a
    call that overran the interval is not made up for."""

    def __init__(self, interval: float, action: Callable[[], object], what: str) -> None:
        if interval <= 0:
            raise ValueError(f"{what}: interval must be positive, not {interval}")
        self.interval, self.action, self.what = interval, action, what
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._fire(loop, loop.time())

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        try:
            self.action()
        except Exception:
            log.exception("%s failed", self.what)
        due = max(due + self.interval, loop.time())
        self._handle = loop.call_at(due, self._fire, loop, due)


class Housekeeping:
    """Every second: the backlog told to the supervisor; after a reconnect, the status again."""

    def __init__(self, supervisor: Supervisor, client: MqttClient) -> None:
        self.supervisor, self.client = supervisor, client
        self.reconnects = client.reconnects

    def __call__(self) -> None:
        self.supervisor.update(backlog=self.client.backlog)
        # Checked here, a second after the reconnect, rather than at once: by then paho has
        # re-sent what it queued during the outage, so the retained status is the newest.
        if self.client.reconnects != self.reconnects and self.client.connected.is_set():
            self.reconnects = self.client.reconnects
            self.supervisor.republish()


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
            self.service.refuse(topic, RefusalReason.UNREADABLE,
                                f"unreadable emergency stop order: {exc.reason} (the site's state is unchanged)")
            return
        if order.active and self.supervisor.emergency is None:
            log.warning("EMERGENCY STOP by %s: %s", order.issued_by, order.reason)
            self.service.emergency_stop(order)
            self.supervisor.emergency_stop(order)
        elif not order.active and self.supervisor.emergency is not None:
            log.warning("emergency stop reset by %s: %s", order.issued_by, order.reason)
            self.service.emergency_reset(order)
            self.supervisor.emergency_reset()
