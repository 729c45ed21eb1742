"""Run the services as separate OS processes (for the demo and the end-to-end tests).

In production each runs in its own container (deploy/compose.yaml); this does the same on
one machine with one log file per process.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.topics import SERVICES_ALL

REPO = Path(__file__).resolve().parent.parent

SERVICES = {
    "ingester": "services.ingester",
    "planner": "services.planner",
    "tracker": "services.tracker",
    "gateway-loopback": "services.loopback_gateway",
    "gateway-modbus": "services.modbus_gateway.gateway",
    "battery-simulator": "simulators.battery",
    "gateway-ocpp": "services.ocpp_gateway.gateway",
    "chargepoint-simulator": "simulators.chargepoint",
}
SIMULATORS = ("battery-simulator", "chargepoint-simulator")
"""Device simulators: real protocol peers, not MQTT services (no online status)."""
CORE = ("ingester", "planner", "tracker", "gateway-loopback")
"""What the site of deploy/site.toml runs besides the Modbus side."""


class ServiceProcesses:
    def __init__(self, host: str, port: int, site_config: Path, logs: Path, data: Path | None = None) -> None:
        """``data``: the processes' QUBIT_DATA_DIR (ledger, gateway records); default beside ``logs``."""
        self.host, self.port = host, port
        self.logs = logs
        self.data = data or logs.parent / "data"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = os.environ | {
            "QUBIT_MQTT_HOST": host, "QUBIT_MQTT_PORT": str(port),
            "QUBIT_SITE_CONFIG": str(site_config), "PYTHONUNBUFFERED": "1",
            "QUBIT_DATA_DIR": str(self.data),
            # On one machine the processes cannot share the default port: each takes one the
            # system gives it (an ephemeral port cannot collide with ports the sites chose)
            # and says which in its retained status.
            "QUBIT_METRICS_PORT": "0",
        }

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", SERVICES[name], *args],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )

    def start_all(self, names: tuple[str, ...] = CORE, args: dict[str, tuple[str, ...]] | None = None,
                  timeout: float = 20.0) -> None:
        """Start ``names`` and wait until each is online (the simulator is not an MQTT service)."""
        for name in names:
            self.start(name, *(args or {}).get(name, ()))
        self.wait_online(*(n for n in names if n not in SIMULATORS), timeout=timeout)

    def wait_online(self, *names: str, timeout: float = 20.0) -> None:
        """Until each named process says online on its retained status topic (with its own pid)."""
        inbox: queue.Queue[bytes | bytearray] = queue.Queue()
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        client.on_message = lambda c, u, m: inbox.put(m.payload)
        client.connect(self.host, self.port)
        client.subscribe(SERVICES_ALL, qos=1)
        client.loop_start()
        seen: dict[str, tuple[str, int | None]] = {}
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    status = msgpack.unpackb(inbox.get(timeout=0.2))
                    seen[status["service"]] = (status["status"], status.get("pid"))
                except queue.Empty:
                    pass
                if all(seen.get(n) == ("online", self.procs[n].pid) for n in names):
                    return
                for n in names:
                    if self.procs[n].poll() is not None:
                        raise RuntimeError(f"{n} exited with {self.procs[n].returncode}:\n{self.log(n)[-3000:]}")
            missing = [n for n in names if seen.get(n, ("",))[0] != "online"]
            raise RuntimeError(f"not online within {timeout:g} s: {missing}")
        finally:
            client.loop_stop()
            client.disconnect()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs[name]
        proc.send_signal(sig)
        return proc.wait(15)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, text: str, timeout: float = 10.0) -> None:
        """Until process ``name`` has logged ``text`` (its log is a file: read it as it grows)."""
        deadline = time.monotonic() + timeout
        while text not in self.log(name):
            if time.monotonic() > deadline or self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} did not log {text!r} within {timeout:g} s:\n{self.log(name)[-3000:]}")
            time.sleep(0.05)

    def stop_all(self, timeout: float = 15.0) -> dict[str, int]:
        """SIGTERM every process (as docker compose does) and collect exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes
