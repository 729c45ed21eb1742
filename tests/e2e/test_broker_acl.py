"""The bus on a real broker, as shipped: who may connect, publish and read (docs/security.md).

A publish the ACL denies is dropped by Mosquitto without a word to the sender (MQTT 3.1.1
cannot say), so each denial is proven by its absence: a harness client subscribed to ``#``
receives a marker sent after the denied message, over the same path, and the denied one
never came before it (the broker keeps one sender's messages in order)."""

from __future__ import annotations

import os
import queue
import ssl
import subprocess
import threading

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.runtime.mqtt import (
    EXIT_CREDENTIALS_REFUSED,
    BrokerLogin,
    BrokerSettings,
    MqttClient,
    refused_credentials,
)
from tools.broker import can_log_in

pytestmark = pytest.mark.timeout(60)

MARK = b"marker"


class Connected:
    """A raw paho client logged in as ``identity`` (a stolen identity, as an attacker uses it)."""

    def __init__(self, broker, identity: str, *, client_id: str = "") -> None:
        self.identity, self.broker = identity, broker
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = broker.login(identity).apply(
            paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311))
        self.client.on_message = lambda c, u, m: self.inbox.put(m)
        granted: queue.Queue[object] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, codes, p: granted.put(codes)
        self._granted = granted
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, reason, p: connected.set() if not reason.is_failure else None
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(5), f"{identity} could not log in"

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        self._granted.get(timeout=5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        # The broker acknowledges a denied QoS 1 publish too: it has been handled (dropped) by then.
        info = self.client.publish(topic, payload, qos=1, retain=retain)  # once per connection, if denied
        info.wait_for_publish(5)
        assert info.is_published(), f"{self.identity}: no PUBACK for {topic}"

    def until_marker(self, topic: str, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Everything received up to the marker on ``topic`` (the marker excluded)."""
        seen: list[tuple[str, bytes]] = []
        while True:
            m = self.inbox.get(timeout=timeout)
            if m.topic == topic and bytes(m.payload) == MARK:
                return seen
            seen.append((m.topic, bytes(m.payload)))

    def close(self) -> None:
        self.client.disconnect()  # first: a client the broker closed on must not retry
        self.client.loop_stop()


@pytest.fixture
def connect(broker):
    made: list[Connected] = []

    def make(identity: str, **kw) -> Connected:
        made.append(Connected(broker, identity, **kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


def arrived(connect, identity: str, attempts: list[str], retain: bool = False) -> set[str]:
    """The topics of ``attempts`` (each published as ``identity``, on a connection of its own:
    Mosquitto 2.0.11 acknowledges a denied publish, then closes the connection) that reached
    a harness reading ``#`` (retained messages it finds on subscribing excluded). The
    harness's marker, sent once each attempt was acknowledged, comes after anything the
    broker routed."""
    watcher = connect("harness")
    watcher.subscribe("#")
    watcher.publish("qubit/test/marker", MARK)
    retained = {topic for topic, _ in watcher.until_marker("qubit/test/marker")}
    broker = watcher.broker
    env = os.environ | broker.mosquitto_tools_env(identity)
    for topic in attempts:  # mosquitto_pub: a C client that exits once its PUBACK is in
        subprocess.run(["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", topic,
                        "-m", f"forged by {identity}", *(["-r"] if retain else [])], env=env, check=True, timeout=10)
    watcher.publish("qubit/test/marker", MARK)
    return {topic for topic, _ in watcher.until_marker("qubit/test/marker")} - retained


EVERYTHING = [
    "qubit/schedules/in", "qubit/schedules/accepted", "qubit/commands/loopback", "qubit/results/loopback",
    "qubit/results/modbus", "qubit/status/loopback/ast_1", "qubit/status/modbus/ast_1",
    "qubit/telemetry/modbus/ast_1", "qubit/state/ast_1", "qubit/control/emergency_stop",
    "qubit/services/planner/status", "qubit/services/tracker/status", "qubit/query/requests",
    "qubit/query/replies/cli_1", "qubit/sim/loopback", "qubit/operator/hold", "qubit/events/FORGED/site",
    "something/else",
]
"""One topic of every family: what a stolen identity would try."""

MAY_PUBLISH = {
    "ingester": {"qubit/schedules/accepted", "qubit/events/FORGED/site"},
    "planner": {"qubit/commands/loopback", "qubit/query/replies/cli_1", "qubit/events/FORGED/site",
                "qubit/services/planner/status"},
    "tracker": {"qubit/state/ast_1", "qubit/query/replies/cli_1", "qubit/events/FORGED/site",
                "qubit/services/tracker/status"},
    "gateway-loopback": {"qubit/results/loopback", "qubit/status/loopback/ast_1", "qubit/events/FORGED/site"},
    "gateway-modbus": {"qubit/results/modbus", "qubit/status/modbus/ast_1", "qubit/telemetry/modbus/ast_1",
                       "qubit/events/FORGED/site"},
    "layer3": {"qubit/schedules/in"},
    "scada": set(),
    "operator": {"qubit/control/emergency_stop", "qubit/query/requests", "qubit/operator/hold"},
    "simulator": {"qubit/sim/loopback"},
    "health": set(),
}


@pytest.mark.parametrize("identity", sorted(MAY_PUBLISH))
def test_each_identity_publishes_exactly_its_topics(broker, connect, identity):
    assert arrived(connect, identity, EVERYTHING) == MAY_PUBLISH[identity]


def test_scada_publishing_anything_is_dropped_even_its_own_status(broker, connect):
    assert arrived(connect, "scada", [*EVERYTHING, "qubit/services/scada/status", "qubit/events/x/y"]) == set()


def test_only_the_operator_sets_the_emergency_stop(broker, connect):
    stop = "qubit/control/emergency_stop"
    for identity in sorted(set(MAY_PUBLISH) - {"operator"}):
        assert stop not in arrived(connect, identity, [stop]), identity
    assert arrived(connect, "operator", [stop]) == {stop}


def test_a_service_cannot_overwrite_another_services_retained_status(broker, connect):
    planner = connect("planner")
    planner.publish("qubit/services/planner/status", b"the planner's own", retain=True)
    for identity in ("tracker", "ingester", "gateway-loopback", "operator"):
        arrived(connect, identity, ["qubit/services/planner/status"], retain=True)
    late = connect("scada")
    late.subscribe("qubit/services/planner/status")
    m = late.inbox.get(timeout=5)
    assert (bytes(m.payload), m.retain) == (b"the planner's own", True)


def test_a_service_publishes_its_own_status_and_reads_it_back(broker, connect):
    tracker = connect("tracker")
    tracker.publish("qubit/services/tracker/status", b"online", retain=True)
    tracker.subscribe("qubit/services/tracker/status")  # a container healthcheck does this
    assert bytes(tracker.inbox.get(timeout=5).payload) == b"online"


def test_a_gateway_reads_its_own_commands_never_another_gateways(broker, connect):
    harness = connect("harness")
    modbus = connect("gateway-modbus")
    modbus.subscribe("qubit/commands/loopback")  # another gateway's: never delivered
    modbus.subscribe("qubit/commands/modbus")
    harness.publish("qubit/commands/loopback", b"not for modbus")
    harness.publish("qubit/commands/modbus", MARK)
    assert modbus.until_marker("qubit/commands/modbus") == []


def test_scada_reads_what_it_watches_and_not_the_commands(broker, connect):
    scada = connect("scada")
    for topic in ("qubit/#", "qubit/events/#"):
        scada.subscribe(topic)
    harness = connect("harness")
    for topic in ("qubit/commands/loopback", "qubit/schedules/in", "qubit/results/loopback",
                  "qubit/query/requests", "qubit/state/ast_1"):
        harness.publish(topic, b"x")
    harness.publish("qubit/events/MARK/site", MARK)
    seen = scada.until_marker("qubit/events/MARK/site")
    assert {t for t, _ in seen} == {"qubit/state/ast_1"}


def test_an_anonymous_client_is_refused(broker):
    assert not can_log_in(broker.host, broker.port, BrokerLogin())


def test_a_wrong_password_is_refused_as_bad_credentials(broker):
    reasons: queue.Queue[object] = queue.Queue()
    client = BrokerLogin("planner", "not-the-password").apply(paho.Client(CallbackAPIVersion.VERSION2,
                                                                          protocol=paho.MQTTv311))
    client.on_connect = lambda c, u, f, reason, p: reasons.put(reason)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert refused_credentials(reasons.get(timeout=5))
    finally:
        client.disconnect()
        client.loop_stop()
    assert not can_log_in(broker.host, broker.port, BrokerLogin("nobody", "whatever-whatever"))


def test_the_harness_identity_is_for_test_brokers_only(tmp_path):
    from tools.credentials import SiteFacts, provision

    written = provision(tmp_path / "site", SiteFacts("sit_x", ("loopback",)), ocpp=False)
    assert "harness" not in {a.identity for a in written.accesses}
    assert "harness" not in (tmp_path / "site" / "broker" / "acl").read_text()


def test_the_tls_listener_takes_a_client_that_trusts_the_site_ca_only(broker):
    assert can_log_in(broker.host, broker.tls_port, broker.login("scada", tls=True))
    assert not can_log_in(broker.host, broker.tls_port, broker.login("scada"), timeout=2)  # plain MQTT on TLS

    # TLS with the system's CAs, not the site's: the broker's certificate is not trusted
    client = broker.login("scada").apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
    client.tls_set()
    with pytest.raises(ssl.SSLError):
        client.connect(broker.host, broker.tls_port)


def test_a_service_whose_credentials_are_refused_says_so_and_exits_78(broker, stack, tmp_path):
    wrong = tmp_path / "tracker.password"
    wrong.write_text("not-the-tracker-password\n")
    stack.logins = lambda identity: broker.env(identity) | {"QUBIT_MQTT_PASSWORD_FILE": str(wrong)}
    stack.start("tracker")
    assert stack.procs["tracker"].wait(30) == EXIT_CREDENTIALS_REFUSED
    log = stack.log("tracker")
    assert "refused our credentials" in log and "as user tracker" in log
    assert "not reachable" not in log and "not-the-tracker-password" not in log


def test_a_service_client_connects_over_tls_with_the_ca_from_its_settings(broker):
    client = MqttClient("tls-test", BrokerSettings.at(broker.host, broker.tls_port, broker.login("scada", tls=True)),
                        persistent=False)
    client.start(timeout=5)
    try:
        assert client.connected.is_set() and not client.refused.is_set()
    finally:
        client.stop()


def test_the_health_identity_reads_the_broker_uptime_and_nothing_else(broker, connect):
    health = connect("health")
    health.subscribe("$SYS/broker/uptime")  # the broker container's healthcheck
    assert health.inbox.get(timeout=20).topic == "$SYS/broker/uptime"
    assert arrived(connect, "health", ["qubit/services/health/status"]) == set()
