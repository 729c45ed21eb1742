"""Which gateway owns which asset: where a process that does not translate sends commands.

The planner routes commands; each gateway translates them into its protocol, once (see
docs/adapters.md). A library user who wants payloads uses an ``AdapterRegistry`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # site.py imports the protocols, which import this package
    from coordinator.site import SiteConfig


@dataclass(frozen=True, slots=True)
class Route:
    """The gateway process that owns an asset, and the protocol it speaks to the device."""

    gateway_id: str
    protocol: str


class RoutingTable(Mapping[str, Route]):
    """Immutable asset id -> Route table.

    >>> routes = RoutingTable({"ast_bay_1": Route("ocpp", "ocpp")})
    >>> routes.get("ast_bay_1"), routes.get("ast_unknown")
    (Route(gateway_id='ocpp', protocol='ocpp'), None)
    """

    def __init__(self, routes: Mapping[str, Route]) -> None:
        for asset_id, route in routes.items():
            if not isinstance(asset_id, str) or not asset_id:
                raise ValueError(f"asset_id must be a non-empty string, got {asset_id!r}")
            if not isinstance(route, Route):
                raise TypeError(f"{asset_id}: expected a Route, got {type(route).__name__}")
        self._routes = MappingProxyType(dict(routes))

    @classmethod
    def from_site(cls, site: SiteConfig) -> RoutingTable:
        """Every asset of the site config, to the gateway it is declared under."""
        protocols = {g.gateway_id: g.protocol for g in site.gateways}
        return cls({a.asset_id: Route(a.gateway_id, protocols[a.gateway_id]) for a in site.assets})

    def assets_for(self, gateway_id: str) -> list[str]:
        """Sorted ids of the assets this gateway owns."""
        return sorted(asset for asset, route in self._routes.items() if route.gateway_id == gateway_id)

    def __getitem__(self, asset_id: str) -> Route:
        return self._routes[asset_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __repr__(self) -> str:
        return f"RoutingTable({len(self)} assets)"
