"""Modbus gateway process: owns the Modbus TCP links to the site's battery systems.

    qubit-modbus-gateway --gateway-id modbus --site-config deploy/site.toml
"""

from __future__ import annotations

import asyncio

from coordinator.base import Command
from coordinator.contract.messages import Outcome
from coordinator.protocols.modbus.device import DeviceStatus
from coordinator.runtime.command_intake import result
from coordinator.runtime.device_gateway import DeviceGateway
from coordinator.runtime.service import Publish, base_arguments, load_site, run
from coordinator.site import Protocol, SiteConfig

from .link import BatteryLink, Marks


class ModbusGateway(DeviceGateway):
    protocol = Protocol.MODBUS

    def __init__(self, site: SiteConfig, publish: Publish, gateway_id: str = "modbus") -> None:
        super().__init__(site, publish, gateway_id)
        self.links = {
            a.asset_id: BatteryLink(a, self.bus, self.intake, self.send_results, self._report, self.telemetry,
                                    site.coordinator.lease_seconds, Marks(self.mark_applying, self.mark_applied))
            for a in site.assets_of(gateway_id)
        }

    async def open(self) -> None:
        for link in self.links.values():
            link.start()
        self.resume()

    def submit(self, cmd: Command, reconcile: bool = False) -> None:
        link = self.links.get(cmd.asset_id)
        if link is None:  # through send_results, like every result: it ends the command's in-flight entry
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED,
                                      f"{cmd.asset_id} is not on gateway {self.gateway_id}")])
        else:
            link.submit(cmd, reconcile)

    def reconcile(self, cmd: Command) -> None:
        """In the battery's queue, ahead of what was accepted after it: read the setpoint back."""
        self.submit(cmd, reconcile=True)

    async def make_safe(self, asset_id: str, reason: str) -> str:
        return await self.links[asset_id].make_safe(reason)

    def after_reset(self) -> None:
        for link in self.links.values():
            link.resume()

    def _report(self, asset_id: str, status: DeviceStatus) -> None:
        self.report(asset_id, status.state.value, status.telemetry())

    def stop_reconnecting(self) -> None:
        for link in self.links.values():
            link.drain()

    async def stop_links(self) -> None:
        await asyncio.gather(*(link.stop() for link in self.links.values()))


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments(__doc__.splitlines()[0])
    parser.add_argument("--gateway-id", default="modbus")
    args = parser.parse_args(argv)
    return run(f"gateway-{args.gateway_id}", lambda site, publish: ModbusGateway(site, publish, args.gateway_id),
               load_site(args.site_config))


if __name__ == "__main__":
    raise SystemExit(main())
