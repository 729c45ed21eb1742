"""Modbus gateway process: owns the Modbus TCP links to the site's battery systems.

    qubit-modbus-gateway --gateway-id modbus --site-config deploy/site.toml
"""

from __future__ import annotations

import asyncio
import logging
import threading

from coordinator.battery_device import DeviceStatus
from coordinator.events import EventBus
from coordinator.site import Protocol, SiteConfig
from coordinator.timeutil import utcnow
from coordinator.topics import commands_topic, status_topic, telemetry_topic
from coordinator.wire import (
    CommandBatch,
    CommandResult,
    Outcome,
    StatusReport,
    Telemetry,
)

from ..command_intake import CommandIntake, result
from ..runtime import Publish, base_arguments, forward_events, load_site, receives, run
from .link import BatteryLink

log = logging.getLogger(__name__)

RESULT_BATCH_WINDOW = 0.002  # seconds results wait for others to share their message


class ModbusGateway:
    tick_interval = None

    def __init__(self, site: SiteConfig, publish: Publish, gateway_id: str = "modbus") -> None:
        gateway = site.gateway(gateway_id)
        if gateway is None or gateway.protocol is not Protocol.MODBUS:
            raise ValueError(f"{gateway_id!r} is not a modbus gateway of the site config")
        self.gateway_id = gateway_id
        self.publish = publish
        self.bus = EventBus()
        forward_events(self.bus, publish)
        self.intake = CommandIntake(gateway_id, publish)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="modbus-links", daemon=True)
        self._thread.start()
        self._unsent: list[CommandResult] = []
        self.links = {
            a.asset_id: BatteryLink(a, self.bus, self._queue_results, self._report, self._telemetry)
            for a in site.assets_of(gateway_id)
        }
        for link in self.links.values():
            self.loop.call_soon_threadsafe(link.start)

    def subscriptions(self):
        return [(commands_topic(self.gateway_id), self.on_commands)]

    def tick(self, now) -> None:
        pass

    @receives(CommandBatch, "command batch")
    def on_commands(self, topic: str, batch: CommandBatch) -> None:
        for cmd in self.intake.accept(batch):
            link = self.links.get(cmd.asset_id)
            if link is None:
                self.intake.send([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED,
                                         f"{cmd.asset_id} is not on gateway {self.gateway_id}")])
            else:
                self.loop.call_soon_threadsafe(link.submit, cmd)

    def _queue_results(self, results: list[CommandResult]) -> None:
        """On the links' loop: results of devices that answer together leave in one message.
        One MQTT client moves only a few thousand messages a second (field notes)."""
        if not self._unsent:
            self.loop.call_later(RESULT_BATCH_WINDOW, self._flush_results)
        self._unsent += results

    def _flush_results(self) -> None:
        results, self._unsent = self._unsent, []
        self.intake.send(results)

    def _report(self, asset_id: str, status: DeviceStatus) -> None:
        report = StatusReport(asset_id=asset_id, state=status.state.value, at=utcnow(), detail=status.telemetry())
        self.publish(status_topic(self.gateway_id, asset_id), report.encode(), qos=1)

    def _telemetry(self, asset_id: str, values: dict) -> None:
        message = Telemetry(asset_id=asset_id, at=utcnow(), values=values)
        self.publish(telemetry_topic(self.gateway_id, asset_id), message.encode(), qos=0)

    def close(self) -> None:
        async def stop_all() -> None:
            await asyncio.gather(*(link.stop() for link in self.links.values()))

        asyncio.run_coroutine_threadsafe(stop_all(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments(__doc__.splitlines()[0])
    parser.add_argument("--gateway-id", default="modbus")
    args = parser.parse_args(argv)
    return run(f"gateway-{args.gateway_id}", lambda site, publish: ModbusGateway(site, publish, args.gateway_id),
               load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
