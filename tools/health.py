"""``qubit-health``: a container's (or a systemd unit's) health check.

Connects with the process's own broker identity and settings (QUBIT_MQTT_*: the same ones the
service uses, so a wrong password or CA fails the check too) and reads the service's own
retained ``qubit/services/<identity>/status``. Healthy when it says ``online`` and its health
is not Critical. One line on stdout, exit 0 (healthy) or 1 (not): what Docker's HEALTHCHECK
and ``systemctl``-driven probes expect.

    QUBIT_MQTT_USERNAME=planner qubit-health        # the identity is the service's name
    qubit-health --service gateway-ocpp --timeout 5

The client id is its own (``<identity>-health-<pid>``), clean session: probing never takes
over the service's persistent session.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.messages import ServiceStatus, decode
from coordinator.contract.topics import service_topic
from coordinator.runtime.mqtt import BrokerSettings
from coordinator.runtime.settings import settings

HEALTHY, UNHEALTHY = 0, 1
CRITICAL = "Critical"


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    line: str


def judge(service: str, payload: bytes | None) -> Verdict:
    """The verdict on ``service``'s retained status (``None``: no status retained)."""
    if payload is None:
        return Verdict(False, f"{service}: no retained status (not started, or never connected)")
    try:
        status = decode(ServiceStatus, payload)
    except Exception as exc:  # any undecodable status is simply not a healthy one
        return Verdict(False, f"{service}: undecodable status ({type(exc).__name__})")
    if status.service != service:
        return Verdict(False, f"{service}: status names another service ({status.service!r})")
    summary = f"{status.status} {status.lifecycle}/{status.operational}/{status.health}"
    if status.status != "online":
        return Verdict(False, f"{service}: {summary}")
    if status.health == CRITICAL:
        reasons = "; ".join(status.reasons) or "no reason given"
        return Verdict(False, f"{service}: {summary} ({reasons})")
    return Verdict(True, f"{service}: {summary}")


def read_status(broker: BrokerSettings, service: str, timeout: float) -> bytes | None:
    """The retained status of ``service``, or None if none arrives within ``timeout``.

    Raises ConnectionError when the broker refuses or cannot be reached."""
    connected: queue.Queue[int] = queue.Queue()
    inbox: queue.Queue[bytes] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{broker.username or service}-health-{os.getpid()}",
                         clean_session=True, protocol=paho.MQTTv311)
    broker.login.apply(client)
    topic = service_topic(service)
    client.on_connect = lambda c, u, flags, reason, props: connected.put(0 if not reason.is_failure else 1)
    client.on_message = lambda c, u, message: inbox.put(bytes(message.payload)) if message.retain else None
    try:
        client.connect(broker.host, broker.port, keepalive=10)
    except OSError as exc:
        raise ConnectionError(f"broker {broker.host}:{broker.port} unreachable ({type(exc).__name__})") from None
    client.loop_start()
    try:
        try:
            refused = connected.get(timeout=timeout)
        except queue.Empty:
            raise ConnectionError(f"broker {broker.host}:{broker.port}: no CONNACK in {timeout:g} s") from None
        if refused:
            raise ConnectionError(f"broker {broker.host}:{broker.port} refused {broker.username or 'anonymous'}")
        client.subscribe(topic, qos=1)
        try:
            return inbox.get(timeout=timeout)
        except queue.Empty:
            return None
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qubit-health", description=__doc__.split("\n\n")[0],
        epilog="Settings (environment): QUBIT_MQTT_HOST, QUBIT_MQTT_PORT, QUBIT_MQTT_USERNAME, "
               "QUBIT_MQTT_PASSWORD_FILE, QUBIT_MQTT_CA_FILE (docs/settings.md).")
    parser.add_argument("--service", help="whose status to read (default: QUBIT_MQTT_USERNAME, the own identity)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the broker and the status")
    args = parser.parse_args(argv)
    service = args.service or settings().mqtt_username
    if not service:
        print("qubit-health: no service: set QUBIT_MQTT_USERNAME or pass --service", file=sys.stderr)
        return UNHEALTHY
    try:
        verdict = judge(service, read_status(BrokerSettings.from_env(), service, args.timeout))
    except (ConnectionError, OSError) as exc:  # OSError: an unreadable password or CA file
        verdict = Verdict(False, f"{service}: {exc}" if isinstance(exc, ConnectionError)
                          else f"{service}: cannot read a credentials file ({type(exc).__name__})")
    print(verdict.line)
    return HEALTHY if verdict.healthy else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
