"""Run the services as separate OS processes (for the demo and the end-to-end tests).

In production each runs in its own container (deploy/compose.yaml); this does the same on
one machine with one log file per process. Each process logs in with its own identity: a
service as its name (``gateway-<id>`` for a gateway), a simulator as ``simulator``. On a
broker this process started (tools/broker.py) the identities come from it, and the
gateways of the site get theirs first; on any other broker, the caller's ``logins``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.contract.topics import ROOT, ROOT_VARIABLE, SERVICES_ALL, under
from coordinator.runtime.mqtt import BrokerLogin
from tools.broker import serving

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
    "site-page": "services.site_page",
    "json-mirror": "services.json_mirror",
}
SIMULATORS = ("battery-simulator", "chargepoint-simulator")
"""Device simulators: real protocol peers, not MQTT services (no online status)."""
READ_ONLY = {"site-page": "scada"}
"""Processes that only watch the bus: they log in as a read-only role and publish no status."""
CORE = ("ingester", "planner", "tracker", "gateway-loopback")
"""What the site of deploy/site.toml runs besides the Modbus side."""


LOGIN_VARIABLES = ("QUBIT_MQTT_USERNAME", "QUBIT_MQTT_PASSWORD", "QUBIT_MQTT_PASSWORD_FILE", "QUBIT_MQTT_CA_FILE")

WATCHER = "scada"
"""The identity ``wait_online`` reads the services' statuses as: read-only."""


def identity_of(name: str) -> str:
    """The broker identity of process ``name``."""
    return "simulator" if name in SIMULATORS else READ_ONLY.get(name, name)


def site_gateways(site_config: Path) -> list[str]:
    """The gateway ids of a site file, read leniently: a site that fails validation is for
    the process to refuse, not for the launcher."""
    try:
        data = tomllib.loads(Path(site_config).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return []
    gateways = data.get("gateways", [])
    return [g["gateway_id"] for g in gateways if isinstance(g, dict) and isinstance(g.get("gateway_id"), str)]


class ServiceProcesses:
    def __init__(self, host: str, port: int, site_config: Path, logs: Path, data: Path | None = None, *,
                 logins: Callable[[str], dict[str, str]] | None = None,
                 watcher: BrokerLogin | None = None) -> None:
        """``data``: the processes' QUBIT_DATA_DIR (ledger, gateway records); default beside ``logs``.
        ``logins(identity)``: the QUBIT_MQTT_* variables of a process (default: from the
        broker of this process at host:port); ``watcher``: how ``wait_online`` logs in."""
        self.host, self.port = host, port
        broker = serving(host, port)
        if broker is not None:
            broker.add_gateways(*site_gateways(site_config))
            logins = logins or broker.env
            watcher = watcher or broker.login(WATCHER)
        self.logins = logins
        self.watcher = watcher or BrokerLogin()
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
        if self.logins is not None:  # the caller's own login must not leak into the processes'
            for name in LOGIN_VARIABLES:
                self.env.pop(name, None)

    def env_as(self, identity: str) -> dict[str, str]:
        """The processes' environment, logged in as ``identity`` (for a CLI run, say)."""
        return self.env | (self.logins(identity) if self.logins is not None else {})

    def start(self, name: str, *args: str) -> None:
        self._spawn(name, SERVICES[name], identity_of(name), args)

    def start_gateway(self, gateway_id: str, protocol: str, *args: str) -> str:
        """Start gateway ``gateway_id`` of the site (a site may run several of one protocol) as
        process ``gateway-<id>``, under its own identity; returns that name (for ``wait_online``,
        ``log``, ``kill``)."""
        name = f"gateway-{gateway_id}"
        self._spawn(name, SERVICES[f"gateway-{protocol}"], name, ("--gateway-id", gateway_id, *args))
        return name

    def start_simulator(self, simulator: str, label: str, *args: str) -> str:
        """Start one more process of ``simulator`` (one of SIMULATORS) as ``<simulator>-<label>``,
        e.g. the batteries of a second Modbus gateway; returns that name."""
        if simulator not in SIMULATORS:
            raise ValueError(f"{simulator!r} is not one of {SIMULATORS}")
        name = f"{simulator}-{label}"
        self._spawn(name, SERVICES[simulator], identity_of(simulator), args)
        return name

    def _spawn(self, name: str, module: str, identity: str, args: tuple[str, ...]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=self.env_as(identity), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )

    def start_all(self, names: tuple[str, ...] = CORE, args: dict[str, tuple[str, ...]] | None = None,
                  timeout: float = 20.0) -> None:
        """Start ``names`` and wait until each is online (the simulator is not an MQTT service).

        If one does not come online, every process started is stopped before the error goes up:
        a caller whose set-up failed has nothing to tear down, and nothing is left running."""
        try:
            for name in names:
                self.start(name, *(args or {}).get(name, ()))
            self.wait_online(*(n for n in names if n not in SIMULATORS and n not in READ_ONLY), timeout=timeout)
        except BaseException:
            self.stop_all()
            raise

    def wait_online(self, *names: str, timeout: float = 20.0) -> None:
        """Until each named process says online on its retained status topic (with its own pid)."""
        inbox: queue.Queue[bytes | bytearray] = queue.Queue()
        client = self.watcher.apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        client.on_message = lambda c, u, m: inbox.put(m.payload)
        client.connect(self.host, self.port)
        client.subscribe(under(self.env.get(ROOT_VARIABLE) or ROOT, SERVICES_ALL), qos=1)  # their site's root
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
            # disconnect first: it wakes paho's network thread, which then ends at once; stopped
            # first, the thread sits out its 1 s select before it sees the request (0.8 s a client)
            client.disconnect()
            client.loop_stop()

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
        """SIGTERM every process (as docker compose does) and collect exit codes; one that is
        still running ``timeout`` seconds after the signal is killed.

        How long each took is appended to ``stops.log`` in the log directory (a slow stop is
        a bug: a process should exit in well under a second when nothing is in flight)."""
        signalled = time.monotonic()
        running = {name: proc for name, proc in self.procs.items() if proc.poll() is None}
        for proc in running.values():
            proc.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        took: dict[str, str] = {}
        deadline = signalled + timeout
        while running:  # polled together: each exit is timed on its own, not behind a slower one
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    took[name] = f"{time.monotonic() - signalled:.2f} s"
                    del running[name]
                elif time.monotonic() >= deadline:
                    proc.kill()
                    proc.wait()
                    took[name] = f"KILLED after {timeout:g} s"
                    del running[name]
            time.sleep(0.02)
        for name, proc in self.procs.items():
            codes[name] = proc.wait()
        with open(self.logs / "stops.log", "a") as out:
            out.writelines(f"{name}: exit {codes[name]}, {took[name]} after SIGTERM\n" for name in took)
        return codes
