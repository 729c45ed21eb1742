"""What every gateway with real device links shares: an asyncio loop for the links beside
the MQTT thread, the command intake, batched results, status reports and telemetry."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from coordinator.events import EventBus
from coordinator.site import Protocol, SiteConfig
from coordinator.timeutil import utcnow
from coordinator.topics import commands_topic, status_topic, telemetry_topic
from coordinator.wire import StatusReport, Telemetry

from .command_intake import CommandIntake, ResultBatcher
from .runtime import Publish, forward_events


class DeviceGateway:
    tick_interval = None
    protocol: Protocol

    def __init__(self, site: SiteConfig, publish: Publish, gateway_id: str) -> None:
        config = site.gateway(gateway_id)
        if config is None or config.protocol is not self.protocol:
            raise ValueError(f"{gateway_id!r} is not a {self.protocol} gateway of the site config")
        self.site, self.config, self.gateway_id, self.publish = site, config, gateway_id, publish
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.intake = CommandIntake(gateway_id, publish)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{gateway_id}-links", daemon=True)
        self._thread.start()
        self.results = ResultBatcher(self.intake, self.loop)

    def subscriptions(self):
        return [(commands_topic(self.gateway_id), self.on_commands)]

    def on_commands(self, topic: str, data: bytes) -> None:
        raise NotImplementedError

    def tick(self, now) -> None:
        pass

    def run_on_loop(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coroutine`` on the links' loop from another thread; wait for it if ``timeout``."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout) if timeout is not None else future

    def report(self, asset_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
        report = StatusReport(asset_id=asset_id, state=state, at=utcnow(), detail=detail)
        self.publish(status_topic(self.gateway_id, asset_id), report.encode(), qos=1)

    def telemetry(self, asset_id: str, values: dict[str, Any]) -> None:
        message = Telemetry(asset_id=asset_id, at=utcnow(), values=values)
        self.publish(telemetry_topic(self.gateway_id, asset_id), message.encode(), qos=0)

    async def stop_links(self) -> None:
        """Close every device link (on the loop)."""

    def close(self) -> None:
        self.run_on_loop(self.stop_links(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
