"""The process shell every service shares: settings, logging, MQTT, signals, the tick loop.

A service is a plain object with handlers for its subscriptions and, if it needs a clock,
``tick(now)``; everything here is I/O around it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from coordinator.codec import DecodeError, encode_event
from coordinator.events import Event, EventBus, EventType
from coordinator.mqtt_client import BrokerSettings, MqttClient
from coordinator.site import SiteConfig
from coordinator.timeutil import utcnow
from coordinator.topics import event_topic
from coordinator.wire import WireModel, decode

log = logging.getLogger(__name__)

DEFAULT_SITE_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "site.toml"

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
            publish(event_topic(event.event_type.value, event.payload.get("asset_id")), encode_event(event), qos=1)

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


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("QUBIT_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_site(path: str | None) -> SiteConfig:
    return SiteConfig.load(path or os.environ.get("QUBIT_SITE_CONFIG") or DEFAULT_SITE_CONFIG)


def base_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--site-config", help="site config file (default: $QUBIT_SITE_CONFIG or deploy/site.toml)")
    return parser


def run(name: str, build: Callable[[SiteConfig, Publish], Service], site: SiteConfig) -> int:
    """Connect, serve until SIGTERM/SIGINT, go offline, exit 0."""
    configure_logging()
    client = MqttClient(name, BrokerSettings.from_env())
    service = build(site, client.publish)
    for topic_filter, handler in service.subscriptions():
        client.subscribe(topic_filter, handler)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    client.start()
    log.info("%s running for site %s", name, site.site_id)
    interval = service.tick_interval
    while not stopping.wait(interval if interval is not None else 3600):
        if interval is not None:
            try:
                service.tick(utcnow())
            except Exception:
                log.exception("%s: tick failed", name)
    log.info("%s stopping", name)
    close = getattr(service, "close", None)
    if close is not None:
        close()
    client.stop()
    return 0
