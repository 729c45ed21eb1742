"""qubit-health: the verdict on a retained status (pure), and the script against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.messages import ServiceStatus
from coordinator.contract.topics import service_topic
from tools.broker import LocalMosquitto, free_port
from tools.health import judge


def status(**changes: object) -> bytes:
    fields: dict[str, object] = {"service": "planner", "status": "online", "pid": 7, "lifecycle": "Running",
                                 "operational": "Active", "health": "Healthy", "at": datetime.now(UTC)}
    return ServiceStatus.model_validate(fields | changes).encode()


def test_online_and_not_critical_is_healthy() -> None:
    assert judge("planner", status()).healthy
    assert judge("planner", status(health="Degraded", reasons=["link to ast_bay_1 down"])).healthy


@pytest.mark.parametrize(("payload", "why"), [
    (None, "no retained status"),
    (status(status="offline"), "offline"),
    (status(health="Critical", reasons=["ledger unwritable"]), "ledger unwritable"),
    (status(service="tracker"), "another service"),
    (b"\xc1garbage", "undecodable"),
])
def test_anything_else_is_unhealthy_and_says_why(payload: bytes | None, why: str) -> None:
    verdict = judge("planner", payload)
    assert not verdict.healthy and why in verdict.line and "\n" not in verdict.line


def health(port: int, *args: str, login: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUBIT_MQTT_")}
    env |= (login or {}) | {"QUBIT_MQTT_HOST": "127.0.0.1", "QUBIT_MQTT_PORT": str(port),
                            "QUBIT_MQTT_USERNAME": "planner"}
    return subprocess.run([sys.executable, "-m", "tools.health", "--timeout", "3", *args],
                          env=env, capture_output=True, text=True, timeout=30)


def test_the_script_reads_the_own_retained_status_from_a_real_broker(tmp_path: Path) -> None:
    with LocalMosquitto(tmp_path / "broker") as broker:
        planner = broker.env("planner")
        assert health(broker.port, login=planner).returncode == 1  # nothing retained yet
        client = broker.login("planner").apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        client.connect(broker.host, broker.port)
        client.loop_start()
        client.publish(service_topic("planner"), status(), qos=1, retain=True).wait_for_publish(5)
        ok = health(broker.port, login=planner)
        assert ok.returncode == 0 and ok.stdout.startswith("planner: online"), ok.stdout + ok.stderr
        client.publish(service_topic("planner"), status(status="offline"), qos=1, retain=True).wait_for_publish(5)
        down = health(broker.port, login=planner)
        assert down.returncode == 1 and "offline" in down.stdout
        client.disconnect()
        client.loop_stop()


def test_no_broker_is_unhealthy_in_one_line() -> None:
    done = health(free_port())
    assert done.returncode == 1 and done.stdout.count("\n") == 1 and "unreachable" in done.stdout
