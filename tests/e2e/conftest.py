"""End-to-end fixtures: a private Mosquitto and the services as real OS processes."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import DecodeError, decode_event
from coordinator.contract.topics import EVENTS_ALL
from coordinator.events import Event
from tools.broker import free_port, start_broker, wait_for_port
from tools.bus_access import HARNESS
from tools.launcher import ServiceProcesses

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "tests" / "sites" / "loopback.toml"


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker")
    yield b
    b.stop()


class PlainClient:
    """A bare paho client, as an integrator's SCADA would use: no project code in the loop but
    the login. ``identity``: who it is on the broker; ``harness`` (the test broker's
    everything-identity) plays a stolen identity, a role or service name plays that one."""

    def __init__(self, broker, *topics: str, identity: str = HARNESS) -> None:
        """Returns once the broker confirmed every subscription (its SUBACKs)."""
        self.identity = identity
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = broker.login(identity).apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        self.client.on_message = lambda c, u, m: self.inbox.put(m)
        granted: queue.Queue[int] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: granted.put(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        waiting = {self.client.subscribe(topic, qos=1)[1] for topic in topics}
        while waiting:
            waiting.discard(granted.get(timeout=5))

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def drain(self, timeout: float = 0.0) -> list[paho.MQTTMessage]:
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                out.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return out

    def close(self) -> None:
        # disconnect first: it wakes paho's network thread, which then ends at once; stopped
        # first, the thread sits out its 1 s select before it sees the request (0.8 s a client)
        self.client.disconnect()
        self.client.loop_stop()


class EventLog(PlainClient):
    """Everything on qubit/events/#, decoded."""

    def __init__(self, broker, identity: str = HARNESS) -> None:
        super().__init__(broker, EVENTS_ALL, identity=identity)
        self.events: list[Event] = []
        self.topics: list[str] = []

    def collect(self, timeout: float = 0.2):
        for m in self.drain(timeout):
            try:
                self.events.append(decode_event(bytes(m.payload)))
                self.topics.append(m.topic)
            except DecodeError as exc:
                raise AssertionError(f"undecodable event on {m.topic}: {exc.reason}") from exc
        return self.events

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect(0.2)
            if predicate(self.events):
                return self.events
        raise AssertionError(f"timed out waiting for {what}; saw {[e.event_type.value for e in self.events][-30:]}")

    def of(self, event_type: str):
        return [e for e in self.events if e.event_type.value == event_type]


@pytest.fixture
def stack(broker, tmp_path):
    s = ServiceProcesses(broker.host, broker.port, SITE, tmp_path / "logs")
    yield s
    s.stop_all()


@pytest.fixture
def events(broker):
    log = EventLog(broker)
    yield log
    log.close()


@pytest.fixture
def plain(broker):
    """plain(*topics, identity="harness") -> a bare paho client subscribed to topics; closed
    after the test."""
    made = []

    def make(*topics: str, identity: str = HARNESS) -> PlainClient:
        made.append(PlainClient(broker, *topics, identity=identity))
        return made[-1]

    yield make
    for client in made:
        client.close()


PASSWORD = "ocpp-test-password-123"

OCPP_SITE = """
site_id = "sit_ocpp_test"

[coordinator]
dispatch_interval_seconds = 0.2
command_timeout_seconds = {timeout}
max_retries = 0

[[gateways]]
gateway_id = "ocpp"
protocol = "ocpp"
[gateways.ocpp]
host = "127.0.0.1"
port = {port}

[[assets]]
asset_id = "ast_bay_1"
kind = "ev_charger"
gateway_id = "ocpp"
max_power_kw = 22.0
[assets.ocpp]
charge_point_id = "CP001"
password = "{password1}"
version = "{version}"

[[assets]]
asset_id = "ast_bay_2"
kind = "ev_charger"
gateway_id = "ocpp"
max_power_kw = 22.0
[assets.ocpp]
charge_point_id = "CP002"
password = "{password2}"
version = "{version}"
"""

OCPP_CORE = ("ingester", "planner", "tracker", "gateway-ocpp")


@pytest.fixture
def ocpp_site_template():
    """(site config template, charger password) for tests that start their own OCPP gateway."""
    return OCPP_SITE, PASSWORD


@pytest.fixture(params=["1.6", "2.0.1"])
def version(request):
    return request.param


class OcppStack(ServiceProcesses):
    """The OCPP core processes, with what a test needs to write a charger-side config."""

    def __init__(self, host: str, port: int, site_config: Path, logs: Path, *, ocpp_port: int) -> None:
        super().__init__(host, port, site_config, logs)
        self.ocpp_port = ocpp_port
        self.password, self.site_template = PASSWORD, OCPP_SITE


@pytest.fixture
def ocpp_stack(broker, tmp_path, version):
    port = free_port()
    path = tmp_path / "site.toml"
    path.write_text(OCPP_SITE.format(port=port, version=version, timeout=3.0, password1=PASSWORD, password2=PASSWORD))
    procs = OcppStack(broker.host, broker.port, path, tmp_path / "logs", ocpp_port=port)
    procs.start_all(OCPP_CORE)
    assert wait_for_port("127.0.0.1", port, 10)
    yield procs
    procs.stop_all()


class OcppTlsStack(OcppStack):
    """The OCPP core on security profile 2: wss:// with a site CA, a password file per charger."""

    def __init__(self, host: str, port: int, site_config: Path, logs: Path, *, ocpp_port: int, secrets: Path) -> None:
        super().__init__(host, port, site_config, logs, ocpp_port=ocpp_port)
        self.secrets = secrets
        self.ca_file = secrets / "ca.crt"
        self.url = f"wss://127.0.0.1:{ocpp_port}"

    def password_of(self, cp_id: str) -> str:
        return (self.secrets / "chargers" / f"{cp_id}.password").read_text().strip()


def ocpp_tls_site(port: int, version: str) -> str:
    """OCPP_SITE with the sample's profile 2 settings: relative paths into secrets/ beside it."""
    text = OCPP_SITE.format(port=port, version=version, timeout=3.0, password1=PASSWORD, password2=PASSWORD)
    for cp_id in ("CP001", "CP002"):
        text = text.replace(f'password = "{PASSWORD}"', f'password_file = "secrets/chargers/{cp_id}.password"', 1)
    return text.replace(f"port = {port}\n", f'port = {port}\ntls_cert = "secrets/ocpp/server.crt"\n'
                        f'tls_key = "secrets/ocpp/server.key"\nca_file = "secrets/ca.crt"\n', 1)


@pytest.fixture
def ocpp_tls_stack(broker, tmp_path, version):
    from tools.credentials import SiteFacts, provision_ocpp

    port = free_port()
    provision_ocpp(tmp_path / "secrets", SiteFacts("sit_ocpp_test", (), ("CP001", "CP002")))
    path = tmp_path / "site.toml"
    path.write_text(ocpp_tls_site(port, version))
    procs = OcppTlsStack(broker.host, broker.port, path, tmp_path / "logs", ocpp_port=port,
                         secrets=tmp_path / "secrets")
    procs.start_all(OCPP_CORE)
    assert wait_for_port("127.0.0.1", port, 10)
    yield procs
    procs.stop_all()
