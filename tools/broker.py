"""Start a private, secured Mosquitto for the demo and the tests, on free loopback ports.

It runs mosquitto/mosquitto.conf as shipped (no anonymous clients, the password file, the
ACL, a TLS listener), with its own credentials provisioned in its data directory by the
same code as ``qubit-credentials`` (tools/credentials.py): every service identity, one per
gateway in ``gateways``, the roles, and the test-only ``harness`` (readwrite ``#``), which
tests use to play a stolen identity. Callers log in with ``login(identity)`` (a raw paho
client: ``broker.login("scada").apply(client)``) or give a subprocess ``env(identity)``.

    with LocalMosquitto(tmp / "broker") as broker:
        client = broker.login("harness").apply(paho.Client(...))
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.messages import broker_max_packet_size
from coordinator.runtime.mqtt import BrokerLogin, BrokerSettings
from coordinator.runtime.settings import settings
from tools.bus_access import HARNESS, Access, identities

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = Path(__file__).resolve().parent.parent / "mosquitto" / "mosquitto.conf"

TEST_GATEWAYS = ("loopback", "modbus", "ocpp")
"""The gateway ids of every site the tests, the benches and the demo run; others on demand
(``add_gateways``, which the launcher calls for the site it starts)."""

TEST_SITE_ID = "sit_test_broker"

_PER_RUN = ("listener ", "persistence_location ", "max_packet_size ", "password_file ", "acl_file ",
            "cafile ", "certfile ", "keyfile ", "tls_version ", "per_listener_settings ")
"""Lines of the shipped config that each way of running it sets for itself."""


LISTEN_PORTS = range(20000, 32768)
"""Where free_port looks: below Linux's ephemeral range (32768-60999), whose ports every
outgoing connection (each MQTT client, each websocket) takes as its source port. A port the
system handed out as ephemeral can be taken again by such a connection between free_port's
check and the server's bind: "address already in use", seen in a full test run."""


_HANDED_OUT: set[int] = set()
"""Ports this process gave out already: two servers asked for one after the other (a broker's
plain and TLS listeners) must not get the same port before either binds it."""


def free_port() -> int:
    """A loopback port nothing listens on now, and not given out before by this process, for a
    server about to start."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {LISTEN_PORTS.start}-{LISTEN_PORTS.stop - 1}")


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if found is None:
        raise RuntimeError("mosquitto is not installed: run mosquitto/ensure-mosquitto.sh (make test/demo do)")
    return found


def shipped_config_lines() -> list[str]:
    """mosquitto/mosquitto.conf without the lines each way of running it sets for itself,
    and with ``max_packet_size`` computed from this process's settings."""
    lines = [line for line in CONFIG_TEMPLATE.read_text().splitlines() if not line.startswith(_PER_RUN)]
    return [*lines, max_packet_size_line(settings().max_message_bytes)]


def max_packet_size_line(max_message_bytes: int) -> str:
    """The broker's packet limit for a site whose message limit is ``max_message_bytes``."""
    return f"max_packet_size {broker_max_packet_size(max_message_bytes)}"


def broker_config(port: int, data_dir: Path, listen: str = "127.0.0.1", *, tls_port: int | None = None,
                  secrets: Path | None = None) -> str:
    """Our shipped config, bound to ``port`` (and ``tls_port``), persisting into ``data_dir``,
    with the credentials of ``secrets`` (the qubit-credentials layout; default data_dir/secrets)."""
    secrets = secrets or data_dir / "secrets"
    lines = shipped_config_lines()
    lines += ["per_listener_settings false",
              f"password_file {secrets / 'broker' / 'passwords'}", f"acl_file {secrets / 'broker' / 'acl'}",
              f"listener {port} {listen}"]
    if tls_port is not None:
        lines += [f"listener {tls_port} {listen}", f"cafile {secrets / 'ca.crt'}",
                  f"certfile {secrets / 'broker' / 'server.crt'}", f"keyfile {secrets / 'broker' / 'server.key'}",
                  "tls_version tlsv1.2"]
    lines += [f"persistence_location {data_dir}/", f"log_dest file {data_dir}/mosquitto.log"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Started as root, mosquitto switches to the `mosquitto` user and then cannot
        # write our data directory (field notes); stay root for a private test broker.
        lines.append("user root")
    return "\n".join(lines) + "\n"


_RUNNING: dict[tuple[str, int], LocalMosquitto] = {}
_RUNNING_LOCK = threading.Lock()


def serving(host: str, port: int) -> LocalMosquitto | None:
    """The broker of this process listening on host:port, if one is (tools.launcher gives
    the processes it starts their identities from it)."""
    with _RUNNING_LOCK:
        return _RUNNING.get((host, port))


class LocalMosquitto:
    """A mosquitto process of our own. ``restart()`` keeps ports, credentials and sessions."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, port: int | None = None, *, gateways: Iterable[str] = TEST_GATEWAYS,
                 tls_port: int | None = None, accesses: Sequence[Access] | None = None,
                 extra_config: Sequence[str] = ()) -> None:
        """``accesses``: these identities instead of a site's (a fleet's central broker);
        ``extra_config``: lines appended to the config (a fleet site's bridge connection,
        tools/bridge_config.py), which may carry a bridge's password: the file is 0600."""
        self.data_dir = Path(data_dir)
        self.accesses = list(accesses) if accesses is not None else None
        self.extra_config = list(extra_config)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = tls_port or free_port()
        self.secrets = self.data_dir / "secrets"
        self.gateways = set(gateways)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The mosquitto process's id while it runs (for its memory and CPU, tools/fleet)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def ca_file(self) -> Path:
        return self.secrets / "ca.crt"

    def start(self) -> LocalMosquitto:
        self._provision()
        conf = self.data_dir / "mosquitto.conf"
        text = broker_config(self.port, self.data_dir, tls_port=self.tls_port, secrets=self.secrets)
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "".join(line + "\n" for line in self.extra_config))
        self._proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not (wait_for_port(self.host, self.port, 10) and wait_for_port(self.host, self.tls_port, 10)):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}/{self.tls_port}: {self.log_tail()}")
        with _RUNNING_LOCK:
            _RUNNING[(self.host, self.port)] = self
        return self

    def _provision(self) -> None:
        from tools.credentials import SiteFacts, provision

        accesses = [*self.accesses, *(a for a in identities((), harness=True) if a.identity == HARNESS)] \
            if self.accesses is not None else None
        provision(self.secrets, SiteFacts(TEST_SITE_ID, tuple(sorted(self.gateways))), harness=True, ocpp=False,
                  accesses=accesses)

    # -- identities ------------------------------------------------------------------

    def password(self, identity: str) -> str:
        path = self.password_file(identity)
        if not path.exists():
            raise KeyError(f"the test broker has no identity {identity!r}")
        return path.read_text().strip()

    def password_file(self, identity: str) -> Path:
        return self.secrets / "clients" / f"{identity}.password"

    def login(self, identity: str = HARNESS, *, tls: bool = False) -> BrokerLogin:
        """How ``identity`` logs in (``tls``: with the CA, for the TLS port ``tls_port``)."""
        return BrokerLogin(identity, self.password(identity), self.ca_file if tls else None)

    def settings(self, identity: str = HARNESS) -> BrokerSettings:
        """BrokerSettings for an MqttClient logged in as ``identity`` on the plain port."""
        return BrokerSettings.at(self.host, self.port, self.login(identity))

    def env(self, identity: str) -> dict[str, str]:
        """The QUBIT_MQTT_* variables of a subprocess logged in as ``identity``."""
        self.password(identity)  # the identity exists
        return {"QUBIT_MQTT_HOST": self.host, "QUBIT_MQTT_PORT": str(self.port),
                "QUBIT_MQTT_USERNAME": identity, "QUBIT_MQTT_PASSWORD_FILE": str(self.password_file(identity))}

    def mosquitto_tools_env(self, identity: str = HARNESS) -> dict[str, str]:
        """Environment for ``mosquitto_sub``/``mosquitto_pub`` logged in as ``identity``: they
        read default options from $XDG_CONFIG_HOME/<tool>, so no password is on their argv."""
        config = self.data_dir / "tool-config" / identity
        config.mkdir(parents=True, exist_ok=True, mode=0o700)
        for tool in ("mosquitto_sub", "mosquitto_pub"):
            path = config / tool
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"-u {identity}\n-P {self.password(identity)}\n")
        return {"XDG_CONFIG_HOME": str(config)}

    def add_gateways(self, *gateway_ids: str, timeout: float = 10.0) -> None:
        """Identities for these gateways too: written, the broker SIGHUPed, and checked to have
        taken effect (the new identity can log in) before this returns."""
        new = set(gateway_ids) - self.gateways
        if not new:
            return
        self.gateways |= new
        self._provision()
        if self._proc is None or self._proc.poll() is not None:
            return  # read at the next start
        self._proc.send_signal(signal.SIGHUP)
        for gateway_id in new:
            if not self._wait_login(f"gateway-{gateway_id}", timeout):
                raise RuntimeError(f"the broker did not take the identity gateway-{gateway_id}: {self.log_tail()}")

    def _wait_login(self, identity: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if can_log_in(self.host, self.port, self.login(identity)):
                return True
            time.sleep(0.1)
        return False

    # -- the process -----------------------------------------------------------------

    def stop(self) -> None:
        """Graceful: mosquitto writes its persistence snapshot on SIGTERM."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._forget()

    def kill(self) -> None:
        """kill -9: no snapshot is written, as in a crash (what persisted before stays)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        with _RUNNING_LOCK:
            if _RUNNING.get((self.host, self.port)) is self:
                del _RUNNING[(self.host, self.port)]

    def restart(self, *, hard: bool = False) -> None:
        """Same ports, credentials and persistence directory; ``hard`` kills (-9) instead of stopping."""
        self.kill() if hard else self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = self.data_dir / "mosquitto.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else "(no log)"

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def can_log_in(host: str, port: int, login: BrokerLogin, timeout: float = 5.0) -> bool:
    """True if the broker accepts ``login`` (a CONNACK of success) within ``timeout``."""
    answer: list[bool] = []
    answered = threading.Event()

    def on_connect(c: paho.Client, u: object, flags: object, reason: object, props: object) -> None:
        answer.append(not getattr(reason, "is_failure", True))
        answered.set()

    client = login.apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
    client.on_connect = on_connect
    try:
        client.connect(host, port)
    except OSError:
        return False
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return bool(answer and answer[0])


def start_broker(data_dir: Path, *, gateways: Iterable[str] = TEST_GATEWAYS) -> LocalMosquitto:
    """A running private broker (the local ``mosquitto`` binary, the shipped secured config).

    No Docker path: a test broker must start in a second everywhere, and on the machines
    that have a Docker engine no image registry is reachable."""
    return LocalMosquitto(data_dir, gateways=gateways).start()
