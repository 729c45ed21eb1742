"""Start-up time and memory of every process of the stack, at 1,000 and 5,000 assets.

For each size, three sites, each on a private Mosquitto: N loopback chargers (ingester,
planner, tracker, loopback gateway, JSON mirror, site page), N OCPP chargers on one OCPP
gateway, N Modbus batteries on one Modbus gateway (devices configured, none connected:
start-up must not wait for them). The processes of a site are started one after another, so
each start-up is timed on its own, as the launcher starts them (``python -m <module>``).

- Start-up: exec -> ready. Ready is what tools/launcher.py waits for: the process's retained
  ``qubit/services/<name>/status`` says online, with its own pid. The site page publishes no
  status (read-only): ready is its /api/snapshot answering with broker_connected true.
- Memory: peak RSS (VmHWM, /proc/<pid>/status) once every process of the site is ready and
  a small schedule (10 assets x 4 slots, the first slot due at once) has been handled: every
  first-slot command answered by the gateway (a result on qubit/results/<gateway>), or the
  wait ran out (said in the figure's detail). The start-up peak is in the detail too.

The floor, measured in the same run: an interpreter that imports only paho-mqtt and msgpack,
connects to the broker and publishes one retained message (the least a process on this bus
does); its time to that message, and its VmHWM.

    python bench/processes.py [--sizes 1000,5000] [--floor-runs 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import paho.mqtt.client as paho
import pandas as pd
from paho.mqtt.enums import CallbackAPIVersion
from results import Figure, record

from coordinator.contract.codec import encode_schedule
from coordinator.contract.topics import ASSET_STATES_ALL, RESULTS_ALL, ROOT, SCHEDULES_IN, SERVICES_ALL
from tools.broker import LocalMosquitto, free_port
from tools.bus_access import HARNESS
from tools.launcher import ServiceProcesses

COMMAND = "make bench-processes"
GOAL_MB, GOAL_S = 120.0, 1.5
GOAL_SIZE = 1000
"""The size the issue's bounds apply to; at other sizes the figures are reported only."""
SCHEDULED_ASSETS, SCHEDULED_SLOTS = 10, 4
PASSWORD = "bench-password-0123456789"
FLOOR_TOPIC = "bench/processes/floor"
REJECTED = f"{ROOT}/events/SCHEDULE_REJECTED/#"

FLOOR = """
import os, sys
import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
with open(os.environ["QUBIT_MQTT_PASSWORD_FILE"]) as f:
    client.username_pw_set(os.environ["QUBIT_MQTT_USERNAME"], f.read().strip())
client.connect(os.environ["QUBIT_MQTT_HOST"], int(os.environ["QUBIT_MQTT_PORT"]))
client.loop_start()
status = msgpack.packb({"service": "floor", "status": "online", "pid": os.getpid()})
client.publish(sys.argv[1], status, qos=1, retain=True).wait_for_publish(10)
sys.stdin.read()  # alive (its VmHWM readable) until the bench closes stdin
"""


@dataclass
class Measured:
    """One process: its start-up seconds and its peak RSS (MB) after start-up and after the schedule."""

    name: str
    startup_s: float
    hwm_started_mb: float
    hwm_after_mb: float = 0.0
    note: str = ""


@dataclass
class SiteRun:
    kind: str
    processes: list[Measured] = field(default_factory=list)


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of ``pid`` in MB (10^6 bytes), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM for pid {pid}")


class Watcher:
    """Every retained status and every result of the broker, each with the time it arrived."""

    def __init__(self, broker: LocalMosquitto) -> None:
        self.statuses: queue.Queue[tuple[float, str, dict[str, object]]] = queue.Queue()
        self.results: set[str] = set()
        self.lock = threading.Lock()
        subscribed: queue.Queue[int] = queue.Queue()
        self.client = broker.login(HARNESS).apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda c, u, mid, codes, p: subscribed.put(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.rejected: list[str] = []
        self.states: set[str] = set()
        self.client.subscribe([(SERVICES_ALL, 1), (f"{FLOOR_TOPIC}/#", 1), (RESULTS_ALL, 1), (REJECTED, 1),
                               (ASSET_STATES_ALL, 1)])
        subscribed.get(timeout=10)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        arrived = time.perf_counter()
        if not message.payload:
            return
        body = msgpack.unpackb(message.payload, timestamp=3)
        if message.topic.startswith(ASSET_STATES_ALL.removesuffix("+")):
            with self.lock:
                self.states.add(message.topic)
        elif message.topic.startswith(REJECTED.removesuffix("#")):
            with self.lock:
                self.rejected.append(str(body.get("payload", body)))
        elif message.topic.startswith(f"{ROOT}/results/"):
            ids = [r.get("command_id") for r in body.get("results", [])] if isinstance(body, dict) else []
            with self.lock:
                self.results.update(i for i in ids if isinstance(i, str))
        elif isinstance(body, dict):
            self.statuses.put((arrived, message.topic, body))

    def wait_online(self, name: str, pid: int, alive: Callable[[], bool], timeout: float) -> float:
        """When (perf_counter) ``name`` with ``pid`` said online."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                arrived, _topic, status = self.statuses.get(timeout=0.1)
            except queue.Empty:
                if not alive():
                    raise RuntimeError(f"{name} exited before it was online") from None
                continue
            if status.get("service") == name and status.get("status") == "online" and status.get("pid") == pid:
                return arrived
        raise RuntimeError(f"{name} not online within {timeout:g} s")

    def wait_states(self, count: int, timeout: float) -> None:
        """Until ``count`` assets have a retained state (the tracker publishes them 2 s after
        its start): the processes started after it start into a settled site, not into that burst."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.states) >= count:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"not {count} asset states within {timeout:g} s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def floor_once(broker: LocalMosquitto, watcher: Watcher, run: int) -> tuple[float, float]:
    env = {**os.environ, **broker.env(HARNESS)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, f"{FLOOR_TOPIC}/{run}"], env=env, stdin=subprocess.PIPE)
    try:
        ready = watcher.wait_online("floor", proc.pid, lambda: proc.poll() is None, 30)
        return ready - start, vm_hwm_mb(proc.pid)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


def floor(broker: LocalMosquitto, watcher: Watcher, runs: int) -> tuple[float, float]:
    """Median start-up seconds and VmHWM MB of the floor process over ``runs`` runs."""
    samples = [floor_once(broker, watcher, i) for i in range(runs)]
    return statistics.median(s for s, _ in samples), statistics.median(m for _, m in samples)


def site_toml(kind: str, assets: int, port: int) -> str:
    """A site of ``assets`` assets all behind one gateway of ``kind``; devices at ``port``, where nothing listens."""
    lines = [f'site_id = "sit_bench_{kind}"', "", "[coordinator]", "dispatch_interval_seconds = 0.5", "",
             "[[gateways]]", f'gateway_id = "{kind}"', f'protocol = "{kind}"']
    if kind == "ocpp":
        lines += ["[gateways.ocpp]", 'host = "127.0.0.1"', f"port = {port}"]
    for i in range(assets):
        if kind == "modbus":
            lines += ["", "[[assets]]", f'asset_id = "ast_{i:05d}"', 'kind = "battery"', 'gateway_id = "modbus"',
                      "max_power_kw = 500.0", "[assets.modbus]", f"port = {port}"]
        else:
            lines += ["", "[[assets]]", f'asset_id = "ast_{i:05d}"', 'kind = "ev_charger"', f'gateway_id = "{kind}"',
                      "max_power_kw = 22.0"]
            if kind == "ocpp":
                lines += ["[assets.ocpp]", f'charge_point_id = "CP{i:05d}"', f'password = "{PASSWORD}"']
    return "\n".join(lines) + "\n"


def small_schedule(kind: str) -> tuple[bytes, int]:
    """10 assets x 4 slots from two seconds from now: the bytes, and the first slot's start (epoch s)."""
    start = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    index = pd.date_range(start, periods=SCHEDULED_SLOTS, freq="15min")
    key = "battery_{:05d}" if kind == "modbus" else "ev_{:05d}"
    column = "{}_charge_kw" if kind == "modbus" else "{}_kw"
    keys = [key.format(i) for i in range(SCHEDULED_ASSETS)]
    df = pd.DataFrame({column.format(k): [5.0 + s for s in range(SCHEDULED_SLOTS)] for k in keys}, index=index)
    amap = {k: f"ast_{i:05d}" for i, k in enumerate(keys)}
    return encode_schedule(df, asset_map=amap, site_id=f"sit_bench_{kind}", schedule_id=f"sch_bench_{kind}"), \
        int(start.timestamp())


def page_ready(port: int, alive: Callable[[], bool], timeout: float) -> float:
    """When (perf_counter) the site page first answered /api/snapshot with its broker connected.

    Its index is asked first, every 10 ms (a static file: cheap); the snapshot, which the page
    builds from every asset (about 0.1 s at 5,000), only once the page serves, then every 50 ms,
    so that the probe does not slow down what it measures."""
    deadline = time.monotonic() + timeout
    path, pause = "/", 0.01
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                body = answer.read()
            if path == "/":
                path, pause = "/api/snapshot", 0.05
                continue
            if json.loads(body).get("broker_connected"):
                return time.perf_counter()
        except (urllib.error.URLError, ConnectionError, OSError):
            if not alive():
                raise RuntimeError("the site page exited before it was ready") from None
        time.sleep(pause)  # polling an HTTP server: it has no way to tell us
    raise RuntimeError(f"site page not ready within {timeout:g} s")


def run_site(kind: str, assets: int, measured: tuple[str, ...], support: tuple[str, ...], work: Path,
             timeout: float, handled_timeout: float) -> SiteRun:
    """Start ``support`` (unmeasured) and ``measured`` in turn on a site of ``kind``, send the small
    schedule, and read every measured process's VmHWM once it has been handled."""
    site_dir = work / f"{kind}-{assets}"
    site_dir.mkdir()
    (site_dir / "site.toml").write_text(site_toml(kind, assets, free_port()))
    broker = LocalMosquitto(site_dir / "broker").start()
    stack = ServiceProcesses(broker.host, broker.port, site_dir / "site.toml", site_dir / "logs")
    page_port = free_port()
    stack.env["QUBIT_PAGE_PORT"] = str(page_port)
    stack.env["QUBIT_LOG_LEVEL"] = "WARNING"  # 5,000 devices that never connect: a line each is no figure of ours
    watcher = Watcher(broker)
    run = SiteRun(kind)
    try:
        for name in (*support, *measured):
            start = time.perf_counter()
            stack.start(name)
            proc = stack.procs[name]
            alive = functools.partial(stack.alive, name)
            if name == "site-page":
                ready = page_ready(page_port, alive, timeout)
            else:
                ready = watcher.wait_online(name, proc.pid, alive, timeout)
            if name in measured:
                run.processes.append(Measured(name, ready - start, vm_hwm_mb(proc.pid)))
            if name == "tracker":
                watcher.wait_states(assets, timeout)
        data, first_slot = small_schedule(kind)
        publisher = broker.login(HARNESS).apply(paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311))
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        publisher.publish(SCHEDULES_IN, data, qos=1).wait_for_publish(10)
        publisher.disconnect()
        publisher.loop_stop()
        note = wait_handled(watcher, first_slot, handled_timeout)
        print(f"{kind} site, {assets} assets: {note}", flush=True)
        for m in run.processes:
            m.hwm_after_mb = vm_hwm_mb(stack.procs[m.name].pid)
            m.note = note
        return run
    finally:
        watcher.close()
        stack.stop_all()
        broker.stop()


def wait_handled(watcher: Watcher, first_slot: int, timeout: float) -> str:
    """Until the gateway answered every first-slot command (the only ones due: the next slot
    is 15 minutes later), or ``timeout`` seconds after the slot began."""
    deadline = time.time() + max(0.0, first_slot - time.time()) + timeout
    while time.time() < deadline:
        with watcher.lock:
            answered = len(watcher.results)
            if watcher.rejected:
                raise RuntimeError(f"the small schedule was rejected: {watcher.rejected[0]}")
        if answered >= SCHEDULED_ASSETS:
            return f"after the schedule: {answered} results"
        time.sleep(0.05)
    with watcher.lock:
        answered = len(watcher.results)
    return f"after the schedule: only {answered} of {SCHEDULED_ASSETS} first-slot results within {timeout:g} s"


SITES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("loopback", ("ingester", "planner", "tracker", "gateway-loopback", "json-mirror", "site-page"), ()),
    ("ocpp", ("gateway-ocpp",), ("ingester", "planner")),
    ("modbus", ("gateway-modbus",), ("ingester", "planner")),
)
SHORT = {"gateway-loopback": "loopback gateway", "gateway-ocpp": "OCPP gateway", "gateway-modbus": "Modbus gateway",
         "json-mirror": "JSON mirror", "site-page": "site page"}


def report(assets: int, runs: list[SiteRun], floor_s: float, floor_mb: float) -> None:
    bounded = assets == GOAL_SIZE
    for site in runs:
        for m in site.processes:
            who = SHORT.get(m.name, m.name)
            record(Figure(f"{who} start-up, {assets:,} assets", m.startup_s, floor_s, "s",
                          floor_is="paho + msgpack interpreter: connect, publish one retained message",
                          command=COMMAND, absolute=GOAL_S if bounded else None,
                          detail=f"exec -> retained status online ({site.kind} site)" if m.name != "site-page"
                          else "exec -> /api/snapshot with broker_connected"))
            record(Figure(f"{who} memory, {assets:,} assets", m.hwm_after_mb, floor_mb, "MB",
                          floor_is="VmHWM of that floor process", command=COMMAND,
                          absolute=GOAL_MB if bounded else None,
                          detail=f"VmHWM {m.note}; {m.hwm_started_mb:.0f} MB after start-up ({site.kind} site)"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000", help="asset counts, comma-separated")
    parser.add_argument("--floor-runs", type=int, default=3)
    parser.add_argument("--sites", default="loopback,ocpp,modbus")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one process to be ready")
    parser.add_argument("--handled-timeout", type=float, default=15.0,
                        help="seconds after the first slot for its commands' results")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="qubit-bench-processes-"))
    wanted = args.sites.split(",")
    for assets in (int(s) for s in args.sizes.split(",")):
        broker = LocalMosquitto(work / f"floor-{assets}").start()
        watcher = Watcher(broker)
        try:
            floor_s, floor_mb = floor(broker, watcher, args.floor_runs)
        finally:
            watcher.close()
            broker.stop()
        runs = [run_site(kind, assets, measured, support, work, args.timeout, args.handled_timeout)
                for kind, measured, support in SITES if kind in wanted]
        print(f"{assets} assets: floor {floor_s:.3f} s, {floor_mb:.1f} MB; logs in {work}")
        report(assets, runs, floor_s, floor_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
