"""The compose deployment, run for real: deploy/compose.yaml + compose.host.yaml on a Docker engine.

Build the images (offline: tests/deploy/conftest.py), make a small site's credentials and config
(every asset behind the loopback gateway; every port free-picked on 127.0.0.1), ``up``, wait
until every container is healthy, publish a schedule as ``layer3`` over TLS, watch it as
``scada``, crash the planner and see it come back, ``down`` and ``up`` again, and ask the
planner's ledger, as ``operator`` inside the stack, what became of the schedule.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pandas as pd
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.codec import decode_event, encode_schedule
from coordinator.contract.topics import EVENTS_ALL, SCHEDULES_IN
from coordinator.events import Event
from coordinator.runtime.mqtt import BrokerLogin
from coordinator.schedule import schedule_to_commands
from tests.deploy.docker_images import DEPLOY, REPO, Engine, Images, run
from tools.broker import free_port
from tools.credentials import DEFAULT_HOSTNAMES, SiteFacts, provision

pytestmark = pytest.mark.timeout(900)

SERVICES = ("mosquitto", "ingester", "planner", "tracker", "gateway-loopback")
ASSET_MAP = {"ev_007": "ast_bay_1", "ev_012": "ast_bay_2", "battery": "ast_batt_001"}
SLOT = timedelta(seconds=8)
SITE_UID = 10001
"""The containers' user (deploy/Dockerfile): the mounted secrets must be readable by it."""


class HealthLog:
    """Every ``health_status`` event of the project's containers, from ``docker events``: the
    check waits on these, never on a guessed delay."""

    def __init__(self, engine: Engine, project: str) -> None:
        self._cond = threading.Condition()
        self.seen: list[tuple[int, str, str]] = []  # (time ns, compose service, status)
        self._proc = subprocess.Popen(
            ["docker", "events", "--filter", "event=health_status",
             "--filter", f"label=com.docker.compose.project={project}", "--format", "{{json .}}"],
            stdout=subprocess.PIPE, text=True, env=engine.env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            event = json.loads(line)
            attributes = event.get("Actor", {}).get("Attributes", {})
            status = event.get("status", "").removeprefix("health_status: ")
            with self._cond:
                self.seen.append((int(event["timeNano"]), attributes.get("com.docker.compose.service", "?"), status))
                self._cond.notify_all()

    def wait_healthy(self, services: tuple[str, ...], since_ns: int, timeout: float, why: str) -> None:
        def missing() -> set[str]:
            healthy = {s for t, s, status in self.seen if t >= since_ns and status == "healthy"}
            return set(services) - healthy
        with self._cond:
            if not self._cond.wait_for(lambda: not missing(), timeout):
                raise AssertionError(f"{why}: not healthy within {timeout:g} s: {sorted(missing())}; seen {self.seen}")

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)


@dataclass
class Stack:
    engine: Engine
    project: str
    env: dict[str, str]
    secrets: Path
    tls_port: int
    health: HealthLog = field(init=False)

    def __post_init__(self) -> None:
        self.health = HealthLog(self.engine, self.project)

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("docker-compose", "-p", self.project, "-f", str(DEPLOY / "compose.yaml"),
                   "-f", str(DEPLOY / "compose.host.yaml"), *args, env=self.env, timeout=timeout, check=check)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def inspect(self, service: str, template: str) -> str:
        return run("docker", "inspect", "-f", template, self.container(service), env=self.engine.env).stdout.strip()

    def up(self, timeout: float = 180) -> None:
        since = time.time_ns()
        self.compose("up", "-d", "--no-build", *SERVICES)
        self.health.wait_healthy(SERVICES, since, timeout, "after up")

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout[-12000:]


class BusClient:
    """A bare paho client over the TLS listener, as Layer 3's or SCADA's own software would be."""

    def __init__(self, stack: Stack, identity: str, *subscriptions: str) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()
        granted: queue.Queue[int] = queue.Queue()
        connected: queue.Queue[bool] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"check-{identity}-{uuid.uuid4().hex[:6]}",
                                  protocol=paho.MQTTv311)
        password = (stack.secrets / "clients" / f"{identity}.password").read_text().strip()
        BrokerLogin(identity, password, ca_file=stack.secrets / "ca.crt").apply(self.client)
        self.client.on_connect = lambda c, u, f, reason, p: connected.put(not reason.is_failure)
        self.client.on_subscribe = lambda c, u, mid, codes, p: granted.put(mid)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", stack.tls_port)
        self.client.loop_start()
        assert connected.get(timeout=10), f"{identity} refused by the broker"
        waiting = {self.client.subscribe(topic, qos=1)[1] for topic in subscriptions}
        while waiting:
            waiting.discard(granted.get(timeout=10))

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        if message.topic.startswith("qubit/events/"):
            with self._cond:
                self.events.append(decode_event(bytes(message.payload)))
                self._cond.notify_all()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"{topic}: not acknowledged by the broker"

    def of(self, event_type: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.event_type.value == event_type]

    def wait_for(self, predicate: Callable[[BusClient], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self), timeout):
                seen = sorted({e.event_type.value for e in self.events})
                raise AssertionError(f"{what}: not within {timeout:g} s (event types seen: {seen})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def loopback_site(path: Path) -> Path:
    """The demo depot's assets behind one loopback gateway: the stack without device simulators."""
    path.write_text((REPO / "tests" / "sites" / "loopback.toml").read_text())
    return path


def schedule(start: datetime) -> pd.DataFrame:
    index = pd.date_range(start, periods=4, freq=SLOT)
    return pd.DataFrame({"ev_007_kw": [22, 11, 11, 0], "ev_012_kw": [11, 22, 7, 0],
                         "battery_charge_kw": [30, 0, 20, 20], "battery_discharge_kw": [0, 25, 0, 0],
                         "price_per_kwh": [0.1, 0.3, 0.1, 0.1]}, index=index, dtype=float)


def key(asset_id: str, command_type: str, at: object) -> tuple[str, str, str]:
    return asset_id, str(command_type), pd.Timestamp(at).isoformat()  # type: ignore[arg-type]


def completed_keys(client: BusClient) -> set[tuple[str, str, str]]:
    payloads = [e.payload for e in client.of("COMMAND_COMPLETED")]
    return {key(p["asset_id"], p["command_type"], p["scheduled_at"]) for p in payloads}


@pytest.fixture
def stack(engine: Engine, images: Images, tmp_path: Path) -> Iterator[Stack]:
    site = loopback_site(tmp_path / "site.toml")
    secrets = tmp_path / "secrets"
    provision(secrets, SiteFacts.read(site), hostnames=DEFAULT_HOSTNAMES)
    if os.geteuid() == 0:  # the files are 0600: give them to the containers' user
        for path in [secrets, *secrets.rglob("*")]:
            os.chown(path, SITE_UID, SITE_UID)
    plain, tls = free_port(), free_port()
    env = engine.env | images.build_env() | {
        "QUBIT_IMAGE_TAG": "check", "QUBIT_SECRETS": str(secrets), "QUBIT_SITE_FILE": str(site),
        "QUBIT_BROKER_PORT": str(plain), "QUBIT_BROKER_TLS_PORT": str(tls), "QUBIT_SITE_ADDRESS": "127.0.0.1",
        "QUBIT_MQTT_HOST": "127.0.0.1",
        **{f"QUBIT_{name}_METRICS_PORT": "0" for name in ("INGESTER", "PLANNER", "TRACKER", "LOOPBACK")},
    }
    s = Stack(engine, f"qubitcheck{uuid.uuid4().hex[:8]}", env, secrets, tls)
    try:
        # One build per image: the services share qubit-coordinator:check
        s.compose("build", "mosquitto", "planner", timeout=900)
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.compose("down", "-v", "--remove-orphans", check=False, timeout=120)  # images stay: they are the cache
        # Untagged images of older trees pile up in the engine's data root; a day's worth stays as build cache.
        run("docker", "image", "prune", "-f", "--filter", "label=qubit.deploy", "--filter", "until=24h",
            env=engine.env, check=False)
        s.health.close()


def test_the_image_holds_no_site_config_and_no_secret(stack: Stack) -> None:
    script = ("find / -xdev \\( -name 'site.toml' -o -name '*.password' -o -name '*.key' -o -name 'passwords' "
              "-o -name 'ca.crt' \\) -not -path '/opt/qubit/lib/*' 2>/dev/null; echo uid=$(id -u)")
    out = run("docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", "qubit-coordinator:check", "-c",
              script, env=stack.env).stdout.split()
    assert out == [f"uid={SITE_UID}"], f"a site file or secret in the image, or not its unprivileged user: {out}"


def test_compose_up_schedule_crash_restart_down_up_nothing_lost(stack: Stack) -> None:
    stack.up()
    scada = BusClient(stack, "scada", EVENTS_ALL)
    layer3 = BusClient(stack, "layer3")
    try:
        # Anonymous clients are refused on the TLS listener the site's LAN sees.
        anonymous = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        anonymous.tls_set(ca_certs=str(stack.secrets / "ca.crt"))
        refused: queue.Queue[bool] = queue.Queue()
        anonymous.on_connect = lambda c, u, f, reason, p: refused.put(reason.is_failure)
        anonymous.connect("127.0.0.1", stack.tls_port)
        anonymous.loop_start()
        assert refused.get(timeout=10), "an anonymous client was accepted"
        anonymous.loop_stop()

        frame = schedule(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4))
        commands = schedule_to_commands(frame, ASSET_MAP)
        expected = {key(c.asset_id, c.command_type.value, c.scheduled_at) for c in commands}
        first_slot = {k for k in expected if k[2] == pd.Timestamp(frame.index[0]).isoformat()}
        layer3.publish(SCHEDULES_IN, encode_schedule(frame, asset_map=ASSET_MAP, site_id="sit_demo_depot",
                                                     schedule_id="sch_compose_check"))
        scada.wait_for(lambda c: any(e.payload.get("schedule_id") == "sch_compose_check"
                                     for e in c.of("SCHEDULE_RECEIVED")), 20, "SCHEDULE_RECEIVED as scada")
        scada.wait_for(lambda c: first_slot <= completed_keys(c), 30, "the first slot's commands completed")

        # A crash, not an operator's stop: `docker kill` marks a container stopped by hand and
        # its restart policy then does not apply; SIGKILL to its process from the host does.
        restarts = int(stack.inspect("planner", "{{.RestartCount}}"))
        killed_at = time.time_ns()
        os.kill(int(stack.inspect("planner", "{{.State.Pid}}")), signal.SIGKILL)
        stack.health.wait_healthy(("planner",), killed_at, 90, "the planner after its crash")
        assert int(stack.inspect("planner", "{{.RestartCount}}")) == restarts + 1
        scada.wait_for(lambda c: expected <= completed_keys(c), 60, "every command completed after the crash")
        assert not scada.of("COMMAND_FAILED")
    finally:
        scada.close()
        layer3.close()

    # down and up, volumes kept: the ledger still knows the schedule, and says all completed.
    stack.compose("down", timeout=120)
    stack.up()
    answer = stack.compose("run", "--rm", "cli", "status", "sch_compose_check", check=False, timeout=120)
    assert answer.returncode == 0, f"qubit status after down/up: {answer.stdout}\n{answer.stderr[-2000:]}"
    assert "completed" in answer.stdout.lower(), answer.stdout
