"""The fleet's processes on one machine: a central broker and N small site stacks, each site's
broker bridged to the central one through its own pass-through link (tools/fleet/link.py).

Each site is what a small depot runs: its own secured LocalMosquitto (the shipped config,
its own identities), ingester, planner, tracker and a loopback gateway with two chargers and
a battery, its own QUBIT_DATA_DIR; its broker carries the bridge of tools/bridge_config.py.
The central broker has only the fleet's identities (tools/bus_access.py central_identities).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.contract.topics import EVENTS_ALL, OPERATOR_COMMANDS, ROOT
from tools.bridge_config import BridgeLink, bridge_lines
from tools.broker import LocalMosquitto
from tools.bus_access import (
    BRIDGE_STATE,
    BRIDGED_OUT,
    FLEET_ROOT,
    FLEET_SCADA,
    HARNESS,
    bridge_identity,
    central_identities,
)
from tools.fleet.costs import process_rss_mb
from tools.fleet.link import Link, Links
from tools.fleet.observer import Observer
from tools.launcher import CORE, ServiceProcesses

CHARGERS = ("ast_bay_1", "ast_bay_2")
BATTERY = "ast_batt_001"
ASSETS = (*CHARGERS, BATTERY)


def site_id_of(n: int) -> str:
    return f"sit_fleet_{n:02d}"


def site_toml(site_id: str, dispatch_interval_s: float = 1.0) -> str:
    """A small site: two loopback chargers and a battery; a modest planner tick, as ten sites of
    four processes share two cores."""
    assets = "".join(
        f'\n[[assets]]\nasset_id = "{a}"\nkind = "{"battery" if a == BATTERY else "ev_charger"}"\n'
        f'gateway_id = "loopback"\nmax_power_kw = {250.0 if a == BATTERY else 22.0}\n' for a in ASSETS)
    return (f'site_id = "{site_id}"\n\n[coordinator]\ndispatch_interval_seconds = {dispatch_interval_s}\n'
            'command_timeout_seconds = 20.0\nmax_retries = 3\n\n'
            '[[gateways]]\ngateway_id = "loopback"\nprotocol = "loopback"\n' + assets)


SCADA_TOPICS = (*(f"{FLEET_ROOT}/+/{ROOT}/{t}" for t in BRIDGED_OUT if not t.startswith("telemetry")),
                f"{FLEET_ROOT}/+/{BRIDGE_STATE}")
"""What the central SCADA subscriber reads: every site's events, states, services, bridge."""
SCADA_SESSION = "fleet-scada-check"


@dataclass
class Site:
    site_id: str
    folder: Path
    broker: LocalMosquitto
    link: Link
    procs: ServiceProcesses
    local: Observer | None = None
    """A subscriber on the site's own broker: its events and operator commands, as the site sees them."""


@dataclass
class Fleet:
    """``with Fleet(folder, sites=10) as fleet:`` every broker and process up, SCADA subscribed."""

    folder: Path
    sites_wanted: int
    tls: bool = True
    online_timeout_s: float = 120.0
    links: Links = field(default_factory=Links)
    central: LocalMosquitto | None = None
    scada: Observer | None = None
    sites: list[Site] = field(default_factory=list)
    started_in_s: float = 0.0
    central_idle_rss_mb: float = 0.0
    """The central broker's resident memory before any bridge connected (the per-bridge cost's base)."""
    central_up_rss_mb: float = 0.0
    """The same once every site is online: every bridge connected, every retained state there."""

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        began = time.monotonic()
        ids = [site_id_of(n + 1) for n in range(self.sites_wanted)]
        central = LocalMosquitto(self.folder / "central", gateways=(), accesses=central_identities(ids))
        self.central = central.start()
        self.central_idle_rss_mb = process_rss_mb(central.pid)
        # Subscribed before any site exists, on a persistent session: nothing a site says is missed.
        self.scada = Observer(central.host, central.port, central.login(FLEET_SCADA), *SCADA_TOPICS,
                              session=SCADA_SESSION)
        for site_id in ids:
            folder = self.folder / site_id
            link = self.links.open(central.host, central.tls_port if self.tls else central.port)
            bridge = BridgeLink(site_id, link.host, link.port, central.password(bridge_identity(site_id)),
                                ca_file=central.ca_file if self.tls else None)
            broker = LocalMosquitto(folder / "broker", gateways=("loopback",), extra_config=bridge_lines(bridge))
            config = folder / "site.toml"
            folder.mkdir(parents=True, exist_ok=True)
            config.write_text(site_toml(site_id))
            broker.start()
            procs = ServiceProcesses(broker.host, broker.port, config, folder / "logs", folder / "data")
            site = Site(site_id, folder, broker, link, procs)
            self.sites.append(site)
            site.local = Observer(broker.host, broker.port, broker.login(HARNESS), EVENTS_ALL, OPERATOR_COMMANDS)
        # Every process of every site first, then the waits: their start-ups overlap.
        for site in self.sites:
            for name in CORE:
                site.procs.start(name)
        for site in self.sites:
            site.procs.wait_online(*CORE, timeout=self.online_timeout_s)
        self.started_in_s = time.monotonic() - began
        self.central_up_rss_mb = process_rss_mb(central.pid)

    def stop(self) -> None:
        for site in self.sites:
            with contextlib.suppress(Exception):
                site.procs.stop_all()
        for site in self.sites:
            if site.local is not None:
                site.local.close()
            site.broker.stop()
        if self.scada is not None:
            self.scada.close()
        if self.central is not None:
            self.central.stop()
        self.links.close()

    def site(self, site_id: str) -> Site:
        return next(s for s in self.sites if s.site_id == site_id)

