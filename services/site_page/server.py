"""The site page's process: one event loop with the MQTT client (read-only ``scada``) and an
aiohttp web server; the browser gets the page once and then every change as Server-Sent Events.

    QUBIT_MQTT_USERNAME=scada QUBIT_MQTT_PASSWORD_FILE=... qubit-site-page --site-config deploy/site.toml

Read-only by construction: the broker lets ``scada`` publish nothing, and the web server has
GET routes only. It has no login of its own: keep it on 127.0.0.1 (the default) or behind a
reverse proxy that authenticates (docs/site-page.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.messages import AssetStateMessage, ServiceStatus, Telemetry, WireModel, decode
from coordinator.contract.topics import ASSET_STATES_ALL, EVENTS_ALL, ROOT, SERVICES_ALL, last_level
from coordinator.runtime.log_format import configure_logging
from coordinator.runtime.mqtt import EXIT_CREDENTIALS_REFUSED, BrokerSettings, CredentialsRefused, MqttClient
from coordinator.runtime.service import load_site
from coordinator.runtime.settings import Settings
from coordinator.runtime.settings import settings as process_settings
from coordinator.site import SiteConfig
from services.site_page.view import SiteView

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
TELEMETRY_ALL = f"{ROOT}/telemetry/+/+"

PUSH_INTERVAL = 0.5
"""Seconds between two pushes at most: a busy bus redraws the page twice a second, not per message."""
KEEPALIVE_SECONDS = 15.0
"""An SSE comment this often when nothing changes, so proxies do not close an idle stream."""
MAX_STREAMS = 32
"""Browsers watching at once; more are answered 503 (the page is for a control room, not the internet)."""

SECURITY_HEADERS = {
    # Nothing but our own files: no inline script, no CDN, no frame around us.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FILES = {"page.js": "text/javascript", "page.css": "text/css"}


class BusFeed:
    """The MQTT side: every message decoded into the view, or counted and dropped. The bus is
    untrusted: a message that cannot be read, or whose topic names another asset or gateway
    than its content, changes nothing."""

    def __init__(self, site: SiteConfig, view: SiteView) -> None:
        self.view = view
        self.gateway_of = {a.asset_id: a.gateway_id for a in site.assets}
        self.refused = 0

    def routes(self) -> list[tuple[str, Callable[[str, bytes], None]]]:
        return [(ASSET_STATES_ALL, self.on_state), (TELEMETRY_ALL, self.on_telemetry),
                (SERVICES_ALL, self.on_service), (EVENTS_ALL, self.on_event)]

    def _read(self, model: type[WireModel], topic: str, data: bytes) -> WireModel | None:
        try:
            return decode(model, data)
        except DecodeError as exc:
            self._refuse(topic, exc.reason)
            return None

    def _refuse(self, topic: str, why: str) -> None:
        self.refused += 1
        log.debug("ignored a message on %s: %s", topic, why)

    def on_state(self, topic: str, data: bytes) -> None:
        msg = self._read(AssetStateMessage, topic, data)
        if isinstance(msg, AssetStateMessage):
            if last_level(topic) != msg.asset_id:
                return self._refuse(topic, "state of another asset")
            self.view.on_asset_state(msg)

    def on_telemetry(self, topic: str, data: bytes) -> None:
        msg = self._read(Telemetry, topic, data)
        if isinstance(msg, Telemetry):
            levels = topic.split("/")
            if levels[-1] != msg.asset_id or self.gateway_of.get(msg.asset_id) != levels[-2]:
                return self._refuse(topic, "telemetry on another asset's or gateway's topic")
            self.view.on_telemetry(msg)

    def on_service(self, topic: str, data: bytes) -> None:
        msg = self._read(ServiceStatus, topic, data)
        if isinstance(msg, ServiceStatus):
            if topic.split("/")[-2] != msg.service:
                return self._refuse(topic, "status of another service")
            self.view.on_service(msg)

    def on_event(self, topic: str, data: bytes) -> None:
        try:
            event = decode_event(data)
        except DecodeError as exc:
            return self._refuse(topic, exc.reason)
        self.view.on_event(event)


class Pusher:
    """Wakes every open stream when the view changed, at most every PUSH_INTERVAL seconds."""

    def __init__(self, view: SiteView) -> None:
        self.view = view
        self.changed = asyncio.Event()
        self.streams = 0
        self.stopping = False
        self._sent = -1

    def check(self) -> None:
        if self.view.version != self._sent or self.stopping:
            self._sent = self.view.version
            self.changed.set()
            self.changed = asyncio.Event()  # waiters hold the old one, which is now set

    async def run(self) -> None:
        while True:
            self.check()
            await asyncio.sleep(PUSH_INTERVAL)


def snapshot_of(view: SiteView, feed: BusFeed, client: MqttClient | None) -> dict[str, object]:
    return view.snapshot() | {"broker_connected": bool(client and client.connected.is_set()),
                              "refused": feed.refused}


def make_app(view: SiteView, feed: BusFeed, pusher: Pusher, client: MqttClient | None = None) -> web.Application:
    """The web side: the page, its two static files, the snapshot as JSON, and the stream."""

    @web.middleware
    async def secure(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def index(request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in FILES:  # a fixed list: no path from the request ever reaches the file system
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=FILES[name], charset="utf-8")

    async def snapshot(request: web.Request) -> web.Response:
        return web.json_response(snapshot_of(view, feed, client))

    async def stream(request: web.Request) -> web.StreamResponse:
        if pusher.streams >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text="too many open pages")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        response.headers.update(SECURITY_HEADERS)
        await response.prepare(request)
        pusher.streams += 1
        try:
            while not pusher.stopping:
                data = json.dumps(snapshot_of(view, feed, client), separators=(",", ":"))
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                changed = pusher.changed
                try:
                    await asyncio.wait_for(changed.wait(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    await changed.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            pusher.streams -= 1
        return response

    app = web.Application(middlewares=[secure])
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/stream", stream)
    return app


@asynccontextmanager
async def serving(app: web.Application, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on host:port on the running loop; yields the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    bound = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port  # type: ignore[attr-defined]
    try:
        yield bound
    finally:
        await runner.cleanup()


async def serve(site: SiteConfig, settings: Settings) -> int:
    view = SiteView(site)
    feed = BusFeed(site, view)
    pusher = Pusher(view)
    client = MqttClient("site-page", BrokerSettings.from_env(), client_id=f"qubit-site-page-{os.getpid()}",
                        persistent=False)  # retained states and statuses come again on every connect
    for topic_filter, handler in feed.routes():
        client.subscribe(topic_filter, handler, qos=0)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    app = make_app(view, feed, pusher, client)
    async with serving(app, settings.page_host, settings.page_port) as port:
        log.info("site page of %s on http://%s:%d/ (read-only, no login: keep it behind the site's network)",
                 site.site_id, settings.page_host, port)
        if not await client.open():
            log.warning("broker not reachable yet; the page says so and fills in once it is")
        ticker = loop.create_task(pusher.run(), name="site-page-push")
        await stopping.wait()
        pusher.stopping = True
        pusher.check()
        ticker.cancel()
    await client.close()
    log.info("site page stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qubit-site-page",
        description="The live site page: assets, schedule against what was applied, commands, services, "
                    "emergency stop. Reads QUBIT_PAGE_HOST (default 127.0.0.1), QUBIT_PAGE_PORT (default 8090), "
                    "QUBIT_SITE_CONFIG, QUBIT_MQTT_HOST/PORT/USERNAME/PASSWORD_FILE/CA_FILE (log in as scada), "
                    "QUBIT_LOG_LEVEL/FORMAT. No login of its own: see docs/site-page.md.")
    parser.add_argument("--site-config", help="site config file (default: $QUBIT_SITE_CONFIG or deploy/site.toml)")
    args = parser.parse_args(argv)
    settings = process_settings()
    site = load_site(args.site_config)
    configure_logging("site-page")
    try:
        return asyncio.run(serve(site, settings))
    except CredentialsRefused as exc:
        log.critical("site-page exits: %s", exc)
        return EXIT_CREDENTIALS_REFUSED


if __name__ == "__main__":
    raise SystemExit(main())
