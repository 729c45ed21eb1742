"""Start a private Mosquitto for the demo and the tests, on a free loopback port.

A testcontainers MosquittoContainer where a Docker engine answers, otherwise the local
``mosquitto`` binary (mosquitto/ensure-mosquitto.sh installs it). Both use
mosquitto/mosquitto.conf, so tests run against the settings we ship.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from coordinator.contract.messages import broker_max_packet_size
from coordinator.runtime.settings import settings

log = logging.getLogger(__name__)

CONFIG_TEMPLATE = Path(__file__).resolve().parent.parent / "mosquitto" / "mosquitto.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    lines = [
        line for line in CONFIG_TEMPLATE.read_text().splitlines()
        if not line.startswith(("listener ", "persistence_location ", "max_packet_size "))
    ]
    return [*lines, max_packet_size_line(settings().max_message_bytes)]


def max_packet_size_line(max_message_bytes: int) -> str:
    """The broker's packet limit for a site whose message limit is ``max_message_bytes``."""
    return f"max_packet_size {broker_max_packet_size(max_message_bytes)}"


def broker_config(port: int, data_dir: Path, listen: str = "127.0.0.1") -> str:
    """Our shipped config, bound to ``port`` and persisting into ``data_dir``."""
    lines = shipped_config_lines()
    lines += [f"listener {port} {listen}", f"persistence_location {data_dir}/",
              f"log_dest file {data_dir}/mosquitto.log"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Started as root, mosquitto switches to the `mosquitto` user and then cannot
        # write our data directory (field notes); stay root for a private test broker.
        lines.append("user root")
    return "\n".join(lines) + "\n"


class LocalMosquitto:
    """A mosquitto process of our own. ``restart()`` keeps port and persisted sessions."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalMosquitto:
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(broker_config(self.port, self.data_dir))
        self._proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if not wait_for_port(self.host, self.port, 10):
            self.stop()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")
        return self

    def stop(self) -> None:
        """Graceful: mosquitto writes its persistence snapshot on SIGTERM."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """kill -9: no snapshot is written, as in a crash (what persisted before stays)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, *, hard: bool = False) -> None:
        """Same port, same persistence directory; ``hard`` kills (-9) instead of stopping."""
        self.kill() if hard else self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        path = self.data_dir / "mosquitto.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else "(no log)"

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ContainerMosquitto:
    """Mosquitto in Docker through testcontainers, with our config mounted."""

    def __init__(self, data_dir: Path) -> None:
        from testcontainers.community.mqtt import MosquittoContainer

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._container = MosquittoContainer("eclipse-mosquitto:2.0.20")
        self.host = "127.0.0.1"
        self.port = 0

    def start(self) -> ContainerMosquitto:
        conf = self.data_dir / "mosquitto.conf"
        lines = shipped_config_lines()
        conf.write_text("\n".join([*lines, "listener 1883", "persistence_location /data/"]) + "\n")
        self._container.start(configfile=str(conf))
        self.host = self._container.get_container_host_ip()
        self.port = int(self._container.get_exposed_port(1883))
        return self

    def stop(self) -> None:
        self._container.stop()

    def restart(self) -> None:
        raise NotImplementedError("restart keeps its port only with a local broker")


def start_broker(data_dir: Path, prefer_container: bool | None = None) -> LocalMosquitto | ContainerMosquitto:
    """A running private broker: a container if Docker answers (and QUBIT_BROKER != local), else local."""
    if prefer_container is None:
        prefer_container = settings().broker != "local"
    if prefer_container:
        try:
            return ContainerMosquitto(data_dir).start()
        except Exception as exc:  # docker.errors.DockerException and friends: no engine here
            log.info("no Docker engine (%s); using the local mosquitto binary", type(exc).__name__)
    return LocalMosquitto(data_dir).start()
