"""The simulator process: which chargers, where the CSMS is, the MQTT control channel, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import ssl
import threading
from collections.abc import Mapping, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.messages import ChargerControl, decode
from coordinator.contract.topics import simulator_topic
from coordinator.protocols.ocpp.internals import inline_validation
from coordinator.runtime.log_format import configure_logging
from coordinator.runtime.mqtt import BrokerSettings
from coordinator.runtime.service import SETTINGS_HELP, load_site
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG
from coordinator.site import AssetConfig, AssetKind, OcppListenConfig, Protocol, SiteConfig
from simulators.applied_log import AppliedLog
from simulators.chargepoint.charger import SimulatedCharger

log = logging.getLogger(__name__)

MAX_CONTROL_BYTES = 4096
WILDCARD_HOSTS = ("0.0.0.0", "", "::")
WAVE, WAVE_TIMEOUT = 200, 5.0
"""Chargers that connect at once, and how long a wave may take before the next one starts anyway."""


def default_url(listen: OcppListenConfig) -> str:
    """Where the gateway of ``[gateways.ocpp]`` listens, as a charger on this machine reaches it."""
    host = "127.0.0.1" if listen.host in WILDCARD_HOSTS else listen.host
    if ":" in host:
        host = f"[{host}]"
    return f"{'wss' if listen.tls_cert else 'ws'}://{host}:{listen.port}"


def client_tls_context(cafile: str | None) -> ssl.SSLContext:
    """How a simulated charger checks the gateway's wss:// certificate: against ``cafile`` (the
    site CA: --cafile, else [gateways.ocpp] ca_file), else the system's trust store; TLS 1.2 or later."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def chargers_of(site: SiteConfig, gateway_id: str, only: list[str] | None = None) -> list[AssetConfig]:
    """The gateway's ev_chargers with an [assets.ocpp] table, optionally only some charge point ids."""
    assets = [a for a in site.assets_of(gateway_id) if a.kind is AssetKind.EV_CHARGER and a.ocpp is not None]
    if only:
        by_id = {a.ocpp.charge_point_id: a for a in assets if a.ocpp is not None}
        unknown = sorted(set(only) - by_id.keys())
        if unknown:
            raise ValueError(f"no such charge point behind gateway {gateway_id!r}: {', '.join(unknown)}")
        assets = [a for cp_id, a in by_id.items() if cp_id in only]
    return assets


def parse_control(payload: bytes) -> tuple[str, str, float | None]:
    """A control message -> (charge_point_id, action, value); ValueError says what is wrong."""
    message = decode(ChargerControl, payload, max_bytes=MAX_CONTROL_BYTES)  # DecodeError is a ValueError
    return message.charge_point_id, message.action, None if message.value is None else float(message.value)


class ControlListener:
    """``qubit/sim/{gateway_id}`` -> ``SimulatedCharger.apply_control``, on the event loop.

    A plain clean-session client: control messages are for now, not to be replayed.
    """

    def __init__(self, gateway_id: str, chargers: Mapping[str, SimulatedCharger], loop: asyncio.AbstractEventLoop,
                 settings: BrokerSettings | None = None) -> None:
        self.topic = simulator_topic(gateway_id)
        self.chargers, self.loop = chargers, loop
        self.settings = settings or BrokerSettings.from_env()
        self._client = paho.Client(CallbackAPIVersion.VERSION2,
                                   client_id=f"qubit-chargepoint-sim-{gateway_id}-{os.getpid()}",
                                   clean_session=True, protocol=paho.MQTTv311)
        self.settings.login.apply(self._client)  # its identity is `simulator` (docs/security.md)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self.subscribed = threading.Event()
        """Set once the broker granted the control topic: controls sent from then on arrive."""
        self._client.on_subscribe = lambda client, userdata, mid, codes, properties: self.subscribed.set()

    def connect(self, timeout: float = 10.0) -> bool:
        """Blocking, until the control topic is subscribed (or ``timeout``); False (with a
        warning) when the broker cannot be reached."""
        try:
            self._client.connect(self.settings.host, self.settings.port, keepalive=30)
        except OSError as exc:
            log.warning("MQTT broker %s:%s not reachable (%s): running without the control channel",
                        self.settings.host, self.settings.port, exc)
            return False
        self._client.loop_start()
        if not self.subscribed.wait(timeout):
            log.warning("control channel %s not subscribed within %g s: controls sent now may be lost",
                        self.topic, timeout)
        return True

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker refused the control channel: %s", reason)
            return
        client.subscribe(self.topic, qos=1)  # renewed on every connect: the session is clean
        log.info("control channel: %s", self.topic)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self.dispatch, bytes(message.payload))  # paho's thread -> the loop

    def dispatch(self, payload: bytes) -> None:
        """One control message (runs on the event loop). Bad messages are logged, never raised."""
        try:
            cp_id, action, value = parse_control(payload)
        except ValueError as exc:
            log.warning("unreadable control message: %s", exc)
            return
        charger = self.chargers.get(cp_id)
        if charger is None:
            log.warning("control %r for unknown charge point %r ignored", action, cp_id)
            return
        try:
            charger.apply_control(action, value)
        except Exception:
            log.exception("%s: control %r failed", cp_id, action)


async def simulate(fleets: Mapping[str, Sequence[SimulatedCharger]], control: bool = True) -> None:
    """Run every charger of every gateway (gateway id -> its chargers) until SIGTERM/SIGINT,
    then close their websockets. One control channel per gateway."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The control channel first: a charger that has connected (DEVICE_LINK_UP) is one that
    # can be driven, so a control sent on seeing it is not lost to a subscription still on its way.
    listeners: list[ControlListener] = []
    if control:
        for gateway_id, fleet in fleets.items():
            listener = ControlListener(gateway_id, {c.charge_point_id: c for c in fleet}, loop)
            if await asyncio.to_thread(listener.connect):
                listeners.append(listener)
    chargers = [c for fleet in fleets.values() for c in fleet]
    for gateway_id, fleet in fleets.items():
        log.info("simulating %d chargers of %s against %s", len(fleet), gateway_id,
                 fleet[0].url.rsplit("/", 1)[0] if fleet else "-")
    tasks: list[asyncio.Task[None]] = []
    starting = asyncio.create_task(start_in_waves(chargers, tasks))
    await stop.wait()
    starting.cancel()
    log.info("stopping: closing %d connections", len(tasks))
    await asyncio.gather(*(c.stop() for c in chargers), return_exceptions=True)  # 1001 going away, each
    for task in tasks:  # a charger between connections (or still closing) is not waited for
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for listener in listeners:
        listener.stop()


async def start_in_waves(chargers: Sequence[SimulatedCharger], tasks: list[asyncio.Task[None]],
                         wave: int = WAVE, wave_timeout: float = WAVE_TIMEOUT) -> None:
    """Start the chargers ``wave`` at a time, each wave once the one before is online (or
    ``wave_timeout`` passed): thousands of opening handshakes at once overrun the CSMS's listen
    backlog and the handshake timeout, and every charger that times out starts over later."""
    for first in range(0, len(chargers), wave):
        batch = chargers[first:first + wave]
        tasks += [asyncio.create_task(c.run(), name=c.charge_point_id) for c in batch]
        waiting = [asyncio.create_task(c.online.wait()) for c in batch]
        _, pending = await asyncio.wait(waiting, timeout=wave_timeout)
        for task in pending:
            task.cancel()


def part_of(assets: Sequence[AssetConfig], part: int, parts: int) -> list[AssetConfig]:
    """Part ``part`` of ``parts`` near-equal runs of ``assets``, in their order (runs, not every
    Nth: a site that alternates something per charger, such as the version, keeps it mixed)."""
    return list(assets[part * len(assets) // parts:(part + 1) * len(assets) // parts])


def parse_part(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 0 <= K < N: which of N equal parts of the chargers a process runs."""
    try:
        part, parts = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N (two integers)") from None
    if not 0 <= part < parts:
        raise argparse.ArgumentTypeError(f"{text!r}: K must be at least 0 and below N")
    return part, parts


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit and return it: every charger holds a socket,
    and a soft limit of 1,024 (a common default) would refuse the 1,000th charger's connection."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the soft limit: a run that needs more says so in its connect errors
    return soft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="OCPP 1.6J / 2.0.1 charge point simulator for the site's chargers",
                                     epilog=SETTINGS_HELP)
    parser.add_argument("--site-config", help=f"default: $QUBIT_SITE_CONFIG or {DEFAULT_SITE_CONFIG.name}")
    parser.add_argument("--gateway-id", action="append", metavar="ID",
                        help="the OCPP gateway whose chargers to simulate (default ocpp; repeatable: one process "
                             "for the chargers of several gateways)")
    parser.add_argument("--url", help="CSMS base URL, ws://host:port (default: from [gateways.ocpp])")
    parser.add_argument("--cafile", help="PEM file of the CA (or self-signed certificate) to trust for wss:// "
                             "(default: [gateways.ocpp] ca_file of the site config, else the system's CAs)")
    parser.add_argument("--only", action="append", metavar="CP_ID", help="simulate only this charge point (repeatable)")
    parser.add_argument("--part", type=parse_part, metavar="K/N", default=(0, 1),
                        help="simulate only part K of N (0-based; of each gateway's chargers, in site order): N "
                             "processes share a site too large for one (default 0/1, every charger)")
    parser.add_argument("--meter-interval", type=float, default=5.0, help="seconds between meter values (default 5)")
    parser.add_argument("--no-control", action="store_true", help="do not connect to MQTT for control messages")
    parser.add_argument("--applied-log", metavar="PATH",
                        help="append one JSON line per setpoint a charger applies (simulators/applied_log.py)")
    parser.add_argument("--no-validation", action="store_true",
                        help="do not check CSMS calls, nor the chargers' own calls and their answers, "
                             "against the OCPP schemas (load tests with many chargers)")
    args = parser.parse_args(argv)
    configure_logging("chargepoint-simulator")
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("ocpp").setLevel(logging.WARNING)  # it logs every message at INFO
    gateway_ids = list(dict.fromkeys(args.gateway_id or ["ocpp"]))
    if (args.url or args.only) and len(gateway_ids) > 1:
        parser.error("--url and --only name one gateway's CSMS and chargers: give them with one --gateway-id only")
    if args.meter_interval <= 0:
        parser.error("--meter-interval must be positive")
    # Validation in executor threads costs more than it saves with many chargers in one process (field notes).
    inline_validation()
    raise_open_files_limit()
    applied_log = AppliedLog(args.applied_log) if args.applied_log else None
    fleets: dict[str, list[SimulatedCharger]] = {}
    for gateway_id in gateway_ids:
        site = load_site(args.site_config, secrets_for=gateway_id)
        gateway = site.gateway(gateway_id)
        if gateway is None or gateway.protocol is not Protocol.OCPP:
            parser.error(f"{gateway_id!r} is not an ocpp gateway of the site config")
        try:
            assets = chargers_of(site, gateway_id, args.only)
        except ValueError as exc:
            parser.error(str(exc))
        if not assets:
            parser.error(f"gateway {gateway_id!r} has no ev_charger with an [assets.ocpp] table")
        assets = part_of(assets, *args.part)
        listen = gateway.ocpp or OcppListenConfig()
        url = args.url or default_url(listen)
        context = client_tls_context(args.cafile or listen.ca_file) if url.startswith("wss://") else None
        if applied_log is not None:
            applied_log.boot(a.asset_id for a in assets)
        fleets[gateway_id] = [SimulatedCharger(a, url, ssl_context=context, meter_interval=args.meter_interval,
                                               validate_calls=not args.no_validation, applied_log=applied_log)
                              for a in assets]
    asyncio.run(simulate(fleets, control=not args.no_control))
    return 0
